"""Flip rule and keyed input hash of PDB's defended inference, written for TorchScript.

:class:`pdblib.core.inference.PDBDefense` runs these functions eagerly, and
:class:`pdblib.core.export.DeployedPDB` compiles the same functions with ``torch.jit.script``,
so the Python defense and the exported module share one implementation of the flip.

This module has no ``from __future__ import annotations`` on purpose: TorchScript reads the
annotations of the functions it compiles, and the types must stay ``typing`` objects that it
understands (``Tuple``, ``Optional``).
"""

from typing import Tuple

import torch

FLIP_FORMS = ("swap_top2", "onehot_second", "onehot_random")
HASH_PRIME = 2_147_483_647  # 2^31 - 1, so the product of two residues fits in int64
SWAP_TIE_BREAK = 1e-6  # mass moved onto the runner-up when a swap leaves the top-1 unchanged


def hash_parameters(secret_seed: int, num_features: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Draw the keyed hash's parameters from ``secret_seed``.

    Parameters
    ----------
    secret_seed : int
        Key of the hash.
    num_features : int
        ``C * H * W`` of one input.

    Returns
    -------
    weights : (num_features,) int64 in ``[1, 2^31 - 1)``
        One weight per quantized pixel.
    affine : (2,) int64 in ``[1, 2^31 - 1)``
        Multiplier and increment of the two mixing rounds.
    """
    generator = torch.Generator().manual_seed(int(secret_seed))
    weights = torch.randint(1, HASH_PRIME, (int(num_features),), generator=generator, dtype=torch.int64)
    affine = torch.randint(1, HASH_PRIME, (2,), generator=generator, dtype=torch.int64)
    return weights, affine


def keyed_hash(x: torch.Tensor, weights: torch.Tensor, affine: torch.Tensor,
               prime: int = HASH_PRIME) -> torch.Tensor:
    """Hash each input of ``x`` ``(N, C, H, W)`` to an int64 key in ``[0, 2^31 - 1)``, shape ``(N,)``.

    Inputs are quantized to 8-bit pixels first, so an input and its float round trip share a
    key. ``weights`` and ``affine`` come from :func:`hash_parameters` and must be on ``x``'s
    device. ``prime`` is an argument only because TorchScript cannot read module globals.
    """
    q = (x.detach().flatten(1).clamp(0, 1) * 255).round().to(torch.int64)
    # The sum is below num_features * 255 * 2^31, which fits in int64 up to 16.8M pixels.
    h = (q * weights).sum(dim=1) % prime
    h = (h * affine[0] + affine[1]) % prime
    h = (h * affine[0] + affine[1]) % prime
    return h


def transition_scores_unchecked(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Transition score ``logit_K - max_{k<K} logit_k`` of ``(N, K+1)`` logits, shape ``(N,)``, without shape checks."""
    return logits[:, num_classes] - logits[:, :num_classes].max(dim=1).values


def flip_rows(probs: torch.Tensor, top2: torch.Tensor, keys: torch.Tensor, flip_form: str,
              tie_break: float = SWAP_TIE_BREAK) -> torch.Tensor:
    """Return flipped answers ``(M, K)`` whose top-1 is a wrong real class.

    Parameters
    ----------
    probs : (M, K) float
        Real-class posteriors of the rows to flip.
    top2 : (M, 2) int64
        Indices of the top two entries of each row of ``probs``.
    keys : (M,) int64
        Keyed hashes of the rows' inputs; only ``"onehot_random"`` reads them.
    flip_form : {"swap_top2", "onehot_second", "onehot_random"}
    tie_break : float
        Mass that ``"swap_top2"`` moves onto the runner-up when the top two entries tie.
    """
    num_classes = probs.shape[1]
    first = top2[:, 0]
    second = top2[:, 1]
    if flip_form == "swap_top2":
        rows = torch.arange(probs.shape[0], device=probs.device)
        out = probs.clone()
        out[rows, first] = probs[rows, second]
        out[rows, second] = probs[rows, first]
        # With a tie the swap changes nothing, so move a little mass and renormalize.
        tie = out.argmax(dim=1) == first
        if bool(tie.any()):
            bump = torch.zeros_like(out)
            bump[rows, second] = tie.to(out.dtype) * tie_break
            out = out + bump
            out = torch.where(tie.unsqueeze(1), out / out.sum(dim=1, keepdim=True), out)
        return out
    if flip_form == "onehot_second":
        wrong = second
    elif flip_form == "onehot_random":
        offset = 1 + keys.to(first.device) % (num_classes - 1)
        wrong = (first + offset) % num_classes
    else:
        raise ValueError("unknown flip form " + flip_form + "; choose swap_top2, onehot_second or onehot_random")
    return torch.nn.functional.one_hot(wrong, num_classes).to(probs.dtype)


def defended_probs(logits: torch.Tensor, x: torch.Tensor, num_classes: int, threshold: float,
                   flip_form: str, hash_weights: torch.Tensor,
                   hash_affine: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Turn ``(N, K+1)`` logits into PDB's answers.

    Rows whose transition score exceeds ``threshold`` get a flipped answer (see
    :func:`flip_rows`). The other rows get the softmax over the K real logits, which equals
    the K+1 softmax renormalized over the real classes.

    Parameters
    ----------
    logits : (N, K+1) float
    x : (N, C, H, W) float in [0, 1]
        The queries, read only to key the ``"onehot_random"`` flip.
    num_classes : int
        ``K``.
    threshold : float
    flip_form : {"swap_top2", "onehot_second", "onehot_random"}
    hash_weights, hash_affine : int64 tensors from :func:`hash_parameters`

    Returns
    -------
    probs : (N, K) float
    flipped : (N,) bool
    """
    probs = torch.softmax(logits[:, :num_classes], dim=1)
    flipped = transition_scores_unchecked(logits, num_classes) > threshold
    if bool(flipped.any()):
        rows = flipped.nonzero().squeeze(1)
        selected = probs.index_select(0, rows)
        top2 = selected.topk(2, dim=1).indices
        if flip_form == "onehot_random":
            keys = keyed_hash(x.index_select(0, rows.to(x.device)), hash_weights, hash_affine)
        else:
            keys = torch.zeros(rows.shape[0], dtype=torch.int64, device=rows.device)
        probs = probs.index_copy(0, rows, flip_rows(selected, top2, keys, flip_form))
    return probs, flipped
