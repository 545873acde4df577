"""The PDB defense (Protecting Decision Boundaries).

C. Zhang, S. Luo, L. Pan, D. Gu, J. Yuan, "A new model stealing defense based on DNN
retraining for decision boundary protection", Neurocomputing 693, 133816 (2026).

Only the paper's abstract was available while writing this package. The abstract fixes the
four parts: an input-gradient penalty in the loss, transition samples near the decision
boundaries relabelled into a new class, one extra output neuron for that class, and label
flipping for the few queries predicted as that class. Every detail beyond that (synthesis
strategies, head initialization, flip score and threshold, flipped-answer form) is this
package's reading and is a documented knob.

Modules: :mod:`penalty` (loss), :mod:`transition` (synthesis), :mod:`head` (extended head),
:mod:`retrain` (PDB retraining), :mod:`inference` (defended inference and calibration).
"""

from pdblib.core.head import extend_head
from pdblib.core.inference import FLIP_FORMS, PDBDefense, calibrate_threshold
from pdblib.core.penalty import GradientPenaltyLoss, input_gradient_penalty
from pdblib.core.retrain import PDBConfig, pdb_retrain
from pdblib.core.transition import STRATEGIES, TransitionSet, synthesize_transition_samples

__all__ = [
    "FLIP_FORMS", "GradientPenaltyLoss", "PDBConfig", "PDBDefense", "STRATEGIES", "TransitionSet",
    "calibrate_threshold", "extend_head", "input_gradient_penalty", "pdb_retrain",
    "synthesize_transition_samples",
]
