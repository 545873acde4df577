"""Ablations of PDB: which part of the defense does the work.

Each variant retrains PDB from the same victim with some knobs changed, calibrates its flip
threshold on the validation split, and is measured on the test set (utility, DeepFool distance
to the boundary) and under Knockoff at one budget. Variants:

``full``
    The run's PDB settings (penalty and transition class).
``penalty_only``
    ``transition_ratio = 0``: the head still gets the K+1-th output, never trained, so flips
    are rare; what remains is the input-gradient penalty.
``transition_only``
    ``lambda_gp = 0``: transition class and flips without the penalty.
``strategy_<name>``
    The transition samples of another synthesis strategy.
``lambda_gp=<value>``, ``transition_ratio=<value>``
    One knob set to a value, for PDB's trade-off curves (for example ``lambda_gp=1.0``).

To keep the step affordable on a CPU, every variant (``full`` included, so the comparison is
fair) retrains on the first ``train_size`` images of the victim's training split.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import pandas as pd
import torch

from pdblib.analysis import deepfool_distance
from pdblib.attacks import QueryOracle, build_attack
from pdblib.core import PDBConfig, PDBDefense, pdb_retrain
from pdblib.core.transition import STRATEGIES
from pdblib.data import DataBundle
from pdblib.metrics import clone_metrics, utility_metrics
from pdblib.runs import RunDir
from pdblib.training import TrainConfig
from pdblib.utils import InputError

logger = logging.getLogger(__name__)


def ablation_variants(config: PDBConfig) -> dict[str, PDBConfig]:
    """Return the ablation variants of ``config`` by name."""
    variants = {
        "full": config,
        "penalty_only": replace(config, transition_ratio=0.0),
        "transition_only": replace(config, lambda_gp=0.0),
    }
    for strategy in STRATEGIES:
        if strategy != config.strategy:
            variants[f"strategy_{strategy}"] = replace(config, strategy=strategy)
    return variants


SWEEPABLE_KNOBS = ("lambda_gp", "transition_ratio")


def resolve_variant(name: str, config: PDBConfig) -> PDBConfig:
    """Return the configuration of ablation variant ``name`` (see the module docstring).

    Raises
    ------
    InputError
        On an unknown name, an unknown knob, or a value that is not a non-negative number.
    """
    named = ablation_variants(config)
    if name in named:
        return named[name]
    knob, sep, text = name.partition("=")
    if not sep:
        raise InputError(f"unknown ablation variant {name!r}; choose from {sorted(named)} "
                         f"or '<knob>=<value>' with a knob in {list(SWEEPABLE_KNOBS)}")
    if knob not in SWEEPABLE_KNOBS:
        raise InputError(f"ablation variant {name!r} sets {knob!r}; only {list(SWEEPABLE_KNOBS)} can be set")
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"ablation variant {name!r}: {text!r} is not a number") from None
    if not value >= 0.0:
        raise InputError(f"ablation variant {name!r}: the value must be >= 0")
    return replace(config, **{knob: value})


def stage_ablations(run: RunDir, bundle: DataBundle, *, variants: list[str] | None = None, train_size: int = 10000,
                    target_flip_rate: float = 0.01, budget: int = 5000, pool: str = "fashion_mnist",
                    boundary_samples: int = 200, clone_model: str = "small_cnn_narrow", clone_epochs: int = 10,
                    seed: int = 0, device: str = "cpu", progress: bool = True) -> pd.DataFrame:
    """Retrain and measure each PDB ablation variant; write ``artifacts/ablation/ablations.csv``.

    Rows already in the file are skipped, so an interrupted step resumes.
    """
    from pdblib.stages import load_victim

    metrics = run.read_json("pdb", "metrics.json")
    base = PDBConfig(**{k: v for k, v in metrics["config"].items()})
    names = variants or list(ablation_variants(base))
    configs = {name: resolve_variant(name, base) for name in names}
    if pool not in bundle.pools:
        raise InputError(f"unknown pool {pool!r}; choose from {sorted(bundle.pools)}")
    path = run.artifact("ablation", "ablations.csv")
    done = pd.read_csv(path) if path.exists() else pd.DataFrame()
    victim = load_victim(run)
    k = bundle.num_classes
    x_train, y_train = bundle.x_train[:train_size], bundle.y_train[:train_size]

    for name in names:
        if len(done) and name in set(done["variant"]):
            logger.info("ablation %s already measured; skipping", name)
            continue
        config = configs[name]
        start = time.perf_counter()
        model, _, _ = pdb_retrain(victim, x_train, y_train, config, num_classes=k, device=device, progress=progress)
        retrain_seconds = time.perf_counter() - start
        defense = PDBDefense(model, k, flip_form=metrics["flip_form"], device=device)
        defense.calibrate(bundle.x_val, target_flip_rate)
        utility = utility_metrics(defense, victim, bundle.x_test, bundle.y_test)
        distance = deepfool_distance(model, bundle.x_test[:boundary_samples], num_classes=k)
        finite = distance[torch.isfinite(distance)]
        oracle = QueryOracle(defense, budget)
        attack = build_attack("knockoff_random", clone_model=clone_model, seed=seed, device=device,
                              progress=progress, clone_train=TrainConfig(epochs=clone_epochs, seed=seed))
        clone = attack.run(oracle, bundle.pools[pool], [budget]).clones[budget]
        row = {"variant": name, "lambda_gp": config.lambda_gp, "transition_ratio": config.transition_ratio,
               "strategy": config.strategy, "train_size": len(x_train), "retrain_seconds": retrain_seconds,
               "median_boundary_distance": float(finite.median()) if len(finite) else float("nan"),
               "attack_flip_fraction": oracle.log.flip_fraction(), "pool": pool, "budget": budget, **utility,
               **clone_metrics(clone, bundle.x_test, bundle.y_test, victim=victim, defense=defense)}
        logger.info("ablation %s: defended acc %.4f, clone acc %.4f", name, row["defended_acc"], row["clone_acc"])
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        run.write_csv("ablation", "ablations.csv", done)
    return done
