"""The defense contract: a deployed classifier API that maps a query batch to answers.

Every defense, PDB and the baselines alike, subclasses :class:`Defense` and implements
``_answer``. The base class validates the batch, runs the work under
``torch.inference_mode`` in eval mode, and checks the answer's shape, so that an answer never
has ``K+1`` entries.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from pdblib.training import predict_logits
from pdblib.utils import InputError, validate_images


@dataclass
class Answer:
    """What a defended API computes for a batch of N queries.

    Attributes
    ----------
    probs : (N, K) float
        The posterior a soft-label API returns; rows are non-negative and sum to 1.
    labels : (N,) int64
        The label a label-only API returns, ``probs.argmax(1)``.
    flipped : (N,) bool
        Defender-side diagnostic: whether the defense deliberately returned a wrong top-1.
        The query oracle keeps it in its log and never passes it to the attacker.
    """

    probs: torch.Tensor
    labels: torch.Tensor
    flipped: torch.Tensor


class Defense(ABC):
    """Base class of every defense.

    Parameters
    ----------
    num_classes : int
        ``K``, the number of real classes every answer has.
    input_shape : tuple
        ``(C, H, W)`` of one query; batches of another shape are rejected.

    Class attributes
    ----------------
    keeps_top1 : bool
        True when the answer's top-1 equals the deployed network's unflipped top-1.
    deterministic : bool
        True when the same input always gets the same answer.
    """

    name = "defense"
    keeps_top1 = False
    deterministic = True

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int] = (1, 28, 28)):
        if num_classes < 2:
            raise InputError(f"num_classes must be at least 2, got {num_classes}")
        self.num_classes = int(num_classes)
        self.input_shape = tuple(input_shape)

    def validate(self, x: torch.Tensor) -> torch.Tensor:
        """Raise :class:`InputError` unless ``x`` is a valid ``(N, C, H, W)`` query batch in [0, 1]."""
        return validate_images(x, name="query batch", channels=self.input_shape[0],
                               image_size=self.input_shape[1:])

    def answer(self, x: torch.Tensor) -> Answer:
        """Answer a query batch ``x`` of shape ``(N, C, H, W)`` with values in [0, 1]."""
        self.validate(x)
        with torch.inference_mode():
            result = self._answer(x)
        if result.probs.shape != (len(x), self.num_classes):
            raise RuntimeError(
                f"{type(self).__name__} produced answers of shape {tuple(result.probs.shape)}, "
                f"expected {(len(x), self.num_classes)}"
            )
        return result

    @abstractmethod
    def _answer(self, x: torch.Tensor) -> Answer:
        """Compute the answer for a validated batch."""

    @abstractmethod
    def reference_labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 over the K real classes of the deployed network, before any flip or perturbation."""

    def config(self) -> dict:
        """Return the knob values, for the report."""
        return {"name": self.name}


class Undefended(Defense):
    """The victim network's softmax posterior, unchanged."""

    name = "undefended"
    keeps_top1 = True

    def __init__(self, model: nn.Module, num_classes: int, input_shape=(1, 28, 28),
                 device: str | torch.device = "cpu"):
        super().__init__(num_classes, input_shape)
        self.model = model.eval()
        self.device = device

    def _answer(self, x: torch.Tensor) -> Answer:
        logits = predict_logits(self.model, x, device=self.device)
        probs = torch.softmax(logits, dim=1)
        return Answer(probs=probs, labels=probs.argmax(dim=1),
                      flipped=torch.zeros(len(x), dtype=torch.bool))

    def reference_labels(self, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, x, device=self.device).argmax(dim=1)


class LabelOnly(Undefended):
    """Top-1 label only: the answer is a one-hot vector on the victim's top-1 class.

    The passive baseline of a label-only API; label-only attacks (and the hard-label oracle
    mode) see the same information.
    """

    name = "label_only"
    keeps_top1 = True

    def _answer(self, x: torch.Tensor) -> Answer:
        labels = predict_logits(self.model, x, device=self.device).argmax(dim=1)
        probs = torch.nn.functional.one_hot(labels, self.num_classes).float()
        return Answer(probs=probs, labels=labels, flipped=torch.zeros(len(x), dtype=torch.bool))
