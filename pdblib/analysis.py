"""Mechanism analysis: how far benign inputs are from the nearest decision boundary.

PDB claims to push decision boundaries away from benign inputs. :func:`deepfool_distance`
measures, per input, the L2 size of the smallest perturbation DeepFool finds that changes the
top-1 class (Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool
deep neural networks", CVPR 2016). For a PDB network only the K real logits count, so the
distance is to the nearest boundary between two real classes. The flip region is measured
separately, by the flip rates.
"""

from __future__ import annotations

import torch
from torch import nn

from pdblib.utils import InputError


def deepfool_distance(model: nn.Module, x: torch.Tensor, *, num_classes: int | None = None,
                      max_iter: int = 50, overshoot: float = 0.02, batch_size: int = 100) -> torch.Tensor:
    """L2 norm of the DeepFool perturbation that changes each input's top-1 real class.

    Parameters
    ----------
    model : nn.Module
        Classifier; with ``num_classes`` set, only its first ``num_classes`` logits count.
    x : (N, C, H, W) float
    max_iter : int
        DeepFool iterations; inputs not flipped by then get ``inf``.
    overshoot : float
        Relative overshoot of the final perturbation, as in the DeepFool paper (0.02).

    Returns
    -------
    (N,) float
        Perturbation norms in input units (pixels in [0, 1]), without clipping to the image box.
    """
    if max_iter < 1:
        raise InputError(f"max_iter must be at least 1, got {max_iter}")
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), batch_size):
        out.append(_deepfool_batch(model, x[start:start + batch_size], num_classes, max_iter, overshoot))
    model.train(was_training)
    return torch.cat(out)


def _deepfool_batch(model, x, num_classes, max_iter, overshoot):
    x0 = x.detach()
    with torch.no_grad():
        logits = model(x0)
    k = num_classes or logits.shape[1]
    original = logits[:, :k].argmax(dim=1)
    total = torch.zeros_like(x0)
    distance = torch.full((len(x0),), float("inf"))
    active = torch.ones(len(x0), dtype=torch.bool)
    rows = torch.arange(len(x0))
    for _ in range(max_iter):
        idx = active.nonzero(as_tuple=True)[0]
        if len(idx) == 0:
            break
        xi = (x0[idx] + (1 + overshoot) * total[idx]).requires_grad_(True)
        logits = model(xi)[:, :k]
        pred = logits.argmax(dim=1)
        flipped = pred != original[idx]
        if flipped.any():
            done = idx[flipped]
            distance[done] = ((1 + overshoot) * total[done]).flatten(1).norm(dim=1)
            active[done] = False
        if flipped.all():
            break
        grads = []
        for c in range(k):
            (g,) = torch.autograd.grad(logits[:, c].sum(), xi, retain_graph=c < k - 1)
            grads.append(g.flatten(1))
        grads = torch.stack(grads, dim=1)  # (B, K, D)
        keep = ~flipped
        sub = rows[: len(idx)][keep]
        orig = original[idx][keep]
        f = logits.detach()[keep]
        w = grads[keep] - grads[sub, orig].unsqueeze(1)  # (B', K, D)
        df = f - f[torch.arange(len(sub)), orig].unsqueeze(1)  # (B', K)
        norms = w.norm(dim=2).clamp_min(1e-12)
        ratio = df.abs() / norms
        ratio[torch.arange(len(sub)), orig] = float("inf")
        best = ratio.argmin(dim=1)
        step_size = (ratio[torch.arange(len(sub)), best] + 1e-4) / norms[torch.arange(len(sub)), best]
        step = step_size.unsqueeze(1) * w[torch.arange(len(sub)), best]
        total[idx[keep]] += step.view_as(total[idx[keep]])
    return distance
