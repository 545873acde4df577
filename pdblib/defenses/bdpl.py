"""BDPL: randomized-response labels for queries near the decision boundary.

Zheng, Lou, Xiong, Wei, Zeng, "BDPL: A Boundary Differentially Private Layer Against Machine
Learning Model Extraction Attacks", ESORICS 2019.

BDPL adds a layer after a deployed classifier. Queries inside a boundary-sensitive zone get
their label from randomized response: the true top-1 with probability
``e^epsilon / (e^epsilon + 1)``, otherwise the runner-up. Queries outside the zone are
answered unchanged. Randomized response chooses between two labels; with K classes this
package takes the runner-up as the second label, the class on the other side of the nearest
boundary.

The zone here is measured on the outputs: a query is inside it when its top-1 minus top-2
margin (of the posterior or of the logits) is below ``zone_width``. The random choice is keyed
by the input (:func:`pdblib.core.inference.input_keys`), so a repeated query gets the same
answer and cannot average the randomization away.

How it differs from PDB: BDPL leaves the deployed network as it is and measures closeness to a
boundary at query time from a fixed margin, then flips only part of those queries at random,
to the runner-up. PDB retrains the network: a gradient penalty moves the decision boundaries
away from benign data, and the boundary region is learned as an extra transition class from
synthesized samples. Every query the retrained network assigns to that class is flipped, with
a threshold calibrated to a target benign flip rate.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from pdblib.defenses.base import Answer
from pdblib.defenses.passive import _PosteriorDefense
from pdblib.training import predict_logits
from pdblib.utils import InputError, check_choice

logger = logging.getLogger(__name__)

MARGIN_SPACES = ("probs", "logits")
ANSWER_FORMS = ("swap_top2", "onehot")
_KEY_RANGE = 2_147_483_647  # input_keys returns values in [0, 2^31 - 1)


def flip_probability(epsilon: float) -> float:
    """Randomized-response probability of answering the runner-up, ``1 / (e^epsilon + 1)``."""
    return 1.0 / (math.exp(epsilon) + 1.0)


def top2_margin(scores: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 value of each row, ``(N, K) -> (N,)``, non-negative."""
    top2 = scores.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


class BDPL(_PosteriorDefense):
    """Boundary differentially private layer: randomized-response labels near the boundary.

    Zheng, Lou, Xiong, Wei, Zeng, "BDPL: A Boundary Differentially Private Layer Against
    Machine Learning Model Extraction Attacks", ESORICS 2019. See the module notes for how it
    differs from PDB.

    Parameters
    ----------
    model : nn.Module
        The victim, with K outputs.
    num_classes : int
        ``K``.
    zone_width : float
        Width of the boundary-sensitive zone: queries with top-1 minus top-2 margin below it
        are randomized; the strength knob. In ``[0, 1]`` for ``margin_on="probs"`` and in
        ``[0, 100]`` for ``"logits"``; 0 turns the defense off. Default 0.2: this package's
        choice, a zone of the posteriors whose top two classes are within 0.2 of each other.
    epsilon : float
        Privacy parameter of the randomized response, in ``[0, 20]``. The flip probability
        inside the zone is ``1 / (e^epsilon + 1)``: 1/2 at 0, and 0.27 at the default 1.0
        (this package's choice).
    margin_on : {"probs", "logits"}
        Whether the margin is taken on the softmax posterior (default) or on the logits.
    answer_form : {"swap_top2", "onehot"}
        ``"swap_top2"`` (default) returns the posterior, with its top two entries swapped for
        flipped queries, so answers outside the zone are the victim's posterior unchanged.
        ``"onehot"`` returns one-hot labels for every query, the label-only API of the paper.
    secret_seed : int
        Key of the randomized response; keep it private in a deployment.
    """

    name = "bdpl"
    keeps_top1 = False
    deterministic = True

    def __init__(self, model: nn.Module, num_classes: int, *, zone_width: float = 0.2, epsilon: float = 1.0,
                 margin_on: str = "probs", answer_form: str = "swap_top2", secret_seed: int = 0,
                 input_shape=(1, 28, 28), device: str | torch.device = "cpu"):
        super().__init__(model, num_classes, input_shape, device)
        check_choice(margin_on, MARGIN_SPACES, what="BDPL margin space")
        check_choice(answer_form, ANSWER_FORMS, what="BDPL answer form")
        max_width = 1.0 if margin_on == "probs" else 100.0
        if not (isinstance(zone_width, (int, float)) and 0.0 <= zone_width <= max_width):
            raise InputError(f"zone_width must be in [0, {max_width}] for margins on {margin_on}, got {zone_width!r}")
        if not (isinstance(epsilon, (int, float)) and 0.0 <= epsilon <= 20.0):
            raise InputError(f"epsilon must be in [0, 20], got {epsilon!r}")
        self.zone_width = float(zone_width)
        self.epsilon = float(epsilon)
        self.margin_on = margin_on
        self.answer_form = answer_form
        self.secret_seed = int(secret_seed)

    def in_zone(self, logits: torch.Tensor) -> torch.Tensor:
        """Test which queries lie in the boundary-sensitive zone, ``(N, K)`` logits to an ``(N,)`` bool mask."""
        scores = torch.softmax(logits, dim=1) if self.margin_on == "probs" else logits
        return top2_margin(scores) < self.zone_width

    def _answer(self, x: torch.Tensor) -> Answer:
        # Imported here because pdblib.core.inference imports this package's base module.
        from pdblib.core.inference import input_keys

        logits = predict_logits(self.model, x, device=self.device)
        probs = torch.softmax(logits, dim=1)
        top2 = probs.topk(2, dim=1).indices
        uniform = input_keys(x, self.secret_seed).double() / _KEY_RANGE  # keyed draw in [0, 1)
        flipped = self.in_zone(logits) & (uniform < flip_probability(self.epsilon))
        labels = torch.where(flipped, top2[:, 1], top2[:, 0])

        if self.answer_form == "onehot":
            out = torch.nn.functional.one_hot(labels, self.num_classes).to(probs.dtype)
        else:
            out = probs.clone()
            rows = flipped.nonzero(as_tuple=True)[0]
            out[rows, top2[rows, 0]] = probs[rows, top2[rows, 1]]
            out[rows, top2[rows, 1]] = probs[rows, top2[rows, 0]]
            # NOTE: where the top two entries are exactly equal the swap changes nothing, so
            # labels (the runner-up) then differs from out.argmax.
        return Answer(probs=out, labels=labels, flipped=flipped)

    def config(self) -> dict:
        return {"name": self.name, "zone_width": self.zone_width, "epsilon": self.epsilon,
                "margin_on": self.margin_on, "answer_form": self.answer_form}
