"""Copycat CNN: a clone trained on hard labels of random natural images.

J. R. Correia-Silva, R. F. Berriel, C. Badue, A. F. de Souza, T. Oliveira-Santos, "Copycat
CNN: Stealing Knowledge by Persuading Confession with Random Non-Labeled Data", IJCNN 2018.
The attacker queries the target with natural images that need not come from the target's
problem domain, keeps only the returned top-1 label of each, and trains the copycat on those
labels.
"""

from __future__ import annotations

import logging

import torch

from pdblib.attacks.base import AttackResult, HardLabelView
from pdblib.attacks.knockoff import KnockoffRandom
from pdblib.attacks.oracle import QueryOracle

logger = logging.getLogger(__name__)


class CopycatCNN(KnockoffRandom):
    """Copycat CNN (Correia-Silva et al., IJCNN 2018).

    Queries are pool images in random order, as in :class:`KnockoffRandom` (a budget larger
    than the pool repeats it with shifted copies). The clone always trains with
    cross-entropy on top-1 labels. Both oracle outputs are accepted: with a posterior oracle
    the attack reduces each answer to its top-1 label itself, through
    :class:`~pdblib.attacks.base.HardLabelView`, so the result matches the paper's
    label-only setting.

    The paper fine-tunes an ImageNet-pretrained VGG-16 as the copycat. Here the clone is the
    registered ``clone_model``, trained from scratch, because this package has no pretrained
    weights for its 28x28 task.

    Parameters
    ----------
    query_batch_size, jitter_pixels
        As :class:`KnockoffRandom` (defaults 256 and 2, this package's choices).
    **kwargs
        Passed to :class:`~pdblib.attacks.base.Attack` (clone model, clone training, seed).
    """

    name = "copycat"

    def run(self, oracle: QueryOracle, pool: torch.Tensor, budgets: list[int]) -> AttackResult:
        """Run :meth:`KnockoffRandom.run` with every answer reduced to its top-1 label."""
        return super().run(HardLabelView(oracle), pool, budgets)
