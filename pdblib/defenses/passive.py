"""Passive output perturbations: rounding and Gaussian noise on the victim's posterior.

Both leave the network alone and change only the posterior it returns. They are the weakest
baselines of the study: rounding keeps the top-1 and most of the ranking, and zero-mean noise
averages out over many similar queries.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from pdblib.defenses.base import Answer, Defense
from pdblib.training import predict_logits
from pdblib.utils import InputError

logger = logging.getLogger(__name__)

MAX_DECIMALS = 8  # float32 posteriors carry about 7 significant decimal digits


def round_probs(probs: torch.Tensor, decimals: int) -> torch.Tensor:
    """Round posteriors to ``decimals`` decimals and renormalize each row to sum to 1.

    Parameters
    ----------
    probs : (N, K) float
        Rows on the probability simplex.
    decimals : int
        Number of decimals kept, at least 0.

    Returns
    -------
    (N, K) float
        ``round(probs) / round(probs).sum(1)``. A row whose entries all round to 0 (possible
        when ``10**-decimals`` exceeds twice the row's maximum, e.g. ``decimals=0`` and
        ``max < 0.5``) becomes the one-hot vector of its top-1, so the answer stays a
        distribution with the same top-1.

    Notes
    -----
    Rounding is monotone, so the top-1 entry is never rounded below another entry, but two
    entries can become equal (0.504 and 0.496 both round to 0.5 at one decimal). Such a row
    keeps the tie: the original top-1 is one of its maximal entries, and ``argmax`` of the
    rounded row may return the other one.
    """
    scale = 10.0 ** decimals
    rounded = torch.round(probs * scale) / scale
    totals = rounded.sum(dim=1, keepdim=True)
    empty = totals.squeeze(1) <= 0
    if empty.any():
        onehot = torch.nn.functional.one_hot(probs[empty].argmax(dim=1), probs.shape[1]).to(probs.dtype)
        rounded[empty] = onehot
        totals[empty] = 1.0
    return rounded / totals


def keyed_normal_noise(keys: torch.Tensor, num_classes: int, secret_seed: int) -> torch.Tensor:
    """Draw one standard normal vector of length ``num_classes`` per key, ``(N,) -> (N, K)``.

    Each row comes from its own ``torch.Generator`` seeded by the key and ``secret_seed``, so a
    row depends only on its key, never on the other rows of the batch.
    """
    rows = []
    for key in keys.tolist():
        generator = torch.Generator().manual_seed(int(key) * 1_000_003 + int(secret_seed))
        rows.append(torch.randn(num_classes, generator=generator))
    return torch.stack(rows) if rows else torch.zeros(0, num_classes)


def noisy_probs(probs: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """Add ``sigma * noise`` to posteriors, clip at 0 and renormalize.

    Parameters
    ----------
    probs : (N, K) float
        Rows on the probability simplex.
    noise : (N, K) float
        Standard normal draws.
    sigma : float
        Noise standard deviation, at least 0.

    Returns
    -------
    (N, K) float
        Rows on the simplex. A row whose noisy entries are all at most 0 becomes the one-hot
        vector of its largest noisy entry, the class the noise favored.
    """
    noisy = probs + sigma * noise.to(probs)
    clipped = noisy.clamp_min(0.0)
    totals = clipped.sum(dim=1, keepdim=True)
    empty = totals.squeeze(1) <= 0
    if empty.any():
        clipped[empty] = torch.nn.functional.one_hot(noisy[empty].argmax(dim=1), probs.shape[1]).to(probs.dtype)
        totals[empty] = 1.0
    return clipped / totals


class _PosteriorDefense(Defense):
    """Shared parts of the defenses that transform the victim's softmax posterior."""

    def __init__(self, model: nn.Module, num_classes: int, input_shape=(1, 28, 28),
                 device: str | torch.device = "cpu"):
        super().__init__(num_classes, input_shape)
        self.model = model.eval()
        self.device = device

    def victim_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Compute the victim's unperturbed softmax posterior ``(N, K)``."""
        return torch.softmax(predict_logits(self.model, x, device=self.device), dim=1)

    def reference_labels(self, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, x, device=self.device).argmax(dim=1)


class Rounding(_PosteriorDefense):
    """Posterior rounded to a fixed number of decimals, then renormalized.

    A passive baseline that truncates the confidences the API returns, with no paper of its
    own in this package. See :func:`round_probs` for ties and all-zero rows.

    Parameters
    ----------
    model : nn.Module
        The victim, with K outputs.
    num_classes : int
        ``K``.
    decimals : int
        Decimals kept, in ``[0, 8]``. Default 2: this package's choice, a coarse setting that
        still separates confident from unconfident answers; sweep it for a trade-off curve.

    Notes
    -----
    The answer's ``labels`` are the victim's top-1, which is always a maximal entry of the
    rounded posterior, so ``keeps_top1`` holds even for rows with a tie at the top.
    """

    name = "rounding"
    keeps_top1 = True
    deterministic = True

    def __init__(self, model: nn.Module, num_classes: int, *, decimals: int = 2,
                 input_shape=(1, 28, 28), device: str | torch.device = "cpu"):
        super().__init__(model, num_classes, input_shape, device)
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= MAX_DECIMALS:
            raise InputError(f"decimals must be an int in [0, {MAX_DECIMALS}], got {decimals!r}")
        self.decimals = decimals

    def _answer(self, x: torch.Tensor) -> Answer:
        probs = self.victim_probs(x)
        top1 = probs.argmax(dim=1)
        return Answer(probs=round_probs(probs, self.decimals), labels=top1,
                      flipped=torch.zeros(len(x), dtype=torch.bool))

    def config(self) -> dict:
        return {"name": self.name, "decimals": self.decimals}


class GaussianNoise(_PosteriorDefense):
    """Posterior plus N(0, sigma^2) noise per entry, clipped at 0 and renormalized.

    A passive baseline with no paper of its own in this package. The noise is deterministic per input: it is drawn from a generator keyed by the
    input's 8-bit-quantized pixels and ``secret_seed`` (:func:`pdblib.core.inference.input_keys`),
    so repeating a query returns the same answer and cannot average the noise away. A jittered
    copy of the input is a different input and gets fresh noise.

    Parameters
    ----------
    model : nn.Module
        The victim, with K outputs.
    num_classes : int
        ``K``.
    sigma : float
        Noise standard deviation, in ``[0, 10]``; 0 returns the victim's posterior unchanged.
        Default 0.1: this package's choice, large enough to move the small entries of a
        confident posterior; sweep it for a trade-off curve.
    secret_seed : int
        Key of the noise; keep it private in a deployment.

    Notes
    -----
    The noise can change the top-1, so ``keeps_top1`` is False; ``flipped`` marks the answers
    whose top-1 differs from the victim's.
    """

    name = "gaussian_noise"
    keeps_top1 = False
    deterministic = True

    def __init__(self, model: nn.Module, num_classes: int, *, sigma: float = 0.1, secret_seed: int = 0,
                 input_shape=(1, 28, 28), device: str | torch.device = "cpu"):
        super().__init__(model, num_classes, input_shape, device)
        if not 0.0 <= sigma <= 10.0:  # also rejects NaN
            raise InputError(f"sigma must be in [0, 10], got {sigma!r}")
        self.sigma = float(sigma)
        self.secret_seed = int(secret_seed)

    def _answer(self, x: torch.Tensor) -> Answer:
        # Imported here because pdblib.core.inference imports this package's base module.
        from pdblib.core.inference import input_keys

        probs = self.victim_probs(x)
        top1 = probs.argmax(dim=1)
        if self.sigma == 0.0:
            return Answer(probs=probs, labels=top1, flipped=torch.zeros(len(x), dtype=torch.bool))
        noise = keyed_normal_noise(input_keys(x, self.secret_seed), self.num_classes, self.secret_seed)
        out = noisy_probs(probs, noise, self.sigma)
        labels = out.argmax(dim=1)
        return Answer(probs=out, labels=labels, flipped=labels != top1)

    def config(self) -> dict:
        return {"name": self.name, "sigma": self.sigma}
