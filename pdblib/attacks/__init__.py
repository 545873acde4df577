"""Model-stealing attacks behind one contract (:class:`Attack`), with a registry by name."""

from __future__ import annotations

from pdblib.attacks.base import Attack, AttackResult, TransferSet
from pdblib.attacks.knockoff import KnockoffRandom
from pdblib.attacks.oracle import BudgetExhaustedError, QueryOracle
from pdblib.utils import check_choice

ATTACKS: dict[str, type[Attack]] = {
    KnockoffRandom.name: KnockoffRandom,
}


def build_attack(name: str, **kwargs) -> Attack:
    """Build a registered attack by name; an unknown name raises an error listing the known ones."""
    check_choice(name, ATTACKS, what="attack")
    return ATTACKS[name](**kwargs)


__all__ = ["ATTACKS", "Attack", "AttackResult", "BudgetExhaustedError", "KnockoffRandom", "QueryOracle",
           "TransferSet", "build_attack"]
