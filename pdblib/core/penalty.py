"""Input-gradient penalty: ``CE(f(x), y) + lambda_gp * mean_i ||dCE_i/dx_i||_2^2``.

The exact form needs double backpropagation (Drucker & LeCun, "Improving generalization
performance using double backpropagation", IEEE TNN 1992; Ross & Doshi-Velez, "Improving the
adversarial robustness and interpretability of deep neural networks by regularizing their
input gradients", AAAI 2018). A flat loss around benign inputs pushes the decision boundaries
away from them, which is PDB's first mechanism.

``method="finite_difference"`` is a cheaper estimate without double backprop, after Finlay &
Oberman, "Scaleable input gradient regularization for adversarial robustness" (2019): with
``d = g / ||g||`` for the detached input gradient ``g``,
``||g||^2 ~= ((CE(x + h d) - CE(x)) / h)^2``, which needs one extra forward pass and an
ordinary backward pass.

``fraction < 1`` computes the penalty on the first ``ceil(fraction * B)`` samples of each
batch only, and plain cross-entropy on the rest, in a separate forward pass. The training loop
shuffles the samples every epoch, so those rows are a uniform random subset of the batch and the
subset's mean penalty is an unbiased estimate of the batch's. The penalty's extra work per
sample (an estimate: about four forward passes' worth for either method on a small CNN) then
scales with ``fraction``. The price is a noisier gradient of the penalty.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pdblib.utils import InputError

PENALTY_METHODS = ("exact", "finite_difference")


def input_gradient_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                           create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Compute per-sample cross-entropy and squared input-gradient norms.

    Samples must not interact inside ``model`` (no batch normalization in train mode), so that
    the gradient of the summed loss with respect to ``x_i`` equals ``dCE_i/dx_i``.

    Parameters
    ----------
    x : (B, C, H, W) float
    y : (B,) int64 labels in ``0..outputs-1``
    create_graph : bool
        Keep the graph of the gradient so that the penalty can be backpropagated
        (double backprop). ``False`` gives the value only.

    Returns
    -------
    ce : (B,) per-sample cross-entropy
    penalty : (B,) ``||dCE_i/dx_i||_2^2``
    logits : (B, outputs)
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    ce = F.cross_entropy(logits, y, reduction="none")
    (grad,) = torch.autograd.grad(ce.sum(), x, create_graph=create_graph)
    penalty = grad.flatten(1).pow(2).sum(dim=1)
    return ce, penalty, logits


def finite_difference_penalty(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
                              step: float = 0.01) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimate the per-sample penalty by a finite difference along the input gradient.

    Returns the same triple as :func:`input_gradient_penalty`. ``step`` is ``h`` in input
    units (pixels in [0, 1]); Finlay & Oberman (2019) use a small fixed ``h``.

    Both forward passes draw the same random numbers (the generator state is restored before
    the second), so a network with dropout in train mode uses one dropout mask for ``x`` and
    ``x + h d``. With two masks the difference would measure dropout noise divided by ``h``,
    not the gradient.
    """
    rng_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(x.device) if x.device.type == "cuda" else None
    x_req = x.detach().requires_grad_(True)
    logits = model(x_req)
    ce = F.cross_entropy(logits, y, reduction="none")
    (grad,) = torch.autograd.grad(ce.sum(), x_req, retain_graph=True)
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    direction = (grad / norm.view(-1, *([1] * (x.dim() - 1)))).detach()
    torch.set_rng_state(rng_state)
    if cuda_state is not None:
        torch.cuda.set_rng_state(cuda_state, x.device)
    ce_shifted = F.cross_entropy(model(x.detach() + step * direction), y, reduction="none")
    penalty = ((ce_shifted - ce) / step).pow(2)
    return ce, penalty, logits


def penalty_rows(batch_size: int, fraction: float) -> int:
    """Return how many leading rows of a batch of ``batch_size`` get the penalty: ``ceil(fraction * B)``, at least 1."""
    return max(1, min(batch_size, math.ceil(fraction * batch_size - 1e-9)))


class GradientPenaltyLoss:
    """Loss callable for :func:`pdblib.training.train_model`: mean CE plus ``lambda_gp`` times the penalty.

    Parameters
    ----------
    lambda_gp : float
        Penalty weight, at least 0. ``0`` gives plain cross-entropy (and skips the extra work).
    method : {"exact", "finite_difference"}
        Double backprop, or the Finlay & Oberman (2019) estimate.
    fd_step : float
        ``h`` of the finite-difference estimate.
    fraction : float
        Share of each batch, in (0, 1], that the penalty is computed on (see the module
        docstring); 1 computes it on every sample.
    """

    def __init__(self, lambda_gp: float = 1.0, method: str = "exact", fd_step: float = 0.01,
                 fraction: float = 1.0):
        if not lambda_gp >= 0:
            raise InputError(f"lambda_gp must be >= 0, got {lambda_gp!r}")
        if method not in PENALTY_METHODS:
            raise InputError(f"unknown penalty method {method!r}; choose one of {list(PENALTY_METHODS)}")
        if not fd_step > 0:
            raise InputError(f"fd_step must be positive, got {fd_step!r}")
        if not 0 < fraction <= 1:
            raise InputError(f"penalty fraction must be in (0, 1], got {fraction!r}; 1 penalizes every sample")
        self.lambda_gp = float(lambda_gp)
        self.method = method
        self.fd_step = float(fd_step)
        self.fraction = float(fraction)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor):
        if self.lambda_gp == 0:
            logits = model(x)
            ce = F.cross_entropy(logits, y)
            return ce, logits, {"ce": ce.detach()}
        rows = penalty_rows(len(x), self.fraction)
        if self.method == "exact":
            ce, penalty, logits = input_gradient_penalty(model, x[:rows], y[:rows], create_graph=True)
        else:
            ce, penalty, logits = finite_difference_penalty(model, x[:rows], y[:rows], step=self.fd_step)
        if rows < len(x):
            rest_logits = model(x[rows:])
            ce = torch.cat([ce, F.cross_entropy(rest_logits, y[rows:], reduction="none")])
            logits = torch.cat([logits, rest_logits])
        loss = ce.mean() + self.lambda_gp * penalty.mean()
        return loss, logits, {"ce": ce.mean().detach(), "penalty": penalty.mean().detach()}
