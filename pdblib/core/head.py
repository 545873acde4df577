"""Extended head: replace the final ``Linear(d, K)`` by ``Linear(d, K+1)``.

The K trained rows (weights and biases) are copied, so right after extension the first K
logits equal the original model's. The new row K (the transition class) starts with small
random weights and a bias of ``transition_bias``; the default ``0.0`` with weights drawn from
N(0, 0.01^2) keeps the transition logit near 0 until fine-tuning moves it. This
initialization is a choice of this package, not a detail the PDB abstract gives.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from pdblib.utils import InputError


def extend_head(model: nn.Module, *, generator: torch.Generator | None = None,
                weight_std: float = 0.01, transition_bias: float = 0.0) -> nn.Module:
    """Return a deep copy of ``model`` whose ``head`` has one more output, the transition class K.

    Parameters
    ----------
    model : pdblib.models.Classifier
        A model with a final ``nn.Linear`` attribute ``head`` of ``K`` outputs.
    generator : torch.Generator, optional
        Draws the new row's weights.

    Returns
    -------
    nn.Module
        The extended copy; ``model`` itself is unchanged.

    Raises
    ------
    InputError
        If ``model`` has no ``nn.Linear`` attribute called ``head``.
    """
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Linear):
        raise InputError(
            f"extend_head needs a model with an nn.Linear attribute 'head', got {type(head).__name__}; "
            "build the model with pdblib.models.build_model"
        )
    extended = copy.deepcopy(model)
    old = extended.head
    k, d = old.out_features, old.in_features
    new = nn.Linear(d, k + 1, bias=old.bias is not None).to(old.weight.device, old.weight.dtype)
    with torch.no_grad():
        new.weight[:k].copy_(old.weight)
        noise = torch.randn(d, generator=generator) * weight_std
        new.weight[k].copy_(noise.to(new.weight))
        if old.bias is not None:
            new.bias[:k].copy_(old.bias)
            new.bias[k] = transition_bias
    extended.head = new
    return extended
