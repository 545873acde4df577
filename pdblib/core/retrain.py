"""PDB retraining: extend a trained victim with the transition class and fine-tune it.

Steps (:func:`pdb_retrain`):

1. synthesize ``round(transition_ratio * N)`` transition samples with the trained victim,
   labelled ``K`` (see :mod:`pdblib.core.transition`);
2. copy the victim and extend its head to ``K+1`` outputs (see :mod:`pdblib.core.head`);
3. fine-tune the whole network on the benign samples (labels ``0..K-1``) plus the transition
   samples (label ``K``) with ``CE + lambda_gp * ||dCE/dx||^2`` (see :mod:`pdblib.core.penalty`).

The transition samples are synthesized once from the original victim, before fine-tuning.
Re-synthesizing them from the evolving model each epoch is a possible variant that this
package does not implement.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
from torch import nn

from pdblib.core.head import extend_head
from pdblib.core.penalty import PENALTY_METHODS, GradientPenaltyLoss
from pdblib.core.transition import STRATEGIES, TransitionSet, synthesize_transition_samples
from pdblib.training import History, TrainConfig, train_model
from pdblib.utils import InputError, check_choice, check_range, make_generator

logger = logging.getLogger(__name__)


@dataclass
class PDBConfig:
    """Knobs of PDB retraining.

    Defaults are this package's choices, selected on the validation split of Fashion-MNIST;
    the PDB abstract gives no values.

    Attributes
    ----------
    lambda_gp : float
        Weight of the input-gradient penalty; 0 disables it (the "transition class only" ablation).
    transition_ratio : float
        Transition samples per benign training sample; 0 disables them (the "penalty only"
        ablation, which still adds the K+1-th output but never trains it).
    strategy : str
        Transition synthesis strategy: "bisection", "margin" or "mixup".
    penalty_method : str
        "exact" (double backprop) or "finite_difference".
    penalty_fraction : float
        Share of each batch, in (0, 1], that the penalty is computed on; below 1 it is a
        cheaper, noisier estimate (see :mod:`pdblib.core.penalty`).
    epochs, batch_size, lr : training of the fine-tuning run (Adam, cosine schedule).
    seed : int
        Seeds synthesis, the new head row and the batch order.
    synthesis : dict
        Extra keyword arguments of :func:`synthesize_transition_samples`.
    """

    lambda_gp: float = 0.1
    transition_ratio: float = 0.1
    strategy: str = "bisection"
    penalty_method: str = "exact"
    penalty_fraction: float = 1.0
    epochs: int = 3
    batch_size: int = 128
    lr: float = 5e-4
    seed: int = 0
    synthesis: dict | None = None

    def __post_init__(self):
        if not self.lambda_gp >= 0:
            raise InputError(f"lambda_gp must be >= 0, got {self.lambda_gp!r}")
        check_range(self.transition_ratio, 0.0, 10.0, name="transition_ratio")
        check_choice(self.strategy, STRATEGIES, what="transition strategy")
        check_choice(self.penalty_method, PENALTY_METHODS, what="penalty method")
        if not 0 < self.penalty_fraction <= 1:
            raise InputError(f"penalty_fraction must be in (0, 1], got {self.penalty_fraction!r}; "
                             "1 penalizes every sample")

    def train_config(self) -> TrainConfig:
        """Return the :class:`TrainConfig` of the fine-tuning run."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, seed=self.seed)

    def to_dict(self) -> dict:
        """Knob values, for the run record."""
        return asdict(self)


def pdb_retrain(victim: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor, config: PDBConfig, *,
                num_classes: int, x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                transition: TransitionSet | None = None, device: str | torch.device = "cpu",
                progress: bool = True) -> tuple[nn.Module, History, TransitionSet | None]:
    """Retrain a trained K-class victim into a PDB network with K+1 outputs.

    Parameters
    ----------
    victim : nn.Module
        Trained K-class model; it is not modified.
    x_train : (N, C, H, W) float in [0, 1]
    y_train : (N,) int64 in ``0..K-1``
    transition : TransitionSet, optional
        Precomputed transition samples; synthesized from ``victim`` when ``None``.
    x_val, y_val : optional
        Benign validation data, evaluated after each epoch (accuracy over K+1 outputs).

    Returns
    -------
    model : nn.Module with K+1 outputs
    history : History of the fine-tuning run
    transition : TransitionSet or None when ``transition_ratio == 0``
    """
    generator = make_generator(config.seed)
    n_transition = int(round(config.transition_ratio * len(x_train)))
    if transition is None and n_transition > 0:
        transition = synthesize_transition_samples(
            victim, x_train, n_transition, strategy=config.strategy, num_classes=num_classes,
            generator=generator, device=device, **(config.synthesis or {}))
    model = extend_head(victim, generator=generator)

    if transition is not None and len(transition) > 0:
        x_all = torch.cat([x_train, transition.x])
        y_all = torch.cat([y_train, transition.y])
    else:
        x_all, y_all = x_train, y_train
    loss = GradientPenaltyLoss(config.lambda_gp, method=config.penalty_method, fraction=config.penalty_fraction)
    logger.info("PDB retraining on %d benign + %d transition samples, lambda_gp=%g, %d epochs",
                len(x_train), len(x_all) - len(x_train), config.lambda_gp, config.epochs)
    history = train_model(model, x_all, y_all, config.train_config(), loss_fn=loss,
                          x_val=x_val, y_val=y_val, device=device, progress=progress, desc="PDB retrain")
    return model, history, transition
