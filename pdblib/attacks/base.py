"""The attack contract: steal a clone through a :class:`QueryOracle` at a list of budgets.

An attack implements :meth:`Attack.collect`, which spends queries and returns the transfer set
for the largest budget. The base class then trains one fresh clone per budget on the first
``b`` queries of that set, so a single query sequence serves every budget. Round-based attacks
(which retrain a substitute between rounds) override :meth:`Attack.run` instead.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn

from pdblib.attacks.oracle import QueryOracle
from pdblib.models import build_model
from pdblib.training import TrainConfig, train_model
from pdblib.utils import InputError

logger = logging.getLogger(__name__)


@dataclass
class TransferSet:
    """Queries and answers an attack collected, in query order.

    ``y`` is ``(N, K)`` posteriors or ``(N,)`` labels, as the oracle returned them.
    """

    x: torch.Tensor
    y: torch.Tensor


@dataclass
class AttackResult:
    """Clones trained at each budget, with the queries actually spent."""

    clones: dict[int, nn.Module] = field(default_factory=dict)
    queries_used: int = 0
    transfer: TransferSet | None = None
    history: dict[int, list] = field(default_factory=dict)


class Attack(ABC):
    """Base class of every model-stealing attack.

    Parameters
    ----------
    clone_model : str
        Registered model name of the clone (see :mod:`pdblib.models`).
    clone_train : TrainConfig
        Training of each clone.
    seed : int
        Seeds query selection and clone initialization.
    device : str
    progress : bool
        Show tqdm bars.
    """

    name = "attack"

    def __init__(self, *, clone_model: str = "small_cnn_narrow", clone_train: TrainConfig | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", progress: bool = True):
        self.clone_model = clone_model
        self.clone_train = clone_train or TrainConfig(epochs=10)
        self.seed = int(seed)
        self.device = device
        self.progress = progress

    def new_clone(self, num_classes: int, seed_offset: int = 0) -> nn.Module:
        """A freshly initialized clone, seeded by ``seed + seed_offset``."""
        state = torch.random.get_rng_state()
        torch.manual_seed(self.seed + seed_offset)
        model = build_model(self.clone_model, num_classes)
        torch.random.set_rng_state(state)
        return model

    def train_clone(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, seed_offset: int = 0,
                    desc: str = "clone") -> tuple[nn.Module, list]:
        """Train a fresh clone on posteriors ``(N, K)`` (soft cross-entropy) or labels ``(N,)``."""
        clone = self.new_clone(num_classes, seed_offset)
        config = TrainConfig(**{**self.clone_train.__dict__, "seed": self.seed + seed_offset})
        history = train_model(clone, x, y, config, device=self.device, progress=self.progress, desc=desc)
        return clone, history.records

    @abstractmethod
    def collect(self, oracle: QueryOracle, pool: torch.Tensor, budget: int) -> TransferSet:
        """Spend up to ``budget`` queries and return the transfer set in query order."""

    def run(self, oracle: QueryOracle, pool: torch.Tensor, budgets: list[int]) -> AttackResult:
        """Collect queries for ``max(budgets)`` and train one clone per budget.

        Raises
        ------
        InputError
            If ``budgets`` is empty, not positive, or larger than the oracle's budget.
        """
        budgets = sorted({int(b) for b in budgets})
        if not budgets or budgets[0] < 1:
            raise InputError(f"budgets must be positive ints, got {budgets}")
        if budgets[-1] > oracle.remaining:
            raise InputError(
                f"largest budget {budgets[-1]} exceeds the oracle's remaining {oracle.remaining} queries; "
                "create the oracle with budget >= max(budgets)"
            )
        transfer = self.collect(oracle, pool, budgets[-1])
        result = AttackResult(queries_used=oracle.used, transfer=transfer)
        for i, budget in enumerate(budgets):
            n = min(budget, len(transfer.x))
            clone, records = self.train_clone(transfer.x[:n], transfer.y[:n], oracle.num_classes,
                                              seed_offset=i, desc=f"{self.name} clone @{budget}")
            result.clones[budget] = clone
            result.history[budget] = records
        return result

    def config(self) -> dict:
        """Knob values, for the report."""
        return {"name": self.name, "clone_model": self.clone_model, "clone_epochs": self.clone_train.epochs,
                "clone_lr": self.clone_train.lr, "seed": self.seed}
