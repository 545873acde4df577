"""Reverse sigmoid: a deceptive perturbation of the posterior that keeps the top-1 label.

Lee, Edwards, Molloy, Srivastava, "Defending Against NN Model Stealing Attacks Using
Deceptive Perturbations", IEEE Security and Privacy Workshops (SPW) 2019.

For each entry ``p`` of the victim's posterior the defense returns, before renormalization,

    q = p - beta * (s(gamma * s^-1(p)) - 1/2),

where ``s`` is the logistic sigmoid and ``s^-1(p) = log(p / (1 - p))`` its inverse. An attacker
who fits the answers with a softmax and cross-entropy recovers logits pushed in the wrong
direction: the perturbation adds mass to small entries and removes it from large ones.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from pdblib.defenses.base import Answer
from pdblib.defenses.passive import _PosteriorDefense
from pdblib.utils import InputError

logger = logging.getLogger(__name__)

LOGIT_CLAMP = 1e-6  # probabilities are clamped to [1e-6, 1 - 1e-6] before the inverse sigmoid


def reverse_sigmoid(probs: torch.Tensor, beta: float, gamma: float) -> torch.Tensor:
    """Apply the reverse-sigmoid perturbation to posteriors and renormalize.

    Parameters
    ----------
    probs : (N, K) float
        Rows on the probability simplex. Entries of exactly 0 or 1 are allowed: the inverse
        sigmoid is taken of ``clamp(p, 1e-6, 1 - 1e-6)``, so it stays finite.
    beta : float
        Perturbation magnitude, positive.
    gamma : float
        Slope of the inner sigmoid, positive.

    Returns
    -------
    (N, K) float
        Rows on the simplex. Negative entries (possible for large ``beta``) are clipped
        at 0 before renormalizing. Where the largest entry then sits at another class than the
        original top-1, the two entries are swapped, so the original top-1 is the largest
        again. A row that clips to all zeros becomes the one-hot vector of its original top-1.
    """
    clamped = probs.clamp(LOGIT_CLAMP, 1.0 - LOGIT_CLAMP)
    inverse = torch.log(clamped) - torch.log1p(-clamped)  # s^-1(p), finite after the clamp
    perturbed = probs - beta * (torch.sigmoid(gamma * inverse) - 0.5)
    perturbed = perturbed.clamp_min(0.0)

    top1 = probs.argmax(dim=1)
    totals = perturbed.sum(dim=1, keepdim=True)
    empty = totals.squeeze(1) <= 0
    if empty.any():
        perturbed[empty] = torch.nn.functional.one_hot(top1[empty], probs.shape[1]).to(probs.dtype)
        totals[empty] = 1.0
    out = perturbed / totals

    # The map p -> q is not monotone (for gamma < 1 its slope turns negative near 0 and 1),
    # so the top-1 can move. Swapping two entries restores it and keeps the row on the simplex.
    rows = torch.arange(len(out))
    new_top1 = out.argmax(dim=1)
    moved = (new_top1 != top1) & (out[rows, new_top1] > out[rows, top1])
    if moved.any():
        r = rows[moved]
        high = out[r, new_top1[moved]].clone()
        out[r, new_top1[moved]] = out[r, top1[moved]]
        out[r, top1[moved]] = high
    return out


class ReverseSigmoid(_PosteriorDefense):
    """Reverse-sigmoid perturbation of the victim's posterior.

    Lee, Edwards, Molloy, Srivastava, "Defending Against NN Model Stealing Attacks Using
    Deceptive Perturbations", IEEE Security and Privacy Workshops 2019.

    See :func:`reverse_sigmoid` for the formula and the handling of probabilities 0 and 1.

    Parameters
    ----------
    model : nn.Module
        The victim, with K outputs.
    num_classes : int
        ``K``.
    beta : float
        Perturbation magnitude, in ``(0, 10]``; the strength knob. Default 0.7: this
        package's choice, a moderate magnitude; sweep it for a trade-off curve.
    gamma : float
        Slope of the inner sigmoid, in ``(0, 10]``. Default 0.2: this package's choice, a
        flat inner sigmoid so that the perturbation grows slowly with the logit.

    Notes
    -----
    The returned top-1 is always the victim's top-1 (``keeps_top1``), so a label-only
    attacker receives the undefended labels.
    """

    name = "reverse_sigmoid"
    keeps_top1 = True
    deterministic = True

    def __init__(self, model: nn.Module, num_classes: int, *, beta: float = 0.7, gamma: float = 0.2,
                 input_shape=(1, 28, 28), device: str | torch.device = "cpu"):
        super().__init__(model, num_classes, input_shape, device)
        for knob, value in (("beta", beta), ("gamma", gamma)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 < value <= 10.0):
                raise InputError(f"{knob} must be a number in (0, 10], got {value!r}")
        self.beta = float(beta)
        self.gamma = float(gamma)

    def _answer(self, x: torch.Tensor) -> Answer:
        probs = self.victim_probs(x)
        out = reverse_sigmoid(probs, self.beta, self.gamma)
        # The victim's top-1 is a maximal entry of out; an exact tie could make out.argmax differ.
        return Answer(probs=out, labels=probs.argmax(dim=1), flipped=torch.zeros(len(x), dtype=torch.bool))

    def config(self) -> dict:
        return {"name": self.name, "beta": self.beta, "gamma": self.gamma}
