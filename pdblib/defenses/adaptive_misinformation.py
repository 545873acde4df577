"""Adaptive misinformation: answer unconfident (likely out-of-distribution) queries with misinformation.

Kariyappa and Qureshi, "Defending Against Model Stealing Attacks with Adaptive
Misinformation", CVPR 2020.

Three parts:

1. The victim is trained with outlier exposure (Hendrycks, Mazeika, Dietterich, "Deep
   Anomaly Detection with Outlier Exposure", ICLR 2019): cross-entropy on the training data
   plus a term that pulls the posterior on outlier images toward uniform, so the maximum
   softmax probability is low on out-of-distribution inputs (:func:`train_outlier_exposure`).
2. A misinformation network with the victim's architecture is trained to put low probability
   on the true class, with the loss ``-log(1 - p_y)`` (:func:`train_misinformation_model`).
3. For each query with victim posterior ``y`` and misinformation posterior ``y_mis``, the
   answer is ``(1 - alpha) * y + alpha * y_mis`` with
   ``alpha = 1 / (1 + exp(nu * (max_k y_k - tau)))``: close to 0 for confident queries and
   close to 1 for unconfident ones.

The outlier set comes from :func:`make_outlier_set`, which scrambles the victim's own training
images; see its notes for why that set is disjoint from every attacker pool.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

from pdblib.defenses.base import Answer, Defense
from pdblib.training import History, TrainConfig, predict_logits, train_model
from pdblib.utils import InputError, check_choice, make_generator, validate_images

logger = logging.getLogger(__name__)

OUTLIER_METHODS = ("patch_shuffle", "pixel_permute")


def make_outlier_set(x_train: torch.Tensor, n: int, generator: torch.Generator, *,
                     method: str = "patch_shuffle", patch_size: int = 7) -> torch.Tensor:
    """Build ``n`` outlier images by scrambling images of the victim's own training set.

    Parameters
    ----------
    x_train : (M, C, H, W) float
        The victim's training images, values in [0, 1].
    n : int
        Number of outliers, at least 1. Sources are drawn with replacement when ``n > M``.
    generator : torch.Generator
        Draws the source images and the permutations.
    method : {"patch_shuffle", "pixel_permute"}
        ``"patch_shuffle"`` (default) cuts each image into a grid of ``patch_size`` squares
        and shuffles them, which keeps local strokes and textures but destroys the object's
        shape. ``"pixel_permute"`` shuffles all pixel positions of an image, which keeps only
        its intensity histogram. Each image gets its own permutation.
    patch_size : int
        Side of a patch; must divide ``H`` and ``W``. Default 7, a 4x4 grid on 28x28 images
        (this package's choice). Ignored by ``"pixel_permute"``.

    Returns
    -------
    (n, C, H, W) float
        Values in [0, 1], with the same per-image intensity histogram as the source image.

    Notes
    -----
    Disjointness: every outlier is a rearrangement of a victim training image. The attacker
    pools (MNIST digits, and a Fashion-MNIST split that the victim never trains on) share no
    image with the victim's training set. So no outlier is, or is derived from, an image an
    attacker can query, and outlier exposure never trains on the attacker's data.

    What it does not cover: the outliers are scrambled garments, not natural images of other
    classes. A victim trained on them learns to be unconfident on scrambled structure. Whether
    it is also unconfident on MNIST digits depends on how that generalizes. Queries that stay
    close to the training distribution (Jacobian-augmented seeds, generator outputs that mimic
    it) are not covered at all.

    NOTE: an image that is constant over all patches (a blank image) is unchanged by the
    shuffle, so it appears in the outlier set as an in-distribution image.
    """
    x_train = validate_images(x_train, name="x_train")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive int, got {n!r}")
    check_choice(method, OUTLIER_METHODS, what="outlier method")
    m, c, h, w = x_train.shape
    source = x_train[torch.randint(m, (n,), generator=generator)]

    if method == "pixel_permute":
        order = torch.rand(n, h * w, generator=generator).argsort(dim=1)  # one permutation per image
        flat = source.reshape(n, c, h * w)
        return flat.gather(2, order[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)

    if isinstance(patch_size, bool) or not isinstance(patch_size, int) or patch_size < 1 \
            or h % patch_size or w % patch_size:
        raise InputError(f"patch_size must be a positive int that divides the image size {(h, w)}, got {patch_size!r}")
    rows, cols = h // patch_size, w // patch_size
    # (n, C, rows, P, cols, P) -> (n, rows*cols, C, P, P): one entry per patch.
    patches = source.reshape(n, c, rows, patch_size, cols, patch_size).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(n, rows * cols, c, patch_size, patch_size)
    order = torch.rand(n, rows * cols, generator=generator).argsort(dim=1)
    shuffled = patches.gather(1, order[:, :, None, None, None].expand_as(patches))
    shuffled = shuffled.reshape(n, rows, cols, c, patch_size, patch_size).permute(0, 3, 1, 4, 2, 5)
    return shuffled.reshape(n, c, h, w)


def outlier_exposure_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_outlier: torch.Tensor,
                          oe_weight: float) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Cross-entropy on ``(x, y)`` plus ``oe_weight`` times the cross-entropy from uniform on outliers.

    The outlier term is ``mean_i (-1/K sum_k log softmax(f(x_out_i))_k)``, minimized by a
    uniform posterior. Returns ``(loss, logits of x, parts)`` like the training loop's loss
    functions.
    """
    logits = model(x)
    ce = F.cross_entropy(logits, y)
    outlier_term = -F.log_softmax(model(x_outlier), dim=1).mean(dim=1).mean()
    return ce + oe_weight * outlier_term, logits, {"ce": float(ce.detach()), "oe": float(outlier_term.detach())}


def train_outlier_exposure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_outlier: torch.Tensor,
                           config: TrainConfig | None = None, *, oe_weight: float = 0.5,
                           outlier_batch_size: int | None = None,
                           device: str | torch.device | None = "cpu", progress: bool = True) -> History:
    """Train ``model`` in place with outlier exposure (Hendrycks et al., ICLR 2019).

    Each step pairs a batch of ``(x, y)`` with a batch of outliers drawn at random (seeded by
    ``config.seed + 1``) and minimizes :func:`outlier_exposure_loss`.

    Parameters
    ----------
    x : (N, C, H, W) float
        Training images.
    y : (N,) int64
        Labels.
    x_outlier : (M, C, H, W) float
        Outlier images, e.g. from :func:`make_outlier_set`.
    config : TrainConfig, optional
        Optimizer settings; default ``TrainConfig()``.
    oe_weight : float
        Weight of the outlier term, positive. Default 0.5: this package's choice, which
        weights the outlier term below the cross-entropy on the training data.
    outlier_batch_size : int, optional
        Outliers per step; default ``config.batch_size``.

    Returns
    -------
    History
        Per-epoch records, with the mean ``train_ce`` and ``train_oe`` parts.
    """
    config = config or TrainConfig()
    x_outlier = validate_images(x_outlier, name="x_outlier")
    if not (isinstance(oe_weight, (int, float)) and math.isfinite(oe_weight) and oe_weight > 0):
        raise InputError(f"oe_weight must be a positive number, got {oe_weight!r}")
    batch = outlier_batch_size or config.batch_size
    if batch < 1:
        raise InputError(f"outlier_batch_size must be at least 1, got {batch}")
    generator = make_generator(config.seed + 1)

    def loss_fn(net, xb, yb):
        idx = torch.randint(len(x_outlier), (batch,), generator=generator)
        return outlier_exposure_loss(net, xb, yb, x_outlier[idx].to(xb.device), oe_weight)

    return train_model(model, x, y, config, loss_fn=loss_fn, device=device, progress=progress,
                       desc="outlier exposure")


def misinformation_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Mean of ``-log(1 - p_y)``, computed as ``logsumexp(z) - logsumexp(z without z_y)``.

    The log-sum-exp form stays finite when ``p_y`` rounds to 1 in float32.
    """
    logits = model(x)
    true_class = F.one_hot(y, logits.shape[1]).bool()
    others = logits.masked_fill(true_class, float("-inf"))
    loss = (torch.logsumexp(logits, dim=1) - torch.logsumexp(others, dim=1)).mean()
    return loss, logits, {}


def train_misinformation_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                               config: TrainConfig | None = None, *,
                               device: str | torch.device | None = "cpu", progress: bool = True) -> History:
    """Train ``model`` in place to put low probability on the true class (loss ``-log(1 - p_y)``).

    Parameters
    ----------
    model : nn.Module
        The misinformation network, usually the victim's architecture with fresh weights.
    x : (N, C, H, W) float
        The victim's training images.
    y : (N,) int64
        Their labels.
    config : TrainConfig, optional
        Optimizer settings; default ``TrainConfig()``.

    Returns
    -------
    History
        Per-epoch records; ``train_acc`` is the (low) rate at which the top-1 is the true class.
    """
    return train_model(model, x, y, config or TrainConfig(), loss_fn=misinformation_loss,
                       device=device, progress=progress, desc="misinformation")


def misinformation_weight(max_prob: torch.Tensor, tau: float, nu: float) -> torch.Tensor:
    """Mixing weight ``alpha = 1 / (1 + exp(nu * (max_prob - tau)))``, shape of ``max_prob``.

    Computed as ``sigmoid(-nu * (max_prob - tau))``, which does not overflow for large ``nu``.
    """
    return torch.sigmoid(-nu * (max_prob - tau))


class AdaptiveMisinformation(Defense):
    """Adaptive misinformation: mix in a misinformation posterior for unconfident queries.

    Kariyappa and Qureshi, "Defending Against Model Stealing Attacks with Adaptive
    Misinformation", CVPR 2020. See the module notes for the training functions.

    Parameters
    ----------
    model : nn.Module
        The victim, with K outputs, trained with :func:`train_outlier_exposure`. The class
        cannot check that training. A victim trained without it is often confident on
        out-of-distribution queries, so the defense then rarely returns misinformation.
    num_classes : int
        ``K``.
    misinformation_model : nn.Module
        Required. A network with K outputs trained with :func:`train_misinformation_model`.
    tau : float
        Threshold on the victim's maximum softmax probability, in ``[0, 1]``; the strength
        knob. Queries with ``max_prob`` below it get mostly misinformation. Default 0.5: this
        package's choice, the middle of the unit interval; sweep it for a trade-off curve.
    nu : float
        Steepness of the switch, positive and at most 1e6. Default 1000: this package's choice,
        which makes ``alpha`` less than 5e-5 (or more than 1 - 5e-5) once ``max_prob`` is more
        than 0.01 away from ``tau``.

    Notes
    -----
    The misinformation posterior usually has a different top-1, so ``keeps_top1`` is False;
    ``flipped`` marks the answers whose top-1 differs from the victim's.
    """

    name = "adaptive_misinformation"
    keeps_top1 = False
    deterministic = True

    def __init__(self, model: nn.Module, num_classes: int, *, misinformation_model: nn.Module | None = None,
                 tau: float = 0.5, nu: float = 1000.0, input_shape=(1, 28, 28),
                 device: str | torch.device = "cpu"):
        super().__init__(num_classes, input_shape)
        if misinformation_model is None:
            raise InputError(
                "AdaptiveMisinformation needs misinformation_model; train one with "
                "pdblib.defenses.adaptive_misinformation.train_misinformation_model"
            )
        outputs = getattr(getattr(misinformation_model, "head", None), "out_features", None)
        if outputs is not None and outputs != num_classes:
            raise InputError(f"the misinformation model has {outputs} outputs, expected K = {num_classes}")
        if not (isinstance(tau, (int, float)) and 0.0 <= tau <= 1.0):
            raise InputError(f"tau must be in [0, 1], got {tau!r}")
        if not (isinstance(nu, (int, float)) and 0.0 < nu <= 1e6):
            raise InputError(f"nu must be in (0, 1e6], got {nu!r}")
        self.model = model.eval()
        self.misinformation_model = misinformation_model.eval()
        self.tau = float(tau)
        self.nu = float(nu)
        self.device = device

    def _answer(self, x: torch.Tensor) -> Answer:
        y = torch.softmax(predict_logits(self.model, x, device=self.device), dim=1)
        y_mis = torch.softmax(predict_logits(self.misinformation_model, x, device=self.device), dim=1)
        if y_mis.shape != y.shape:
            raise InputError(f"the misinformation model returns {y_mis.shape[1]} classes, expected K = {y.shape[1]}")
        alpha = misinformation_weight(y.max(dim=1).values, self.tau, self.nu).unsqueeze(1)
        out = (1.0 - alpha) * y + alpha * y_mis
        labels = out.argmax(dim=1)
        return Answer(probs=out, labels=labels, flipped=labels != y.argmax(dim=1))

    def reference_labels(self, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, x, device=self.device).argmax(dim=1)

    def config(self) -> dict:
        return {"name": self.name, "tau": self.tau, "nu": self.nu}
