"""Defended inference of PDB: answer over the K real classes, flip inside the transition region.

The deployed network has K+1 outputs. For each query the transition score is
``s = logit_K - max_{k<K} logit_k``, the log-odds of the transition class against the best real
class. Queries with ``s <= threshold`` get the normal answer: the softmax over the K real
logits (equal to the K+1 softmax renormalized over the real classes). Queries with
``s > threshold`` get a flipped answer whose top-1 is a wrong real class. ``threshold = 0`` is
the plain rule "the top class is the transition class"; :func:`calibrate_threshold` sets it
from held-out benign data to a target benign flip rate.

How a flipped answer looks is the knob ``flip_form``:

``"swap_top2"``
    The real-class posterior with its top two entries swapped. A soft-label attacker still sees
    almost the whole posterior.
``"onehot_second"``
    A one-hot vector on the runner-up real class.
``"onehot_random"``
    A one-hot vector on a wrong class chosen by a keyed hash of the input.

The flip is deterministic: the wrong class depends only on the input (quantized to 8-bit
pixels) and ``secret_seed``, so repeating a query cannot average it away. A jittered copy is a
different input and gets its own key.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from pdblib.core.flip import (FLIP_FORMS, HASH_PRIME, defended_probs, hash_parameters, keyed_hash,
                              transition_scores_unchecked)
from pdblib.defenses.base import Answer, Defense
from pdblib.training import predict_logits
from pdblib.utils import InputError, check_choice, check_range

logger = logging.getLogger(__name__)


def transition_scores(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Transition score ``logit_K - max_{k<K} logit_k`` from ``(N, K+1)`` logits, shape ``(N,)``."""
    if logits.dim() != 2 or logits.shape[1] != num_classes + 1:
        raise InputError(f"expected logits of shape (N, {num_classes + 1}), got {tuple(logits.shape)}")
    return transition_scores_unchecked(logits, num_classes)


def calibrate_threshold(scores: torch.Tensor, target_flip_rate: float = 0.01) -> float:
    """Return the threshold at which at most ``target_flip_rate`` of ``scores`` exceed it.

    The threshold is the ``1 - target_flip_rate`` quantile of benign validation scores (the
    "higher" interpolation, so the rate on ``scores`` itself never exceeds the target). On new
    data from the same distribution the flip rate is close to the target, not bounded by it.

    Parameters
    ----------
    scores : (N,) float
        Transition scores of held-out benign inputs.
    target_flip_rate : float
        In [0, 1).
    """
    check_range(target_flip_rate, 0.0, 1.0, name="target_flip_rate", high_inclusive=False)
    if scores.dim() != 1 or len(scores) == 0:
        raise InputError(f"scores must be a non-empty 1-D tensor, got shape {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise InputError("scores contain NaN or infinite values; check the model's logits")
    return float(torch.quantile(scores.double(), 1.0 - target_flip_rate, interpolation="higher"))


def input_keys(x: torch.Tensor, secret_seed: int) -> torch.Tensor:
    """Keyed hash of each input, ``(N, C, H, W) -> (N,)`` int64 in ``[0, 2^31 - 1)``.

    Inputs are quantized to 8-bit pixels first, so an input and its float round trip share a key.
    The hash itself is :func:`pdblib.core.flip.keyed_hash`.
    """
    weights, affine = hash_parameters(secret_seed, x[0].numel())
    return keyed_hash(x, weights.to(x.device), affine.to(x.device))


class PDBDefense(Defense):
    """Defended inference with a PDB-retrained network of K+1 outputs.

    Parameters
    ----------
    model : nn.Module
        Network with K+1 outputs (see :func:`pdblib.core.head.extend_head`).
    num_classes : int
        ``K``, the number of real classes.
    threshold : float
        Flip when the transition score exceeds it; ``0`` means "top class is the transition
        class". Set it with :meth:`calibrate`.
    flip_form : {"swap_top2", "onehot_second", "onehot_random"}
    secret_seed : int
        Key of the flip hash; keep it private in a deployment.
    deterministic_flips : bool
        ``True`` (default) keys the ``"onehot_random"`` flip by the input alone, so a repeated
        query gets the same wrong class. ``False`` draws a new hash key on every call, so
        repeated queries get different wrong classes; it exists to measure what determinism
        buys against the averaging attack. The other flip forms are deterministic either way.
    """

    name = "pdb"
    keeps_top1 = False
    deterministic = True

    def __init__(self, model: nn.Module, num_classes: int, *, threshold: float = 0.0,
                 flip_form: str = "onehot_random", secret_seed: int = 0, deterministic_flips: bool = True,
                 input_shape=(1, 28, 28), device: str | torch.device = "cpu"):
        super().__init__(num_classes, input_shape)
        check_choice(flip_form, FLIP_FORMS, what="flip form")
        outputs = getattr(getattr(model, "head", None), "out_features", None)
        if outputs is not None and outputs != num_classes + 1:
            raise InputError(
                f"PDBDefense needs a model with K+1 = {num_classes + 1} outputs, got {outputs}; "
                "extend the head with pdblib.core.extend_head and retrain with pdb_retrain"
            )
        self.model = model.eval()
        self.threshold = float(threshold)
        self.flip_form = flip_form
        self.secret_seed = int(secret_seed)
        self.device = device
        self._hash_cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self.deterministic = bool(deterministic_flips) or flip_form != "onehot_random"
        self._call_generator = torch.Generator().manual_seed(self.secret_seed + 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Return the network's ``(N, K+1)`` logits."""
        return predict_logits(self.model, x, device=self.device)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Return the transition scores ``(N,)`` of a batch."""
        return transition_scores(self.logits(x), self.num_classes)

    def calibrate(self, x_val: torch.Tensor, target_flip_rate: float = 0.01) -> float:
        """Set and return the threshold for ``target_flip_rate`` on benign validation inputs."""
        self.validate(x_val)
        self.threshold = calibrate_threshold(self.scores(x_val), target_flip_rate)
        logger.info("PDB flip threshold calibrated to %.4f for target benign flip rate %.3f",
                    self.threshold, target_flip_rate)
        return self.threshold

    def hash_parameters(self, num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the flip hash's ``(weights, affine)`` for inputs of ``num_features`` pixels.

        They depend only on ``secret_seed`` and ``num_features``, and are cached per pair.
        """
        key = (self.secret_seed, int(num_features))
        if key not in self._hash_cache:
            self._hash_cache[key] = hash_parameters(*key)
        return self._hash_cache[key]

    def _answer(self, x: torch.Tensor) -> Answer:
        logits = self.logits(x)
        weights, affine = self.hash_parameters(x[0].numel())
        if not self.deterministic:
            # A fresh key per call: the same input gets another wrong class next time.
            affine = torch.randint(1, HASH_PRIME, (2,), generator=self._call_generator, dtype=torch.int64)
        probs, flipped = defended_probs(logits, x, self.num_classes, self.threshold, self.flip_form,
                                        weights.to(x.device), affine.to(x.device))
        return Answer(probs=probs, labels=probs.argmax(dim=1), flipped=flipped)

    def reference_labels(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)[:, : self.num_classes].argmax(dim=1)

    def config(self) -> dict:
        return {"name": self.name, "threshold": self.threshold, "flip_form": self.flip_form,
                "deterministic_flips": self.deterministic}
