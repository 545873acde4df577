"""Transition-sample synthesis: inputs near the current model's decision boundaries, labelled K.

Three strategies, each a knob of :func:`synthesize_transition_samples`:

``"bisection"``
    Pick pairs of inputs whose predicted classes differ, bisect the segment between them to the
    point where the prediction first changes, then sample uniformly in a band of relative width
    ``band`` around that crossing point.
``"margin"``
    Start from benign inputs and take DeepFool-style steps (Moosavi-Dezfooli et al., CVPR 2016)
    on the linearized top-1/top-2 logit margin until the margin is below ``margin_threshold``.
    Only samples whose margin is below the threshold are returned.
``"mixup"``
    Convex combination of two inputs of different predicted classes with a weight drawn from
    ``U(0.5 - mix_width, 0.5 + mix_width)`` (after Zhang et al., mixup, ICLR 2018); a cheap
    baseline that is not guaranteed to land near a boundary.

All images are clipped to [0, 1]. Randomness comes only from the ``generator`` argument.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from pdblib.training import predict_logits
from pdblib.utils import InputError, check_choice, check_range, validate_images

logger = logging.getLogger(__name__)

STRATEGIES = ("bisection", "margin", "mixup")


@dataclass
class TransitionSet:
    """Synthesized transition samples.

    Attributes
    ----------
    x : (M, C, H, W) float in [0, 1]
    y : (M,) int64, every entry equal to the transition class ``num_classes``
    margin : (M,) top-1 minus top-2 logit of the source model at each sample
    strategy : str
    params : dict of the knob values that produced the set
    """

    x: torch.Tensor
    y: torch.Tensor
    margin: torch.Tensor
    strategy: str
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


def logit_margin(logits: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 logit, ``(N, K) -> (N,)``; always >= 0."""
    top2 = logits.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def _draw_pairs(pred: torch.Tensor, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` index pairs whose predicted classes differ."""
    if pred.unique().numel() < 2:
        raise InputError("every input has the same predicted class; transition synthesis needs at least two classes")
    first, second = [], []
    found = 0
    while found < n:
        a = torch.randint(len(pred), (2 * n,), generator=generator)
        b = torch.randint(len(pred), (2 * n,), generator=generator)
        keep = pred[a] != pred[b]
        first.append(a[keep])
        second.append(b[keep])
        found += int(keep.sum())
    return torch.cat(first)[:n], torch.cat(second)[:n]


@torch.no_grad()
def _bisection(model, x, n, generator, *, steps: int, band: float, batch_size: int, device):
    pred = predict_logits(model, x, device=device).argmax(dim=1)
    ia, ib = _draw_pairs(pred, n, generator)
    out = []
    for start in range(0, n, batch_size):
        a = x[ia[start:start + batch_size]].to(device)
        b = x[ib[start:start + batch_size]].to(device)
        cls_a = pred[ia[start:start + batch_size]].to(device)
        shape = (-1,) + (1,) * (x.dim() - 1)
        lo = torch.zeros(len(a), device=device)  # prediction at lo is still cls_a
        hi = torch.ones(len(a), device=device)   # prediction at hi differs from cls_a
        for _ in range(steps):
            mid = (lo + hi) / 2
            same = model(a + mid.view(shape) * (b - a)).argmax(dim=1) == cls_a
            lo = torch.where(same, mid, lo)
            hi = torch.where(same, hi, mid)
        crossing = (lo + hi) / 2
        offset = (torch.rand(len(a), generator=generator) * 2 - 1).to(device) * band
        t = (crossing + offset).clamp(0.0, 1.0)
        out.append((a + t.view(shape) * (b - a)).clamp(0.0, 1.0).cpu())
    return torch.cat(out)


def _margin_steps(model, x, n, generator, *, margin_threshold: float, max_steps: int,
                  max_step_norm: float, batch_size: int, device, max_rounds: int = 4):
    """DeepFool-style steps toward a target margin of half the threshold; keep the successes."""
    kept: list[torch.Tensor] = []
    total = 0
    target = margin_threshold / 2
    for _ in range(max_rounds):
        idx = torch.randperm(len(x), generator=generator)[: max(n - total, 1) * 2]
        for start in range(0, len(idx), batch_size):
            xb = x[idx[start:start + batch_size]].to(device).clone()
            done = torch.zeros(len(xb), dtype=torch.bool, device=device)
            for _ in range(max_steps):
                xb.requires_grad_(True)
                margin = logit_margin(model(xb))
                done = margin.detach() < margin_threshold
                if bool(done.all()):
                    xb = xb.detach()
                    break
                (grad,) = torch.autograd.grad(margin.sum(), xb)
                sq = grad.flatten(1).pow(2).sum(dim=1).clamp_min(1e-12)
                # Linearized DeepFool step: move by (m - target) / ||grad||^2 along -grad.
                scale = ((margin.detach() - target) / sq).clamp_min(0.0)
                step = -scale.view(-1, 1, 1, 1) * grad
                norm = step.flatten(1).norm(dim=1).clamp_min(1e-12)
                step = step * (max_step_norm / norm).clamp(max=1.0).view(-1, 1, 1, 1)
                step[done] = 0.0
                xb = (xb.detach() + step).clamp(0.0, 1.0)
            with torch.no_grad():
                done = logit_margin(model(xb)) < margin_threshold
            kept.append(xb.detach()[done].cpu())
            total += int(done.sum())
            if total >= n:
                break
        if total >= n:
            break
    result = torch.cat(kept)[:n] if kept else x[:0].clone()
    if len(result) < n:
        logger.warning("margin strategy reached the margin threshold %.3g for %d of %d requested samples",
                       margin_threshold, len(result), n)
    return result


@torch.no_grad()
def _mixup(model, x, n, generator, *, mix_width: float, device):
    pred = predict_logits(model, x, device=device).argmax(dim=1)
    ia, ib = _draw_pairs(pred, n, generator)
    lam = 0.5 + (torch.rand(n, generator=generator) * 2 - 1) * mix_width
    lam = lam.view(-1, *([1] * (x.dim() - 1)))
    return (lam * x[ia] + (1 - lam) * x[ib]).clamp(0.0, 1.0)


def synthesize_transition_samples(model: nn.Module, x: torch.Tensor, n: int, *, strategy: str = "bisection",
                                  num_classes: int | None = None, generator: torch.Generator,
                                  bisection_steps: int = 12, band: float = 0.05,
                                  margin_threshold: float = 1.0, max_steps: int = 20, max_step_norm: float = 1.0,
                                  mix_width: float = 0.1, batch_size: int = 512,
                                  device: str | torch.device = "cpu") -> TransitionSet:
    """Synthesize ``n`` transition samples near ``model``'s decision boundaries.

    Parameters
    ----------
    model : nn.Module
        The trained K-class model whose boundaries are targeted; it is put in eval mode.
    x : (N, C, H, W) float in [0, 1]
        Benign inputs to start from (the victim's training split).
    n : int
        Number of samples requested. ``"margin"`` may return fewer if the search fails for
        many inputs; a warning says so.
    strategy : {"bisection", "margin", "mixup"}
    num_classes : int, optional
        ``K``; defaults to ``model``'s number of outputs. Samples get label ``K``.
    generator : torch.Generator
        Source of all randomness.
    bisection_steps, band
        Bisection iterations (the crossing is located to ``2**-steps`` of the segment) and the
        half-width of the sampling band around the crossing, as a fraction of the segment.
    margin_threshold, max_steps, max_step_norm
        Target logit margin, DeepFool iterations per input, and the L2 cap of one step.
    mix_width
        Half-width of the mixup weight interval around 0.5.

    Returns
    -------
    TransitionSet
    """
    check_choice(strategy, STRATEGIES, what="transition strategy")
    validate_images(x, name="x")
    if n < 1:
        raise InputError(f"n must be at least 1, got {n}")
    check_range(band, 0.0, 0.5, name="band")
    check_range(mix_width, 0.0, 0.5, name="mix_width")
    if not margin_threshold > 0:
        raise InputError(f"margin_threshold must be positive, got {margin_threshold!r}")
    was_training = model.training
    model.eval()
    k = num_classes if num_classes is not None else model(x[:1].to(device)).shape[1]
    params = {"n": n}
    if strategy == "bisection":
        samples = _bisection(model, x, n, generator, steps=bisection_steps, band=band,
                             batch_size=batch_size, device=device)
        params.update(bisection_steps=bisection_steps, band=band)
    elif strategy == "margin":
        samples = _margin_steps(model, x, n, generator, margin_threshold=margin_threshold, max_steps=max_steps,
                                max_step_norm=max_step_norm, batch_size=batch_size, device=device)
        params.update(margin_threshold=margin_threshold, max_steps=max_steps, max_step_norm=max_step_norm)
    else:
        samples = _mixup(model, x, n, generator, mix_width=mix_width, device=device)
        params.update(mix_width=mix_width)
    margins = logit_margin(predict_logits(model, samples, device=device)) if len(samples) else torch.zeros(0)
    model.train(was_training)
    labels = torch.full((len(samples),), int(k), dtype=torch.long)
    logger.info("synthesized %d transition samples (%s), median logit margin %.3f",
                len(samples), strategy, float(margins.median()) if len(margins) else float("nan"))
    return TransitionSet(x=samples, y=labels, margin=margins, strategy=strategy, params=params)
