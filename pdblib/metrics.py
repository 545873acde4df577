"""Utility and security metrics of a defense and of the clones stolen from it.

Utility (:func:`utility_metrics`): defended test accuracy, its drop versus the undefended
victim, the benign flip rate, and the posterior distortion (mean L1 distance between the
defended and the undefended answers).

Security (:func:`clone_metrics`): clone test accuracy, normalized clone accuracy (clone over
victim accuracy), and fidelity (top-1 agreement on the test set) against two references: the
deployed network's own unflipped top-1, and the original victim. PDB deploys a retrained
network, so the two fidelities differ for it.
"""

from __future__ import annotations

import torch
from torch import nn

from pdblib.defenses.base import Defense
from pdblib.training import predict_logits


def utility_metrics(defense: Defense, victim: nn.Module, x: torch.Tensor, y: torch.Tensor,
                    *, batch_size: int = 1000) -> dict[str, float]:
    """Utility of ``defense`` on labelled benign data ``(x, y)``.

    Returns
    -------
    dict
        ``victim_acc``, ``defended_acc``, ``acc_drop`` (victim minus defended, in accuracy
        units), ``flip_rate``, ``l1_distortion`` (mean over inputs of the L1 distance between
        defended and undefended posteriors, in [0, 2]) and ``deployed_acc`` (the deployed
        network's unflipped top-1 accuracy).
    """
    victim_probs = torch.softmax(predict_logits(victim, x), dim=1)
    probs, labels, flipped, reference = [], [], [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        answer = defense.answer(xb)
        probs.append(answer.probs)
        labels.append(answer.labels)
        flipped.append(answer.flipped)
        reference.append(defense.reference_labels(xb))
    probs_t = torch.cat(probs)
    victim_acc = float((victim_probs.argmax(dim=1) == y).float().mean())
    defended_acc = float((torch.cat(labels) == y).float().mean())
    return {
        "victim_acc": victim_acc,
        "defended_acc": defended_acc,
        "acc_drop": victim_acc - defended_acc,
        "flip_rate": float(torch.cat(flipped).float().mean()),
        "l1_distortion": float((probs_t - victim_probs).abs().sum(dim=1).mean()),
        "deployed_acc": float((torch.cat(reference) == y).float().mean()),
    }


def reference_predictions(defense: Defense, x: torch.Tensor, *, batch_size: int = 1000
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the defended labels ``(N,)`` of ``x`` and the deployed network's unflipped top-1 ``(N,)``."""
    labels, reference = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size]
        labels.append(defense.answer(xb).labels)
        reference.append(defense.reference_labels(xb))
    return torch.cat(labels), torch.cat(reference)


def clone_metrics(clone: nn.Module, x: torch.Tensor, y: torch.Tensor, *, victim: nn.Module,
                  defense: Defense, victim_pred: torch.Tensor | None = None,
                  deployed_pred: torch.Tensor | None = None) -> dict[str, float]:
    """Accuracy and fidelity of a stolen ``clone`` on the test set ``(x, y)``.

    ``victim_pred`` and ``deployed_pred`` ``(N,)``, when given, are the victim's top-1 and the
    deployed network's unflipped top-1 on ``x``, computed once for many clones; otherwise
    they are predicted here.

    Returns
    -------
    dict
        ``clone_acc``, ``normalized_clone_acc`` (clone over victim accuracy),
        ``fidelity_victim`` (agreement with the original victim) and ``fidelity_deployed``
        (agreement with the deployed network's unflipped top-1).
    """
    clone_pred = predict_logits(clone, x).argmax(dim=1)
    if victim_pred is None:
        victim_pred = predict_logits(victim, x).argmax(dim=1)
    if deployed_pred is None:
        deployed_pred = torch.cat([defense.reference_labels(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    clone_acc = float((clone_pred == y).float().mean())
    victim_acc = float((victim_pred == y).float().mean())
    return {
        "clone_acc": clone_acc,
        "normalized_clone_acc": clone_acc / victim_acc if victim_acc > 0 else float("nan"),
        "fidelity_victim": float((clone_pred == victim_pred).float().mean()),
        "fidelity_deployed": float((clone_pred == deployed_pred).float().mean()),
    }
