"""The query oracle: the only way an attack reaches a defended model.

The oracle wraps a :class:`~pdblib.defenses.base.Defense`, validates every batch, counts every
query, rejects a batch that would exceed the budget, and records what was asked and answered.
Attacks see only the returned posteriors (``output="probs"``) or labels (``output="labels"``);
the defender-side ``flipped`` flags stay in the oracle's log for the evaluation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from pdblib.defenses.base import Defense
from pdblib.utils import InputError, check_choice

logger = logging.getLogger(__name__)

OUTPUTS = ("probs", "labels")


class BudgetExhaustedError(RuntimeError):
    """A query batch would exceed the oracle's budget."""


@dataclass
class QueryLog:
    """Record of every answered batch, concatenated on demand."""

    answers: list[torch.Tensor] = field(default_factory=list)
    flipped: list[torch.Tensor] = field(default_factory=list)
    queries: list[torch.Tensor] = field(default_factory=list)

    def flip_fraction(self) -> float:
        """Fraction of answered queries that the defense flipped (0 when nothing was asked)."""
        if not self.flipped:
            return 0.0
        return float(torch.cat(self.flipped).float().mean())


class QueryOracle:
    """Black-box access to a defense under a query budget.

    Parameters
    ----------
    defense : Defense
        The deployed API.
    budget : int
        Maximum number of queries (inputs, not batches).
    output : {"probs", "labels"}
        Soft-label API (``(N, K)`` posteriors) or label-only API (``(N,)`` int64 labels).
    record_queries : bool
        Keep the query images in the log (memory: 3 KB per 28x28 query).
    """

    def __init__(self, defense: Defense, budget: int, *, output: str = "probs", record_queries: bool = False):
        if not isinstance(budget, int) or budget < 1:
            raise InputError(f"budget must be a positive int, got {budget!r}")
        check_choice(output, OUTPUTS, what="oracle output")
        self.defense = defense
        self.budget = budget
        self.output = output
        self.record_queries = record_queries
        self.used = 0
        self.log = QueryLog()

    @property
    def num_classes(self) -> int:
        """``K`` of the defended task."""
        return self.defense.num_classes

    @property
    def remaining(self) -> int:
        """Queries left in the budget."""
        return self.budget - self.used

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Answer a batch ``x`` of shape ``(N, C, H, W)`` with values in [0, 1].

        Returns
        -------
        torch.Tensor
            ``(N, K)`` posteriors or ``(N,)`` labels, by ``output``.

        Raises
        ------
        InputError
            If the batch has the wrong shape, dtype, NaN values or values outside [0, 1].
        BudgetExhaustedError
            If answering would exceed the budget; nothing is answered or counted then.
        """
        self.defense.validate(x)
        if len(x) > self.remaining:
            raise BudgetExhaustedError(
                f"query budget exhausted: {self.used} of {self.budget} queries used, the batch asks for "
                f"{len(x)} more; send at most {self.remaining} or create an oracle with a larger budget"
            )
        result = self.defense.answer(x)
        self.used += len(x)
        out = result.probs if self.output == "probs" else result.labels
        self.log.answers.append(out.detach().cpu())
        self.log.flipped.append(result.flipped.detach().cpu())
        if self.record_queries:
            self.log.queries.append(x.detach().cpu())
        return out.clone()
