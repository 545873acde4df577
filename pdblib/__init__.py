"""pdblib: PDB (Protecting Decision Boundaries) and the model-stealing study around it.

Glossary, used the same way in code, notebooks and the report:

K
    Number of real classes; real classes are ``0..K-1``.
transition class
    The extra class with index ``K`` that PDB adds for near-boundary inputs.
logits, probs
    Raw network outputs of shape ``(N, K)`` or ``(N, K+1)``, and their softmax.
answer
    What a deployed defense returns for a query batch: ``(N, K)`` probs or ``(N,)`` labels,
    never ``K+1`` entries.
budget
    Maximum number of queries an attacker may send through the oracle.
pool
    Unlabelled inputs the attacker draws queries from.
clone
    The attacker's copy of the victim, trained on the oracle's answers.
fidelity
    Top-1 agreement between the clone and a reference model on the test set.
"""

from pdblib.utils import seed_everything

__all__ = ["seed_everything"]
__version__ = "0.1.0"
