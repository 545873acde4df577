"""Chain steps that compare PDB with the baseline defenses and run the whole attack suite.

:func:`stage_baselines` fits what the baselines need (adaptive misinformation's
outlier-exposure victim and misinformation network), records every baseline's knobs, and
measures utility and latency of every defense side by side. :func:`load_baseline` rebuilds a
baseline from those records. The attacks themselves run through
:func:`pdblib.stages.stage_attacks`.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time

import pandas as pd
import torch

from pdblib.data import DataBundle
from pdblib.defenses import Defense, build_defense
from pdblib.defenses.adaptive_misinformation import (make_outlier_set, train_misinformation_model,
                                                     train_outlier_exposure)
from pdblib.metrics import utility_metrics
from pdblib.models import build_model
from pdblib.runs import RunDir
from pdblib.training import TrainConfig, predict_logits
from pdblib.utils import InputError, load_checkpoint, make_generator, save_checkpoint

logger = logging.getLogger(__name__)

# Strength knobs of each baseline in the chain: this package's choices of a middle setting for
# each defense (reverse sigmoid beta 0.7 and gamma 0.2, MAD L1 budget 0.5 with the top-1
# preserving oracle, adaptive misinformation tau 0.5 and nu 1000, BDPL zone 0.2 on the
# probability margin). Each class docstring gives its own defaults and their sources.
DEFAULT_BASELINE_KNOBS: dict[str, dict] = {
    "label_only": {},
    "rounding": {"decimals": 1},
    "gaussian_noise": {"sigma": 0.1},
    "reverse_sigmoid": {"beta": 0.7, "gamma": 0.2},
    "mad": {"epsilon": 0.5, "oracle": "argmax"},
    "adaptive_misinformation": {"tau": 0.5, "nu": 1000.0},
    "bdpl": {"zone_width": 0.2, "epsilon": 1.0},
}


def _victim_and_classes(run: RunDir):
    from pdblib.stages import load_victim

    state = load_checkpoint(run.artifact("victim", "victim.pt"))
    return load_victim(run), int(state["num_classes"]), state["model"]


def _load_plain(path, model_name: str, num_classes: int):
    state = load_checkpoint(path)
    model = build_model(model_name, num_classes)
    model.load_state_dict(state["state_dict"])
    return model.eval()


def load_baseline(run: RunDir, name: str, *, device: str = "cpu", knobs: dict | None = None) -> Defense:
    """Rebuild baseline ``name`` from the victim and the knobs recorded in ``artifacts/baselines``.

    ``knobs`` overrides the recorded ones, for example ``{"beta": 0.5}`` for reverse sigmoid.
    """
    config = run.read_json("baselines", "config.json")
    if name not in config["knobs"]:
        raise InputError(f"baseline {name!r} was not fitted in {run.path}; fitted: {sorted(config['knobs'])}")
    victim, k, model_name = _victim_and_classes(run)
    knobs = {**config["knobs"][name], **(knobs or {})}
    if name == "adaptive_misinformation":
        oe_model = _load_plain(run.artifact("baselines", "am_outlier_exposure.pt"), model_name, k)
        misinformation = _load_plain(run.artifact("baselines", "am_misinformation.pt"), model_name, k)
        return build_defense(name, oe_model, k, misinformation_model=misinformation, device=device, **knobs)
    return build_defense(name, victim, k, device=device, **knobs)


def stage_baselines(run: RunDir, bundle: DataBundle, *, knobs: dict[str, dict] | None = None,
                    am_epochs: int = 2, am_outliers: int = 10000, seed: int = 0, device: str = "cpu",
                    progress: bool = True) -> dict:
    """Fit the baselines, record their knobs, and write the utility table of every defense.

    Adaptive misinformation gets its own victim: a copy of the trained victim, fine-tuned for
    ``am_epochs`` with outlier exposure on ``am_outliers`` patch-shuffled images of the
    victim's own training split. Those outliers are disjoint from both attacker pools by
    construction. Its misinformation network has the victim's architecture and is trained from
    scratch for ``am_epochs``.
    """
    knobs = {**DEFAULT_BASELINE_KNOBS, **(knobs or {})}
    unknown = set(knobs) - set(DEFAULT_BASELINE_KNOBS)
    if unknown:
        raise InputError(f"unknown baselines {sorted(unknown)}; choose from {sorted(DEFAULT_BASELINE_KNOBS)}")
    victim, k, model_name = _victim_and_classes(run)
    settings = {"knobs": knobs, "am_epochs": am_epochs, "am_outliers": am_outliers, "seed": seed}
    config_path = run.path / "artifacts" / "baselines" / "config.json"
    if config_path.exists() and run.artifact("baselines", "am_misinformation.pt").exists():
        previous = run.read_json("baselines", "config.json")
        if all(previous.get(key) == value for key, value in settings.items()):
            logger.info("baselines already fitted with these settings in %s; reusing them", config_path.parent)
            return {key: value for key, value in previous.items() if key.endswith("_seconds")}
    generator = make_generator(seed)
    timings = {}

    start = time.perf_counter()
    outliers = make_outlier_set(bundle.x_train, am_outliers, generator)
    oe_model = copy.deepcopy(victim)
    train_outlier_exposure(oe_model, bundle.x_train, bundle.y_train, outliers,
                           TrainConfig(epochs=am_epochs, lr=5e-4, seed=seed), device=device, progress=progress)
    torch.manual_seed(seed + 1)
    misinformation = build_model(model_name, k)
    train_misinformation_model(misinformation, bundle.x_train, bundle.y_train,
                               TrainConfig(epochs=am_epochs, seed=seed), device=device, progress=progress)
    timings["adaptive_misinformation_fit_seconds"] = time.perf_counter() - start
    save_checkpoint(run.artifact("baselines", "am_outlier_exposure.pt"),
                    {"model": model_name, "state_dict": oe_model.state_dict(), "num_classes": k})
    save_checkpoint(run.artifact("baselines", "am_misinformation.pt"),
                    {"model": model_name, "state_dict": misinformation.state_dict(), "num_classes": k})
    run.write_json("baselines", "config.json", {
        **settings,
        "am_outlier_set": "patch-shuffled copies of the victim's own training images (7x7 patches)",
        **timings})
    return timings


def time_defense(defense: Defense, x: torch.Tensor, *, batch_size: int, repeats: int) -> float:
    """Median seconds of one ``defense.answer`` call on a batch of ``batch_size`` inputs (after one warm-up)."""
    batch = x[:batch_size]
    defense.answer(batch)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        defense.answer(batch)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def stage_defense_table(run: RunDir, bundle: DataBundle, defenses: list[str], *, latency_repeats: int = 30,
                        query_sample: int = 2000, device: str = "cpu") -> pd.DataFrame:
    """Utility, distortion and latency of every defense, measured side by side in one process.

    Latency is the median time of one answer at batch 1 and at batch 256, reported also as a
    ratio to the undefended model timed in the same loop. Distortion on attack queries is the
    mean L1 distance between defended and undefended answers on the first ``query_sample``
    images of each attacker pool.
    """
    from pdblib.stages import load_defense

    victim, _, _ = _victim_and_classes(run)
    victim_probs = {name: torch.softmax(predict_logits(victim, pool[:query_sample]), dim=1)
                    for name, pool in bundle.pools.items()}
    rows = []
    for name in defenses:
        defense = load_defense(run, name, device=device)
        row = {"defense": name, **utility_metrics(defense, victim, bundle.x_test, bundle.y_test)}
        for pool_name, pool in bundle.pools.items():
            answer = defense.answer(pool[:query_sample])
            row[f"l1_queries_{pool_name}"] = float((answer.probs - victim_probs[pool_name]).abs().sum(dim=1).mean())
            row[f"flip_queries_{pool_name}"] = float(answer.flipped.float().mean())
        row["latency_b1_ms"] = 1000 * time_defense(defense, bundle.x_test, batch_size=1, repeats=latency_repeats)
        row["latency_b256_ms"] = 1000 * time_defense(defense, bundle.x_test, batch_size=256,
                                                     repeats=max(3, latency_repeats // 5))
        rows.append(row)
        logger.info("defense %s: test acc %.4f, latency %.2f ms at batch 1", name, row["defended_acc"],
                    row["latency_b1_ms"])
    frame = pd.DataFrame(rows)
    if "undefended" in set(frame["defense"]):
        base = frame.set_index("defense").loc["undefended"]
        frame["latency_ratio_b1"] = frame["latency_b1_ms"] / base["latency_b1_ms"]
        frame["latency_ratio_b256"] = frame["latency_b256_ms"] / base["latency_b256_ms"]
    run.write_csv("baselines", "defense_table.csv", frame)
    return frame
