"""Retraining cost: seconds per epoch of plain training versus PDB retraining.

Every epoch runs :func:`pdblib.training.train_model` (Adam, the package's training loop) on
a fixed number of benign batches of seeded uniform-noise ``1x28x28`` inputs. Methods:

``plain``
    Cross-entropy on the K-output victim, on the benign batches only: the baseline.
``pdb_exact``
    PDB retraining: the K+1-output network on the benign batches plus
    ``round(transition_ratio * benign samples)`` transition samples labelled K, with
    ``CE + lambda_gp * ||dCE/dx||^2`` by double backpropagation.
``pdb_finite_difference``
    The same with the finite-difference estimate of the penalty.

Each PDB method also runs at every penalty fraction below 1 (``penalty_fraction`` in the rows):
the penalty on that share of each batch, plain cross-entropy on the rest.

A PDB epoch therefore has ``1 + transition_ratio`` times as many samples as a plain epoch,
as in :func:`pdblib.core.retrain.pdb_retrain`. Synthesizing the transition samples is a
one-time cost before retraining and is not timed here: the timed transition samples are
noise inputs, which cost the same per step as synthesized ones.

Epochs of all configurations are interleaved (one epoch of each per round) after one
untimed warm-up round, so that a drift of the machine spreads over every configuration.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
from torch import nn

from benchmarks.inference import INPUT_SHAPE, build_victims
from benchmarks.timing import summarize
from pdblib.core.penalty import GradientPenaltyLoss
from pdblib.core.retrain import PDBConfig
from pdblib.training import TrainConfig, cross_entropy_loss, train_model
from pdblib.utils import InputError, check_range, make_generator

logger = logging.getLogger(__name__)

BASELINE = "plain"
PENALTY_METHODS = {"pdb_exact": "exact", "pdb_finite_difference": "finite_difference"}


@dataclass
class _TrainingCase:
    method: str
    batch_size: int
    transition_ratio: float | None  # None for plain training, which has no transition samples
    penalty_fraction: float | None  # None for plain training
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    loss_fn: object
    seconds: list[float]


def _make_data(batch_size: int, batches: int, max_ratio: float, num_classes: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return inputs and labels for the largest transition ratio, and the benign sample count.

    The first ``batches * batch_size`` samples are benign (labels ``0..K-1``) and the rest are
    transition samples (label ``K``).
    """
    benign = batches * batch_size
    total = benign + int(round(max_ratio * benign))
    x = torch.rand(total, *INPUT_SHAPE, generator=generator)
    y = torch.full((total,), num_classes, dtype=torch.int64)
    y[:benign] = torch.randint(num_classes, (benign,), generator=generator)
    return x, y, benign


def run_training_benchmark(*, model_name: str = "small_cnn", num_classes: int = 10,
                           batch_sizes: tuple[int, ...] = (64, 128, 256),
                           transition_ratios: tuple[float, ...] = (0.0, 0.1, 0.3), batches: int = 50,
                           warmup: int = 1, repeats: int = 3, lambda_gp: float | None = None,
                           penalty_fractions: tuple[float, ...] = (1.0, 0.25), seed: int = 0) -> dict:
    """Measure seconds per epoch of plain training and PDB retraining with both penalty methods.

    Parameters
    ----------
    batch_sizes : tuple of int
    transition_ratios : tuple of float
        Transition samples per benign sample, each in [0, 10].
    batches : int
        Benign batches per epoch.
    warmup, repeats : int
        Untimed epochs, then timed epochs, of every configuration.
    penalty_fractions : tuple of float
        Shares of each batch, in (0, 1], that the penalty is computed on.
    lambda_gp : float, optional
        Penalty weight; ``PDBConfig``'s default when ``None``. Any positive value costs the
        same, because the penalty is computed whenever ``lambda_gp > 0``.

    Returns
    -------
    dict
        ``rows``, one per configuration, each with ``seconds_per_epoch`` summarized and its
        ratio to plain training at the same batch size.
    """
    if batches < 1:
        raise InputError(f"batches must be at least 1, got {batches}")
    if repeats < 1 or warmup < 0:
        raise InputError(f"repeats must be at least 1 and warmup at least 0, got {repeats} and {warmup}")
    if not batch_sizes or min(batch_sizes) < 1:
        raise InputError(f"batch_sizes must be positive integers, got {list(batch_sizes)}")
    if not transition_ratios:
        raise InputError("transition_ratios is empty; pass at least one ratio such as 0")
    for ratio in transition_ratios:
        check_range(ratio, 0.0, 10.0, name="transition ratio")
    if not penalty_fractions or not all(0 < fraction <= 1 for fraction in penalty_fractions):
        raise InputError(f"penalty fractions must be in (0, 1], got {list(penalty_fractions)}; 1 penalizes every sample")
    config = PDBConfig()
    lambda_gp = config.lambda_gp if lambda_gp is None else float(lambda_gp)
    if not lambda_gp > 0:
        raise InputError(f"lambda_gp must be positive so that the penalty is computed, got {lambda_gp}")
    generator = make_generator(seed)
    victim, pdb_network = build_victims(model_name, num_classes, seed)

    cases: list[_TrainingCase] = []
    for batch_size in batch_sizes:
        x, y, benign = _make_data(batch_size, batches, max(transition_ratios), num_classes, generator)
        cases.append(_TrainingCase(BASELINE, batch_size, None, None, copy.deepcopy(victim), x[:benign],
                                   y[:benign], cross_entropy_loss, []))
        for method, penalty in PENALTY_METHODS.items():
            for fraction in penalty_fractions:
                for ratio in transition_ratios:
                    n = benign + int(round(ratio * benign))
                    loss_fn = GradientPenaltyLoss(lambda_gp, method=penalty, fraction=fraction)
                    cases.append(_TrainingCase(method, batch_size, float(ratio), float(fraction),
                                               copy.deepcopy(pdb_network), x[:n], y[:n], loss_fn, []))

    logger.info("timing %d training configurations: %d warm-up and %d timed epochs each",
                len(cases), warmup, repeats)
    for round_index in range(warmup + repeats):
        shift = round_index % len(cases)
        for case in cases[shift:] + cases[:shift]:
            train_config = TrainConfig(epochs=1, batch_size=case.batch_size, lr=config.lr, seed=seed + round_index)
            history = train_model(case.model, case.x, case.y, train_config, loss_fn=case.loss_fn,
                                  progress=False, desc=f"benchmark {case.method}")
            if round_index >= warmup:
                case.seconds.append(history.seconds)

    rows = []
    for case in cases:
        rows.append({"method": case.method, "batch_size": case.batch_size,
                     "transition_ratio": case.transition_ratio, "penalty_fraction": case.penalty_fraction,
                     "samples_per_epoch": len(case.x),
                     "batches_per_epoch": -(-len(case.x) // case.batch_size),
                     "seconds_per_epoch": summarize(case.seconds)})
    for row in rows:
        base = next(r for r in rows if r["method"] == BASELINE and r["batch_size"] == row["batch_size"])
        row["ratio"] = row["seconds_per_epoch"]["median"] / base["seconds_per_epoch"]["median"]

    return {"baseline": BASELINE, "model": model_name, "num_classes": num_classes,
            "input_shape": list(INPUT_SHAPE), "benign_batches_per_epoch": batches,
            "lambda_gp": lambda_gp, "optimizer": "adam", "lr": config.lr, "rows": rows}

