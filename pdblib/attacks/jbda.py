"""Jacobian-based dataset augmentation (JBDA) and its JB-self and JB-top-k variants.

N. Papernot, P. McDaniel, I. Goodfellow, S. Jha, Z. B. Celik, A. Swami, "Practical Black-Box
Attacks against Machine Learning", AsiaCCS 2017. The attacker starts from a small seed set,
labels it through the oracle and trains a substitute. Each later round adds one new point per
existing point,

    x' = clip(x + lambda * sign(d F_c(x) / dx), 0, 1),

where ``F_c`` is the substitute's softmax probability of class ``c`` and ``c`` the oracle's
label of ``x``. The oracle labels the new points and the substitute is retrained on
everything so far, so the set doubles each round. The variants come from T. Orekondy,
B. Schiele, M. Fritz, "Prediction Poisoning: Towards Defenses Against DNN Model Stealing
Attacks", ICLR 2020: JB-self takes ``c`` from the substitute's own prediction, and JB-top-k
steps toward one of the substitute's top-k classes.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from pdblib.attacks.base import Attack, TransferSet, query_in_batches, to_labels
from pdblib.attacks.oracle import QueryOracle
from pdblib.utils import InputError, make_generator, validate_images

logger = logging.getLogger(__name__)


def jacobian_step(model: nn.Module, x: torch.Tensor, classes: torch.Tensor, step: float, *,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Return ``clip(x + step * sign(d softmax(model(x))_c / dx), 0, 1)`` for each row.

    Parameters
    ----------
    model : nn.Module
        The substitute, evaluated in eval mode; its parameters get no gradient.
    x : (N, C, H, W) float
        Points in [0, 1].
    classes : (N,) int64
        Class ``c`` of each row whose probability the step increases (``step > 0``).
    step : float
        ``lambda``; a negative value steps against the gradient.

    Returns
    -------
    (N, C, H, W) float
        New points in [0, 1]; a pixel with a zero gradient is unchanged.
    """
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(x), 512):
        xb = x[start:start + 512].to(device).detach().requires_grad_(True)
        cb = classes[start:start + 512].to(device)
        probs = torch.softmax(model(xb), dim=1)
        picked = probs.gather(1, cb[:, None]).sum()  # rows are independent, so one backward gives every row
        (grad,) = torch.autograd.grad(picked, xb)
        out.append((xb.detach() + step * grad.sign()).clamp(0, 1).cpu())
    model.train(was_training)
    return torch.cat(out)


class JBDA(Attack):
    """Jacobian-based dataset augmentation (Papernot et al., AsiaCCS 2017).

    Round 0 queries a seed set of ``seed_size`` pool images drawn at random. Each later round
    trains a fresh substitute on all points queried so far, adds one Jacobian step per point
    and queries the new points. The attack stops after ``rounds`` rounds or when the budget
    is spent, whichever comes first. In a round that does not fit, only the first new points
    (in the order of their parents) are queried. The base class then trains one clone per
    requested budget on the first ``b`` queries, which are exactly the queries a run with
    budget ``b`` would send.

    Parameters
    ----------
    seed_size : int
        Seed set size; default 150, the paper's MNIST seed set (public code uses 100-150).
    step : float
        ``lambda``, the L-infinity size of each augmentation step; default 0.1 (the paper).
    rounds : int or None
        Substitute training rounds including the seed round; default 6 (the paper), which
        queries ``seed_size * 2**(rounds - 1)`` points (4,800 with the defaults). ``None``
        keeps augmenting until the budget is spent.
    query_batch_size : int
        Queries per oracle call; default 256.
    **kwargs
        Passed to :class:`~pdblib.attacks.base.Attack`; the substitute of every round uses
        the clone model and clone training.

    Notes
    -----
    The substitute is retrained from a fresh initialization each round (seeded per round).
    This is a choice of this package; the paper writes "train F on S_rho" without saying
    whether training restarts. With a posterior oracle the substitute trains on the
    posteriors and ``c`` is their top-1; with a label oracle ``c`` is the label.
    """

    name = "jbda"

    def __init__(self, *, seed_size: int = 150, step: float = 0.1, rounds: int | None = 6,
                 query_batch_size: int = 256, **kwargs):
        super().__init__(**kwargs)
        if seed_size < 1:
            raise InputError(f"seed_size must be at least 1, got {seed_size}")
        if not 0 < step <= 1:
            raise InputError(f"step must be in (0, 1], got {step}")
        if rounds is not None and rounds < 1:
            raise InputError(f"rounds must be at least 1 or None, got {rounds}")
        if query_batch_size < 1:
            raise InputError(f"query_batch_size must be at least 1, got {query_batch_size}")
        self.seed_size = seed_size
        self.step = step
        self.rounds = rounds
        self.query_batch_size = query_batch_size

    def augment(self, substitute: nn.Module, x: torch.Tensor, y: torch.Tensor, round_index: int,
                generator: torch.Generator) -> torch.Tensor:
        """One new point per row of ``x`` ``(N, C, H, W)``, given the oracle's answers ``y``."""
        return jacobian_step(substitute, x, to_labels(y), self.step, device=self.device)

    def collect(self, oracle: QueryOracle, pool: torch.Tensor, budget: int) -> TransferSet:
        validate_images(pool, name="pool")
        generator = make_generator(self.seed)
        seed_size = min(self.seed_size, len(pool), budget)
        if seed_size < self.seed_size:
            logger.info("%s: seed set of %d images (pool %d, budget %d)", self.name, seed_size, len(pool), budget)
        seeds = pool[torch.randperm(len(pool), generator=generator)[:seed_size]]
        x, y = query_in_batches(oracle, seeds, self.query_batch_size, desc=f"{self.name} seeds")

        round_index = 1
        while (self.rounds is None or round_index < self.rounds) and len(x) < budget and oracle.remaining > 0:
            substitute, _ = self.train_clone(x, y, oracle.num_classes, seed_offset=1000 + round_index,
                                             desc=f"{self.name} substitute round {round_index}")
            candidates = self.augment(substitute, x, y, round_index, generator)[: budget - len(x)]
            new_x, new_y = query_in_batches(oracle, candidates, self.query_batch_size,
                                            desc=f"{self.name} round {round_index}")
            x, y = torch.cat([x, new_x]), torch.cat([y, new_y])
            logger.info("%s round %d: %d points queried in total", self.name, round_index, len(x))
            round_index += 1
        if len(x) < budget:
            logger.info("%s stopped after %d rounds with %d of %d queries spent", self.name, round_index,
                        len(x), budget)
        return TransferSet(x=x, y=y)

    def config(self) -> dict:
        return {**super().config(), "seed_size": self.seed_size, "step": self.step, "rounds": self.rounds}


class JBSelf(JBDA):
    """JB-self: JBDA with the Jacobian of the substitute's own top-1 class.

    Orekondy et al., "Prediction Poisoning: Towards Defenses Against DNN Model Stealing
    Attacks", ICLR 2020, list it as a JBDA variant. ``c`` in the augmentation step is the
    substitute's prediction instead of the oracle's answer, so the augmentation does not
    depend on answers the defense may have perturbed. Knobs and defaults as :class:`JBDA`.
    """

    name = "jb_self"

    def augment(self, substitute, x, y, round_index, generator):
        with torch.no_grad():
            substitute.eval()
            own = torch.cat([substitute(x[i:i + 512].to(self.device)).argmax(dim=1).cpu()
                             for i in range(0, len(x), 512)])
        return jacobian_step(substitute, x, own, self.step, device=self.device)


class JBTopK(JBDA):
    """JB-top-k: JBDA that steps each point toward one of the substitute's top-k classes.

    Orekondy et al., "Prediction Poisoning: Towards Defenses Against DNN Model Stealing
    Attacks", ICLR 2020, evaluate it with k = 3 (JB-top3). For each point the target class is
    drawn uniformly (seeded) from the substitute's ``top_k`` highest-scoring classes other
    than the oracle's top-1, and the step increases its probability, so new points move
    toward a neighbouring decision boundary. Excluding the oracle's class is this package's
    reading: stepping toward the class the point already has would move it away from every
    boundary.

    Parameters
    ----------
    top_k : int
        Number of candidate target classes; default 3 (JB-top3). Must be below ``K``.
    **kwargs
        As :class:`JBDA`.
    """

    name = "jb_topk"

    def __init__(self, *, top_k: int = 3, **kwargs):
        super().__init__(**kwargs)
        if top_k < 1:
            raise InputError(f"top_k must be at least 1, got {top_k}")
        self.top_k = top_k

    def check_run(self, oracle, pool, budgets):
        budgets = super().check_run(oracle, pool, budgets)
        if self.top_k > oracle.num_classes - 1:
            raise InputError(f"top_k must be at most K - 1 = {oracle.num_classes - 1} for this oracle, "
                             f"got {self.top_k}")
        return budgets

    def target_classes(self, scores: torch.Tensor, answered: torch.Tensor,
                       generator: torch.Generator) -> torch.Tensor:
        """Draw a target ``(N,)`` per row from the top-k classes of ``scores`` ``(N, K)`` other than ``answered``."""
        k = scores.shape[1]
        if self.top_k > k - 1:
            raise InputError(f"top_k must be at most K - 1 = {k - 1} for {k} classes, got {self.top_k}")
        masked = scores.clone()
        masked[torch.arange(len(scores)), answered] = float("-inf")
        candidates = masked.topk(self.top_k, dim=1).indices
        pick = torch.randint(self.top_k, (len(scores),), generator=generator)
        return candidates[torch.arange(len(scores)), pick]

    def augment(self, substitute, x, y, round_index, generator):
        with torch.no_grad():
            substitute.eval()
            scores = torch.cat([substitute(x[i:i + 512].to(self.device)).float().cpu()
                                for i in range(0, len(x), 512)])
        targets = self.target_classes(scores, to_labels(y), generator)
        return jacobian_step(substitute, x, targets, self.step, device=self.device)

    def config(self) -> dict:
        return {**super().config(), "top_k": self.top_k}
