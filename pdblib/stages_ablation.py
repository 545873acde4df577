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
``<knob>=<value>[,<knob>=<value>...]``
    Knobs of :data:`VARIANT_KNOBS` set to values: ``lambda_gp=1.0`` and
    ``transition_ratio=0.3`` give points of PDB's trade-off curves;
    ``penalty_method=finite_difference,seed=1`` retrains with the cheaper penalty and another
    seed, to compare the two penalties within the seed-to-seed spread;
    ``penalty_fraction=0.25`` computes the penalty on a quarter of each batch.

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


# Knobs a variant name may set, with the type of their values.
VARIANT_KNOBS = {"lambda_gp": float, "transition_ratio": float, "penalty_method": str, "penalty_fraction": float,
                 "seed": int}


def resolve_variant(name: str, config: PDBConfig) -> PDBConfig:
    """Return the configuration of ablation variant ``name`` (see the module docstring).

    Raises
    ------
    InputError
        On an unknown name or knob, or a value of the wrong type or range.
    """
    named = ablation_variants(config)
    if name in named:
        return named[name]
    changes = {}
    for part in name.split(","):
        knob, sep, text = part.strip().partition("=")
        if not sep:
            raise InputError(f"unknown ablation variant {name!r}; choose from {sorted(named)} "
                             f"or '<knob>=<value>[,...]' with knobs from {list(VARIANT_KNOBS)}")
        if knob not in VARIANT_KNOBS:
            raise InputError(f"ablation variant {name!r} sets {knob!r}; only {list(VARIANT_KNOBS)} can be set")
        try:
            changes[knob] = VARIANT_KNOBS[knob](text)
        except ValueError:
            raise InputError(f"ablation variant {name!r}: {text!r} is not a valid {knob}") from None
        if isinstance(changes[knob], float) and not changes[knob] >= 0.0:
            raise InputError(f"ablation variant {name!r}: {knob} must be >= 0")
    return replace(config, **changes)


def stage_ablations(run: RunDir, bundle: DataBundle, *, variants: list[str] | None = None, train_size: int = 10000,
                    target_flip_rate: float = 0.01, budget: int = 5000, pool: str = "fashion_mnist",
                    boundary_samples: int = 200, clone_model: str = "small_cnn_narrow", clone_epochs: int = 10,
                    attacks: tuple[str, ...] = ("knockoff_random",), filename: str = "ablations.csv",
                    seed: int = 0, device: str = "cpu", progress: bool = True) -> pd.DataFrame:
    """Retrain and measure each PDB ablation variant; write ``artifacts/ablation/<filename>``.

    Each variant is attacked by every name in ``attacks`` at ``budget`` queries from ``pool``;
    ``clone_acc`` and ``fidelity_deployed`` are the first attack's, and ``clone_acc_<attack>``
    columns hold each attack's clone accuracy. Rows already in the file are skipped, so an
    interrupted step resumes.
    """
    from pdblib.stages import load_victim

    metrics = run.read_json("pdb", "metrics.json")
    base = PDBConfig(**{k: v for k, v in metrics["config"].items()})
    names = variants or list(ablation_variants(base))
    configs = {name: resolve_variant(name, base) for name in names}
    if pool not in bundle.pools:
        raise InputError(f"unknown pool {pool!r}; choose from {sorted(bundle.pools)}")
    if not attacks:
        raise InputError("attacks is empty; name at least one attack, e.g. ['knockoff_random']")
    path = run.artifact("ablation", filename)
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
        row = {"variant": name, "lambda_gp": config.lambda_gp, "transition_ratio": config.transition_ratio,
               "strategy": config.strategy, "penalty_method": config.penalty_method,
               "penalty_fraction": config.penalty_fraction, "retrain_seed": config.seed,
               "train_size": len(x_train), "retrain_seconds": retrain_seconds,
               "seconds_per_epoch": retrain_seconds / max(config.epochs, 1),
               "median_boundary_distance": float(finite.median()) if len(finite) else float("nan"),
               "pool": pool, "budget": budget, **utility}
        for index, attack_name in enumerate(attacks):
            oracle = QueryOracle(defense, budget)
            attack = build_attack(attack_name, clone_model=clone_model, seed=seed, device=device,
                                  progress=progress, clone_train=TrainConfig(epochs=clone_epochs, seed=seed))
            clone = attack.run(oracle, bundle.pools[pool], [budget]).clones[budget]
            measured = clone_metrics(clone, bundle.x_test, bundle.y_test, victim=victim, defense=defense)
            row[f"clone_acc_{attack_name}"] = measured["clone_acc"]
            if index == 0:
                row.update(measured, attack_flip_fraction=oracle.log.flip_fraction())
        logger.info("ablation %s: defended acc %.4f, clone acc %.4f", name, row["defended_acc"], row["clone_acc"])
        done = pd.concat([done, pd.DataFrame([row])], ignore_index=True)
        run.write_csv("ablation", filename, done)
    return done
