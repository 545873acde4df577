"""Defenses behind one contract (:class:`Defense`), with a registry by name.

Every registered class takes the deployed model and ``num_classes`` first, then its knobs as
keyword arguments. :class:`pdblib.core.PDBDefense` is registered as ``"pdb"``.

Baselines, one module each: :mod:`passive` (rounding, Gaussian noise), :mod:`reverse_sigmoid`,
:mod:`mad` (prediction poisoning), :mod:`adaptive_misinformation` and :mod:`bdpl`.
"""

from __future__ import annotations

from pdblib.defenses.base import Answer, Defense, LabelOnly, Undefended
from pdblib.defenses.adaptive_misinformation import AdaptiveMisinformation
from pdblib.defenses.bdpl import BDPL
from pdblib.defenses.mad import MAD
from pdblib.defenses.passive import GaussianNoise, Rounding
from pdblib.defenses.reverse_sigmoid import ReverseSigmoid
from pdblib.utils import check_choice

_BUILTIN_DEFENSES: dict[str, type[Defense]] = {
    cls.name: cls
    for cls in (Undefended, LabelOnly, Rounding, GaussianNoise, ReverseSigmoid, MAD,
                AdaptiveMisinformation, BDPL)
}


def _defenses() -> dict[str, type[Defense]]:
    """Return the registry :data:`DEFENSES`, built with PDB on first use.

    ``pdblib.core.inference`` imports ``pdblib.defenses.base``, which runs this package first
    when ``pdblib.core`` is imported before it. ``PDBDefense`` does not exist yet at that point,
    so the registry is built on first access (module ``__getattr__``) instead of at import.
    """
    registry = globals().get("DEFENSES")
    if registry is None:
        from pdblib.core.inference import PDBDefense

        registry = {**_BUILTIN_DEFENSES, PDBDefense.name: PDBDefense}
        globals()["DEFENSES"] = registry
    return registry


def __getattr__(name: str):
    if name == "DEFENSES":
        return _defenses()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_defense(name: str, model, num_classes: int, **kwargs) -> Defense:
    """Build a registered defense by name; an unknown name raises an error listing the known ones."""
    registry = _defenses()
    check_choice(name, registry, what="defense")
    return registry[name](model, num_classes, **kwargs)


__all__ = [
    "AdaptiveMisinformation", "Answer", "BDPL", "DEFENSES", "Defense", "GaussianNoise", "LabelOnly", "MAD",
    "ReverseSigmoid", "Rounding", "Undefended", "build_defense",
]
