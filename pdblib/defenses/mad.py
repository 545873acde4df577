"""MAD prediction poisoning: perturb posteriors to turn an attacker's training gradient away.

Orekondy, Schiele, Fritz, "Prediction Poisoning: Towards Defenses Against DNN Model Stealing
Attacks", ICLR 2020.

An attacker who trains a clone ``F(x; w)`` on the answer ``y_hat`` with cross-entropy takes
the step ``a(y_hat) = sum_k y_hat_k * grad_w log F_k(x; w) = G^T y_hat``, where the rows of
``G`` ``(K, D)`` are the per-class gradients of the log-probabilities. MAD (maximizing angular
deviation) returns the ``y_hat`` within L1 distance ``epsilon`` of the true posterior ``y``
that maximizes the angular deviation ``2 - 2 cos(a(y_hat), a(y))``. The defender does not
know the attacker's model, so ``G`` comes from a surrogate model.

Closed form for a linear head. With ``w`` the last layer ``z = W h + b`` of the surrogate
(features ``h`` of size ``d``, posterior ``p = softmax(z)``), the row for class ``k`` is
``grad_W log p_k = (e_k - p) h^T`` and ``grad_b log p_k = e_k - p``. For ``y_hat`` on the
simplex, ``a(y_hat) = [(y_hat - p) h^T, y_hat - p]``, so every inner product between two such
vectors is ``(y_hat - p) . (y - p) * (||h||^2 + 1)``. The factor ``||h||^2 + 1`` cancels in the
cosine: ``cos(a(y_hat), a(y)) = cos(y_hat - p, y - p)``. The defense therefore evaluates the
objective on ``K``-vectors for a whole batch at once and never forms ``G``;
:func:`last_layer_log_prob_gradients` builds ``G`` explicitly for checking.

Solving the maximization. The candidate targets are the vertices ``e_k`` of the simplex (the
one-hot posteriors). The oracles pick a target vertex, then the answer moves from ``y`` toward
it: ``y_hat = (1 - alpha) y + alpha e_k``. The L1 distance along that
segment is exactly ``alpha * ||e_k - y||_1 = alpha * 2 (1 - y_k)``, linear in ``alpha``, so
the line search for the largest ``alpha`` within ``epsilon`` has the closed form
``alpha = min(1, epsilon / (2 (1 - y_k)))``. A convex combination of two points of the
simplex is on the simplex.

``"extreme"`` oracle
    The vertex with the largest objective, then the largest ``alpha`` within budget.
    NOTE: when the surrogate's posterior ``p`` is close to a vertex ``e_j``, the gradient
    ``e_j - p`` is tiny but points away from ``y``, so ``e_j`` scores near the maximum of 4,
    while the answer moved toward it deviates little. An untrained surrogate, the default,
    has posteriors far from the vertices.
``"argmax"`` oracle
    For every vertex, the largest ``alpha`` that stays within budget and keeps the top-1 of
    ``y``, then the candidate with the largest objective. Moving toward ``e_k`` with ``k``
    not the top-1 ``c`` keeps the top-1 while ``alpha <= (y_c - y_k) / (1 + y_c - y_k)``
    (a margin of ``1e-6`` is kept so that float rounding cannot create a tie).
"""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

from pdblib.defenses.base import Answer, Defense
from pdblib.training import predict_logits
from pdblib.utils import InputError, check_choice, make_generator

logger = logging.getLogger(__name__)

ORACLES = ("extreme", "argmax")
MAX_L1 = 2.0  # largest L1 distance between two points of the simplex
_TOP1_MARGIN = 1e-6
_NORM_FLOOR = 1e-12


def last_layer_log_prob_gradients(features: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Per-class gradients of ``log p_k`` with respect to a linear head's weight and bias.

    Parameters
    ----------
    features : (N, d) float
        The head's input ``h``.
    probs : (N, K) float
        ``softmax(W h + b)``.

    Returns
    -------
    (N, K, K * d + K) float
        Row ``k`` of sample ``n`` is ``[vec((e_k - p) h^T), e_k - p]``, the weight gradient
        flattened row-major like ``W.flatten()``, then the bias gradient.
    """
    n, k = probs.shape
    eye = torch.eye(k, dtype=probs.dtype, device=probs.device)
    delta = eye.unsqueeze(0) - probs.unsqueeze(1)  # (N, K, K): row k is e_k - p
    weight_grad = delta.unsqueeze(3) * features.unsqueeze(1).unsqueeze(2)  # (N, K, K, d)
    return torch.cat([weight_grad.reshape(n, k, -1), delta], dim=2)


def angular_deviation(y_hat: torch.Tensor, y: torch.Tensor, surrogate_probs: torch.Tensor) -> torch.Tensor:
    """MAD objective ``2 - 2 cos(G^T y_hat, G^T y)`` for a linear surrogate head.

    Uses the closed form ``cos(G^T y_hat, G^T y) = cos(y_hat - p, y - p)`` of the module notes.
    The arguments broadcast: ``y_hat`` may be ``(N, K)`` or ``(N, M, K)`` candidates against
    ``y`` and ``surrogate_probs`` of shape ``(N, K)``.

    Returns
    -------
    (N,) or (N, M) float
        In ``[0, 4]``. Where ``y == p`` or ``y_hat == p`` the gradient is zero, the cosine is
        taken as 0 and the objective is 2.
    """
    if y_hat.dim() == 3:
        y = y.unsqueeze(1)
        surrogate_probs = surrogate_probs.unsqueeze(1)
    u = y - surrogate_probs
    v = y_hat - surrogate_probs
    cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp_min(_NORM_FLOOR)
    return 2.0 - 2.0 * cos


def _budget_alpha(y: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Largest ``alpha`` in [0, 1] with ``alpha * 2 (1 - y_k) <= epsilon``, per class ``(N, K)``."""
    distance = 2.0 * (1.0 - y)  # L1 distance from y to each vertex e_k
    alpha = torch.full_like(y, 1.0)
    reachable = distance > epsilon
    alpha[reachable] = epsilon / distance[reachable]
    return alpha


def mad_perturb(y: torch.Tensor, surrogate_probs: torch.Tensor, epsilon: float,
                oracle: str = "extreme") -> torch.Tensor:
    """Return MAD's perturbed posteriors ``(N, K)`` for victim posteriors ``y``.

    Parameters
    ----------
    y : (N, K) float
        The victim's posterior.
    surrogate_probs : (N, K) float
        The surrogate's posterior ``p`` on the same inputs.
    epsilon : float
        L1 budget in ``[0, 2]``; ``||y_hat - y||_1 <= epsilon`` up to float rounding.
    oracle : {"extreme", "argmax"}

    Returns
    -------
    (N, K) float
        Rows on the simplex, in the dtype of ``y``. With ``"argmax"`` the top-1 of every row
        equals the top-1 of ``y``.
    """
    check_choice(oracle, ORACLES, what="MAD oracle")
    dtype = y.dtype
    y = y.double()
    p = surrogate_probs.double()
    n, k = y.shape
    eye = torch.eye(k, dtype=torch.float64, device=y.device)
    vertices = eye.unsqueeze(0).expand(n, k, k)  # (N, K, K): candidate k is e_k
    alpha = _budget_alpha(y, epsilon)

    if oracle == "extreme":
        target = angular_deviation(vertices, y, p).argmax(dim=1)  # (N,)
        a = alpha.gather(1, target[:, None])  # (N, 1)
        y_hat = (1.0 - a) * y + a * eye[target]
    else:
        top1 = y.argmax(dim=1)
        y_top = y.gather(1, top1[:, None])  # (N, 1)
        gap = y_top - y  # (N, K), 0 at the top-1 itself
        keep = ((gap - _TOP1_MARGIN) / (1.0 + gap)).clamp(0.0, 1.0)
        is_top = torch.nn.functional.one_hot(top1, k).bool()
        alpha = torch.where(is_top, alpha, torch.minimum(alpha, keep))
        candidates = (1.0 - alpha).unsqueeze(2) * y.unsqueeze(1) + alpha.unsqueeze(2) * vertices  # (N, K, K)
        best = angular_deviation(candidates, y, p).argmax(dim=1)
        y_hat = candidates[torch.arange(n), best]

    y_hat = y_hat.clamp_min(0.0)
    y_hat = y_hat / y_hat.sum(dim=1, keepdim=True)
    return y_hat.to(dtype)


def reinitialize(model: nn.Module, generator: torch.Generator) -> nn.Module:
    """Redraw the weights and biases of every ``nn.Linear`` and ``nn.Conv*`` in place.

    Each tensor is drawn from N(0, 1 / (3 fan_in)), which has the variance of PyTorch's default
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for these layers, from ``generator`` instead of the
    global RNG. The normal distribution is deliberate: uniform draws from a generator seeded
    with ``s`` reproduce exactly the default initialization after ``torch.manual_seed(s)``, so
    the "independent" copy would equal a victim initialized under the same seed. Other
    parameters are left unchanged.
    """
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                fan_in = module.weight[0].numel()
                std = 1.0 / math.sqrt(3.0 * fan_in)
                for param in (module.weight, module.bias):
                    if param is not None:
                        fresh = torch.randn(param.shape, generator=generator) * std
                        param.copy_(fresh.to(param))
    return model


class MAD(Defense):
    """MAD prediction poisoning.

    Orekondy, Schiele, Fritz, "Prediction Poisoning: Towards Defenses Against DNN Model
    Stealing Attacks", ICLR 2020.

    See the module notes for the objective, the closed-form gradients of a linear head, the
    two oracles and the line search.

    Parameters
    ----------
    model : nn.Module
        The victim, with K outputs.
    num_classes : int
        ``K``.
    epsilon : float
        L1 budget of the perturbation, in ``[0, 2]``; the strength knob, and 0 answers with
        the victim's posterior. Default 0.5: this package's choice, a mid-range budget; sweep
        it for a trade-off curve.
    oracle : {"extreme", "argmax"}
        Default ``"extreme"``, the unconstrained variant. ``"argmax"`` keeps the victim's
        top-1, so label-only attackers see the undefended labels.
    surrogate : nn.Module, optional
        Stand-in for the attacker's model: a classifier with a ``features`` method and an
        ``nn.Linear`` attribute ``head`` of K outputs. The defender does not know the
        attacker's model. Default: a copy of the victim's architecture with weights redrawn
        from ``surrogate_seed`` (:func:`reinitialize`) and left untrained, which is this
        package's choice of a model that shares nothing with the victim but its shape.
    surrogate_seed : int
        Seed of the default surrogate's weights; ignored when ``surrogate`` is given.
    """

    name = "mad"
    keeps_top1 = False
    deterministic = True

    def __init__(self, model: nn.Module, num_classes: int, *, epsilon: float = 0.5, oracle: str = "extreme",
                 surrogate: nn.Module | None = None, surrogate_seed: int = 0,
                 input_shape=(1, 28, 28), device: str | torch.device = "cpu"):
        super().__init__(num_classes, input_shape)
        if not (isinstance(epsilon, (int, float)) and 0.0 <= epsilon <= MAX_L1):
            raise InputError(f"epsilon must be an L1 budget in [0, {MAX_L1}], got {epsilon!r}")
        check_choice(oracle, ORACLES, what="MAD oracle")
        if surrogate is None:
            surrogate = reinitialize(copy.deepcopy(model), make_generator(surrogate_seed))
        head = getattr(surrogate, "head", None)
        if not isinstance(head, nn.Linear) or not hasattr(surrogate, "features"):
            raise InputError(
                "MAD needs a surrogate with a features() method and an nn.Linear attribute 'head', "
                f"got {type(surrogate).__name__}; build it with pdblib.models.build_model"
            )
        if head.out_features != num_classes:
            raise InputError(f"the surrogate has {head.out_features} outputs, expected K = {num_classes}")
        self.model = model.eval()
        self.surrogate = surrogate.eval()
        self.epsilon = float(epsilon)
        self.oracle = oracle
        self.keeps_top1 = oracle == "argmax"
        self.device = device

    def _answer(self, x: torch.Tensor) -> Answer:
        y = torch.softmax(predict_logits(self.model, x, device=self.device), dim=1)
        p = torch.softmax(predict_logits(self.surrogate, x, device=self.device), dim=1)
        out = mad_perturb(y, p, self.epsilon, self.oracle)
        labels = out.argmax(dim=1)
        return Answer(probs=out, labels=labels, flipped=labels != y.argmax(dim=1))

    def reference_labels(self, x: torch.Tensor) -> torch.Tensor:
        return predict_logits(self.model, x, device=self.device).argmax(dim=1)

    def config(self) -> dict:
        return {"name": self.name, "epsilon": self.epsilon, "oracle": self.oracle}
