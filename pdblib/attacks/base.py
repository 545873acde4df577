"""The attack contract: steal a clone through a :class:`QueryOracle` at a list of budgets.

An attack implements :meth:`Attack.collect`, which spends queries and returns the transfer set
for the largest budget. The base class then trains one fresh clone per budget on the entries
of that set paid for within the budget, so a single query sequence serves every budget.
Round-based attacks (which retrain a substitute between rounds) override :meth:`Attack.run`
instead and call :meth:`Attack.check_run` first.

Every attack declares the oracle outputs it can use (``supported_outputs``) and whether it
draws queries from a natural image pool (``needs_pool``). :func:`query_in_batches` sends a
query batch in chunks and stops exactly at the oracle's remaining budget.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm import tqdm

from pdblib.attacks.oracle import OUTPUTS, QueryOracle
from pdblib.models import build_model
from pdblib.training import TrainConfig, train_model
from pdblib.utils import InputError, validate_images

logger = logging.getLogger(__name__)


@dataclass
class TransferSet:
    """Queries and answers an attack collected, in query order.

    Attributes
    ----------
    x : (N, C, H, W) float
        The training inputs of the clone.
    y : (N, K) float or (N,) int64
        Posteriors or labels, as the oracle returned them (or as the attack aggregated them).
    spent : (N,) int64, optional
        Oracle queries spent once entry ``i`` was available, non-decreasing. ``None`` means
        one query per entry, so ``spent[i] == i + 1``. Attacks that spend several queries per
        entry (averaging over repeated queries) set it.
    """

    x: torch.Tensor
    y: torch.Tensor
    spent: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.x)

    def within_budget(self, budget: int) -> "TransferSet":
        """Return the leading entries that were paid for with at most ``budget`` queries."""
        if self.spent is None:
            n = min(int(budget), len(self.x))
        else:
            n = int((self.spent <= int(budget)).sum())
        spent = None if self.spent is None else self.spent[:n]
        return TransferSet(x=self.x[:n], y=self.y[:n], spent=spent)


@dataclass
class AttackResult:
    """Clones trained at each budget, with the queries actually spent.

    ``info`` maps a budget to attack-specific diagnostics (for example how many answers a
    filter dropped); it is empty for attacks that report none.
    """

    clones: dict[int, nn.Module] = field(default_factory=dict)
    queries_used: int = 0
    transfer: TransferSet | None = None
    history: dict[int, list] = field(default_factory=dict)
    info: dict[int, dict] = field(default_factory=dict)


def to_labels(y: torch.Tensor) -> torch.Tensor:
    """Return top-1 labels ``(N,)`` int64 from posteriors ``(N, K)``, or labels ``(N,)`` unchanged."""
    if y.dim() == 2:
        return y.argmax(dim=1)
    if y.dim() == 1:
        return y.long()
    raise InputError(f"answers must have shape (N, K) or (N,), got {tuple(y.shape)}")


def query_in_batches(oracle: QueryOracle, x: torch.Tensor, batch_size: int, *, progress: bool = False,
                     desc: str = "queries") -> tuple[torch.Tensor, torch.Tensor]:
    """Query ``x`` in chunks of ``batch_size`` and stop exactly at the oracle's remaining budget.

    Parameters
    ----------
    oracle : QueryOracle
    x : (N, C, H, W) float
        Queries in the order to send them.
    batch_size : int
        Queries per oracle call.

    Returns
    -------
    (x_sent, answers)
        ``x_sent`` is ``x[:n]`` with ``n = min(N, oracle.remaining)``, and ``answers`` the
        oracle's ``(n, K)`` posteriors or ``(n,)`` labels. With no budget left both are empty.
    """
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    n = min(len(x), oracle.remaining)
    if n < len(x):
        logger.info("%d of %d queries fit in the remaining budget; the rest are not sent", n, len(x))
    answers = []
    for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False, mininterval=5.0):
        answers.append(oracle.query(x[start:min(start + batch_size, n)]))
    if answers:
        return x[:n], torch.cat(answers)
    if oracle.output == "labels":
        return x[:0], torch.empty(0, dtype=torch.int64)
    return x[:0], torch.empty(0, oracle.num_classes)


class HardLabelView:
    """A label-only view of a :class:`QueryOracle`: answers are reduced to their top-1 label.

    Every query still goes through the wrapped oracle, which counts it, enforces the budget
    and logs it. An attack run through this view sees ``output == "labels"`` and ``(N,)``
    int64 answers whatever the wrapped oracle's output form is, so any attack can be run as
    a hard-label attacker.
    """

    output = "labels"

    def __init__(self, oracle: QueryOracle):
        self.oracle = oracle

    @property
    def num_classes(self) -> int:
        """``K`` of the defended task."""
        return self.oracle.num_classes

    @property
    def budget(self) -> int:
        """The wrapped oracle's budget."""
        return self.oracle.budget

    @property
    def used(self) -> int:
        """Queries the wrapped oracle has answered."""
        return self.oracle.used

    @property
    def remaining(self) -> int:
        """Queries left in the wrapped oracle's budget."""
        return self.oracle.remaining

    @property
    def log(self):
        """The wrapped oracle's query log."""
        return self.oracle.log

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """Query the wrapped oracle and return ``(N,)`` int64 top-1 labels."""
        return to_labels(self.oracle.query(x))


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

    Class attributes
    ----------------
    supported_outputs : tuple of str
        Oracle outputs the attack can use, a subset of ``("probs", "labels")``; :meth:`run`
        rejects any other with :class:`InputError`.
    needs_pool : bool
        True when the attack draws queries from a natural image pool; data-free attacks set
        it to False and accept ``pool=None``.
    """

    name = "attack"
    supported_outputs: tuple[str, ...] = OUTPUTS
    needs_pool = True

    def __init__(self, *, clone_model: str = "small_cnn_narrow", clone_train: TrainConfig | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", progress: bool = True):
        self.clone_model = clone_model
        self.clone_train = clone_train or TrainConfig(epochs=10)
        self.seed = int(seed)
        self.device = device
        self.progress = progress

    def new_clone(self, num_classes: int, seed_offset: int = 0) -> nn.Module:
        """Build a freshly initialized clone, seeded by ``seed + seed_offset``."""
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

    def check_output(self, oracle: QueryOracle) -> None:
        """Raise :class:`InputError` unless the oracle's output form is in ``supported_outputs``."""
        if oracle.output not in self.supported_outputs:
            raise InputError(
                f"attack {self.name!r} does not support oracle output {oracle.output!r}; it supports "
                f"{list(self.supported_outputs)}. Create the QueryOracle with output="
                f"{self.supported_outputs[0]!r}"
            )

    def check_run(self, oracle: QueryOracle, pool: torch.Tensor | None, budgets: list[int]) -> list[int]:
        """Validate the arguments of :meth:`run` and return the budgets sorted and deduplicated.

        Raises
        ------
        InputError
            If the oracle's output form is unsupported, ``budgets`` is empty, not positive, or
            larger than the oracle's remaining budget, or the attack needs a pool and ``pool``
            is not a valid image batch.
        """
        self.check_output(oracle)
        budgets = sorted({int(b) for b in budgets})
        if not budgets or budgets[0] < 1:
            raise InputError(f"budgets must be positive ints, got {budgets}")
        if budgets[-1] > oracle.remaining:
            raise InputError(
                f"largest budget {budgets[-1]} exceeds the oracle's remaining {oracle.remaining} queries; "
                "create the oracle with budget >= max(budgets)"
            )
        if self.needs_pool:
            if pool is None:
                raise InputError(f"attack {self.name!r} draws queries from a pool; pass an image batch, got None")
            validate_images(pool, name="pool")
        return budgets

    @abstractmethod
    def collect(self, oracle: QueryOracle, pool: torch.Tensor, budget: int) -> TransferSet:
        """Spend up to ``budget`` queries and return the transfer set in query order."""

    def run(self, oracle: QueryOracle, pool: torch.Tensor | None, budgets: list[int]) -> AttackResult:
        """Collect queries for ``max(budgets)`` and train one clone per budget.

        Raises
        ------
        InputError
            See :meth:`check_run`.
        """
        budgets = self.check_run(oracle, pool, budgets)
        transfer = self.collect(oracle, pool, budgets[-1])
        result = AttackResult(queries_used=oracle.used, transfer=transfer)
        for i, budget in enumerate(budgets):
            part = transfer.within_budget(budget)
            if len(part) == 0:
                raise InputError(
                    f"attack {self.name!r} has no answered query within budget {budget}; "
                    "raise the smallest budget"
                )
            clone, records = self.train_clone(part.x, part.y, oracle.num_classes,
                                              seed_offset=i, desc=f"{self.name} clone @{budget}")
            result.clones[budget] = clone
            result.history[budget] = records
        return result

    def config(self) -> dict:
        """Knob values, for the report."""
        return {"name": self.name, "clone_model": self.clone_model, "clone_epochs": self.clone_train.epochs,
                "clone_lr": self.clone_train.lr, "seed": self.seed,
                "supported_outputs": list(self.supported_outputs)}
