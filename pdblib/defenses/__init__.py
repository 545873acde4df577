"""Defenses behind one contract (:class:`Defense`), with a registry by name.

Every registered class takes the deployed model and ``num_classes`` first, then its knobs as
keyword arguments. :class:`pdblib.core.PDBDefense` is registered as ``"pdb"``.
"""

from __future__ import annotations

from pdblib.defenses.base import Answer, Defense, LabelOnly, Undefended
from pdblib.utils import check_choice

DEFENSES: dict[str, type[Defense]] = {
    Undefended.name: Undefended,
    LabelOnly.name: LabelOnly,
}


def _register_pdb() -> None:
    # Imported here, not at module level: pdblib.core.inference imports pdblib.defenses.base.
    from pdblib.core.inference import PDBDefense

    DEFENSES[PDBDefense.name] = PDBDefense


def build_defense(name: str, model, num_classes: int, **kwargs) -> Defense:
    """Build a registered defense by name; an unknown name raises an error listing the known ones."""
    _register_pdb()
    check_choice(name, DEFENSES, what="defense")
    return DEFENSES[name](model, num_classes, **kwargs)


__all__ = ["Answer", "DEFENSES", "Defense", "LabelOnly", "Undefended", "build_defense"]
