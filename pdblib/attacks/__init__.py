"""Model-stealing attacks behind one contract (:class:`Attack`), with a registry by name."""

from __future__ import annotations

from pdblib.attacks.activethief import (ActiveThief, ActiveThiefDFAL, ActiveThiefKCenter, ActiveThiefRandom,
                                        ActiveThiefUncertainty)
from pdblib.attacks.adaptive import AveragingAttack, FlipAwareAttack, HardLabelKnockoff
from pdblib.attacks.base import Attack, AttackResult, HardLabelView, TransferSet, query_in_batches
from pdblib.attacks.copycat import CopycatCNN
from pdblib.attacks.datafree import DFME, MAZE
from pdblib.attacks.jbda import JBDA, JBSelf, JBTopK
from pdblib.attacks.knockoff import KnockoffAdaptive, KnockoffRandom
from pdblib.attacks.oracle import BudgetExhaustedError, QueryOracle
from pdblib.utils import check_choice

ATTACKS: dict[str, type[Attack]] = {
    KnockoffRandom.name: KnockoffRandom,
    KnockoffAdaptive.name: KnockoffAdaptive,
    JBDA.name: JBDA,
    JBSelf.name: JBSelf,
    JBTopK.name: JBTopK,
    CopycatCNN.name: CopycatCNN,
    HardLabelKnockoff.name: HardLabelKnockoff,
    AveragingAttack.name: AveragingAttack,
    FlipAwareAttack.name: FlipAwareAttack,
    ActiveThiefRandom.name: ActiveThiefRandom,
    ActiveThiefUncertainty.name: ActiveThiefUncertainty,
    ActiveThiefKCenter.name: ActiveThiefKCenter,
    ActiveThiefDFAL.name: ActiveThiefDFAL,
    DFME.name: DFME,
    MAZE.name: MAZE,
}


def build_attack(name: str, **kwargs) -> Attack:
    """Build a registered attack by name; an unknown name raises an error listing the known ones."""
    check_choice(name, ATTACKS, what="attack")
    return ATTACKS[name](**kwargs)


__all__ = ["ATTACKS", "Attack", "AttackResult", "AveragingAttack", "BudgetExhaustedError", "CopycatCNN",
           "FlipAwareAttack", "HardLabelKnockoff", "HardLabelView", "JBDA", "JBSelf", "JBTopK", "KnockoffAdaptive",
           "KnockoffRandom", "QueryOracle", "TransferSet", "build_attack", "query_in_batches",
           "ActiveThief", "ActiveThiefDFAL", "ActiveThiefKCenter", "ActiveThiefRandom", "ActiveThiefUncertainty",
           "DFME", "MAZE"]
