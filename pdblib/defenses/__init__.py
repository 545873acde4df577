"""Defenses behind one contract (:class:`Defense`), with a registry by name."""

from pdblib.defenses.base import Answer, Defense, Undefended

__all__ = ["Answer", "Defense", "Undefended"]
