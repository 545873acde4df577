"""ActiveThief: model extraction with pool-based active learning.

S. Pal, Y. Gupta, A. Shukla, A. Kanade, S. Shevade, V. Ganapathy, "ActiveThief: Model
Extraction Using Active Learning and Unannotated Public Data", AAAI 2020.

The attacker labels a random seed set drawn from an unannotated pool, then repeats rounds:
train a substitute on everything labelled so far, rank the unqueried pool images with a
selection strategy, and query the best ones. The selection strategies are:

``"random"``
    A uniformly random subset (the paper's baseline).
``"uncertainty"``
    Highest entropy of the substitute's posterior first.
``"kcenter"``
    Greedy core-set selection (O. Sener, S. Savarese, "Active Learning for Convolutional
    Neural Networks: A Core-Set Approach", ICLR 2018): repeatedly pick the pool image whose
    distance to the nearest labelled or already picked image is largest.
``"dfal"``
    DeepFool-based active learning (M. Ducoffe, F. Precioso, "Adversarial Active Learning for
    Deep Networks: a Margin Based Approach", arXiv:1802.09841, 2018): smallest DeepFool
    perturbation that flips the substitute's prediction first. This package uses the ranking
    only: the adversarial images themselves are never queried.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn
from tqdm import tqdm

from pdblib.attacks.base import Attack, AttackResult, TransferSet
from pdblib.attacks.oracle import BudgetExhaustedError, QueryOracle
from pdblib.training import predict_logits
from pdblib.utils import InputError, check_choice, check_range, make_generator, validate_images

logger = logging.getLogger(__name__)

SELECTIONS = ("random", "uncertainty", "kcenter", "dfal")
KCENTER_SPACES = ("probs", "features")


def round_schedule(budget: int, seed_fraction: float, rounds: int) -> list[int]:
    """Return the cumulative number of labelled images after the seed set and after each round.

    The seed set has ``max(1, round(seed_fraction * budget))`` images; the rest of the budget
    is split into ``rounds`` steps whose sizes differ by at most one. Fewer steps remain when
    the rest is smaller than ``rounds``. The last entry is always ``budget``.
    """
    if budget < 1:
        raise InputError(f"budget must be at least 1, got {budget}")
    seed_size = min(budget, max(1, round(seed_fraction * budget)))
    rest = budget - seed_size
    schedule = [seed_size]
    for i in range(1, rounds + 1):
        count = seed_size + (i * rest) // rounds
        if count > schedule[-1]:
            schedule.append(count)
    return schedule


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats of each row of ``(N, K)`` posteriors, shape ``(N,)``."""
    return torch.special.entr(probs.clamp_min(0.0)).sum(dim=1)


def select_uncertainty(probs: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``(n,)`` of the ``n`` rows of ``probs`` ``(N, K)`` with the highest entropy, highest first.

    Ties keep the lower index first.
    """
    _check_count(n, len(probs))
    order = torch.argsort(entropy(probs), descending=True, stable=True)
    return order[:n]


def select_kcenter(candidates: torch.Tensor, centers: torch.Tensor, n: int, *,
                   chunk_size: int = 1024) -> torch.Tensor:
    """Pick ``n`` candidates greedily by the k-center rule, in the order they are picked.

    Each step picks the candidate whose Euclidean distance to its nearest center is largest,
    then adds it to the centers. Ties go to the lowest index.

    Parameters
    ----------
    candidates : (N, d) float
        Embeddings of the unlabelled pool images.
    centers : (M, d) float
        Embeddings of the labelled images, ``M >= 1``.
    n : int
        Number of candidates to pick, ``1 <= n <= N``.
    chunk_size : int
        Centers per distance block, which bounds memory at ``N * chunk_size`` floats.

    Returns
    -------
    torch.Tensor
        ``(n,)`` int64 indices into ``candidates``, all distinct.
    """
    _check_count(n, len(candidates))
    if centers.dim() != 2 or len(centers) == 0:
        raise InputError(f"centers must be a non-empty (M, d) tensor, got shape {tuple(centers.shape)}")
    if candidates.dim() != 2 or candidates.shape[1] != centers.shape[1]:
        raise InputError(f"candidates must have shape (N, {centers.shape[1]}), got {tuple(candidates.shape)}")
    candidates = candidates.double()
    nearest = torch.full((len(candidates),), math.inf, dtype=torch.float64)
    for start in range(0, len(centers), chunk_size):
        block = torch.cdist(candidates, centers[start:start + chunk_size].double())  # (N, chunk)
        nearest = torch.minimum(nearest, block.min(dim=1).values)
    picked = torch.empty(n, dtype=torch.int64)
    for step in range(n):
        index = int(torch.argmax(nearest))
        picked[step] = index
        distance_to_new = torch.linalg.vector_norm(candidates - candidates[index], dim=1)
        nearest = torch.minimum(nearest, distance_to_new)
        nearest[index] = -math.inf  # a picked candidate is never picked again, even among duplicates
    return picked


def deepfool_distances(model: nn.Module, x: torch.Tensor, *, steps: int = 50, overshoot: float = 0.02,
                       batch_size: int = 256, device: str | torch.device = "cpu") -> torch.Tensor:
    """L2 norm of the DeepFool perturbation that flips ``model``'s prediction, per image.

    Multi-class DeepFool (S.-M. Moosavi-Dezfooli, A. Fawzi, P. Frossard, "DeepFool: a simple
    and accurate method to fool deep neural networks", CVPR 2016): each step linearizes the
    logits and moves to the nearest linearized class boundary; the accumulated step is scaled
    by ``1 + overshoot``. The perturbed image is not clipped to [0, 1], because the distance
    only ranks images and is never sent as a query. For an affine two-class model the result
    is ``(1 + overshoot) * (|f_1 - f_0| + 1e-4) / ||w_1 - w_0||``.

    Parameters
    ----------
    model : nn.Module
        Classifier returning ``(N, K)`` logits; evaluated in eval mode, and its mode is restored.
    x : (N, C, H, W) float
    steps : int
        Maximum DeepFool steps per image.
    overshoot : float
        Relative overshoot past the linearized boundary.

    Returns
    -------
    torch.Tensor
        ``(N,)`` float distances; ``inf`` for images whose prediction did not flip within ``steps``.
    """
    was_training = model.training
    model.eval()
    distances = torch.full((len(x),), math.inf)
    try:
        for start in range(0, len(x), batch_size):
            chunk = x[start:start + batch_size].to(device)
            distances[start:start + len(chunk)] = _deepfool_batch(model, chunk, steps, overshoot).cpu()
    finally:
        model.train(was_training)
    return distances


def _deepfool_batch(model: nn.Module, x0: torch.Tensor, steps: int, overshoot: float) -> torch.Tensor:
    n = len(x0)
    with torch.no_grad():
        label = model(x0).argmax(dim=1)
    total = torch.zeros_like(x0)
    distances = torch.full((n,), math.inf, device=x0.device)
    active = torch.ones(n, dtype=torch.bool, device=x0.device)
    rows = torch.arange(n, device=x0.device)
    for step in range(steps + 1):
        perturbation = (1.0 + overshoot) * total
        x_adv = (x0 + perturbation).requires_grad_(True)
        logits = model(x_adv)
        flipped = active & (logits.detach().argmax(dim=1) != label)
        distances[flipped] = torch.linalg.vector_norm(perturbation[flipped].flatten(1), dim=1)
        active &= ~flipped
        if step == steps or not active.any():
            break
        # Per-image gradients by summing over the batch: valid because the models have no
        # batch-coupled layers (no batch normalization) and run in eval mode.
        grads = torch.stack([
            torch.autograd.grad(logits[:, k].sum(), x_adv, retain_graph=k < logits.shape[1] - 1)[0].flatten(1)
            for k in range(logits.shape[1])
        ], dim=1)  # (n, K, D)
        logits = logits.detach()
        f = logits - logits[rows, label].unsqueeze(1)  # (n, K), <= 0 while unflipped
        w = grads - grads[rows, label].unsqueeze(1)  # (n, K, D)
        w_norm = torch.linalg.vector_norm(w, dim=2).clamp_min(1e-12)
        ratio = f.abs() / w_norm
        ratio[rows, label] = math.inf
        nearest = ratio.argmin(dim=1)
        f_l = f[rows, nearest].abs()
        w_l = w[rows, nearest]
        step_size = (f_l + 1e-4) / w_norm[rows, nearest] ** 2
        update = (step_size.unsqueeze(1) * w_l).view_as(x0)
        total = total + update * active.view(-1, *([1] * (x0.dim() - 1)))
    return distances


def select_dfal(distances: torch.Tensor, n: int) -> torch.Tensor:
    """Indices ``(n,)`` of the ``n`` smallest DeepFool distances, smallest first; ties keep the lower index."""
    _check_count(n, len(distances))
    return torch.argsort(distances, stable=True)[:n]


def _check_count(n: int, available: int) -> None:
    if not 1 <= n <= available:
        raise InputError(f"cannot select {n} of {available} candidates; n must be in [1, {available}]")


class ActiveThief(Attack):
    """ActiveThief (Pal et al., AAAI 2020) with a choice of selection strategy.

    The query sequence depends only on ``max(budgets)``: round sizes come from
    :func:`round_schedule`, and each round queries its picks in rank order, so the clone at an
    intermediate budget ``b`` is trained on the first ``b`` queries, the best-ranked part of a
    round when ``b`` falls inside one. A substitute trained at a round boundary equal to a
    requested budget is reused as that budget's clone. Every model, substitute or clone, is
    trained from scratch with ``clone_train`` on all images labelled so far, as in the paper,
    and seeded by ``seed`` plus its number of training images.

    Parameters
    ----------
    selection : {"random", "uncertainty", "kcenter", "dfal"}
        Ranking of unqueried pool images; default ``"uncertainty"``, this package's choice as
        the cheapest informed strategy.
    seed_fraction : float
        Share of the budget spent on the random seed set, in (0, 1). Default 0.1, the paper's
        initial seed set of 10% of the budget.
    rounds : int
        Selection rounds after the seed set. Default 10, the paper's number of iterations.
    kcenter_space : {"probs", "features"}
        Embedding for k-center: the substitute's ``(N, K)`` posteriors (the paper's choice,
        the default) or its penultimate ``features(x)``.
    deepfool_steps : int
        Maximum DeepFool steps for ``"dfal"``. Default 50, this package's choice, because
        DeepFool usually flips a prediction within a few steps.
    deepfool_overshoot : float
        DeepFool overshoot, >= 0. Default 0.02, the DeepFool paper's value.
    max_candidates : int or None
        Rank only a random subset of this many unqueried images per round; ``None`` (default)
        ranks the whole remaining pool. This package's knob for large pools, because DFAL costs
        ``K`` backward passes per DeepFool step on every candidate.
    query_batch_size : int
        Queries per oracle call.
    **kwargs
        Passed to :class:`~pdblib.attacks.base.Attack`: clone model and training (for the
        substitute and every clone), seed, device, progress.

    Notes
    -----
    The paper also holds out 20% of the budget as a validation set for early stopping of the
    substitute. This package trains for the fixed ``clone_train.epochs`` instead, so the whole
    budget goes to training data. Each pool image is queried at most once, so the pool must
    hold at least ``max(budgets)`` images.

    NOTE: the defaults attributed to the paper follow the module author's reading of it and were
    not re-checked against its text here.
    """

    name = "activethief"
    supported_outputs = ("probs", "labels")
    needs_pool = True

    def __init__(self, *, selection: str = "uncertainty", seed_fraction: float = 0.1, rounds: int = 10,
                 kcenter_space: str = "probs", deepfool_steps: int = 50, deepfool_overshoot: float = 0.02,
                 max_candidates: int | None = None, query_batch_size: int = 256, **kwargs):
        super().__init__(**kwargs)
        check_choice(selection, SELECTIONS, what="ActiveThief selection")
        check_choice(kcenter_space, KCENTER_SPACES, what="k-center embedding space")
        check_range(seed_fraction, 0.0, 1.0, name="seed_fraction", low_inclusive=False, high_inclusive=False)
        if not isinstance(rounds, int) or rounds < 1:
            raise InputError(f"rounds must be an int >= 1, got {rounds!r}")
        if not isinstance(deepfool_steps, int) or deepfool_steps < 1:
            raise InputError(f"deepfool_steps must be an int >= 1, got {deepfool_steps!r}")
        if not deepfool_overshoot >= 0:
            raise InputError(f"deepfool_overshoot must be >= 0, got {deepfool_overshoot!r}")
        if max_candidates is not None and (not isinstance(max_candidates, int) or max_candidates < 1):
            raise InputError(f"max_candidates must be None or an int >= 1, got {max_candidates!r}")
        if not isinstance(query_batch_size, int) or query_batch_size < 1:
            raise InputError(f"query_batch_size must be an int >= 1, got {query_batch_size!r}")
        self.selection = selection
        self.seed_fraction = float(seed_fraction)
        self.rounds = rounds
        self.kcenter_space = kcenter_space
        self.deepfool_steps = deepfool_steps
        self.deepfool_overshoot = float(deepfool_overshoot)
        self.max_candidates = max_candidates
        self.query_batch_size = query_batch_size

    def collect(self, oracle: QueryOracle, pool: torch.Tensor, budget: int) -> TransferSet:
        """Run the seed set and all selection rounds for ``budget`` queries; return them in query order."""
        transfer, _ = self._collect_rounds(oracle, pool, budget, keep=set())
        return transfer

    def run(self, oracle: QueryOracle, pool: torch.Tensor, budgets: list[int]) -> AttackResult:
        """Query up to ``max(budgets)`` in rounds and return a clone for every budget.

        Raises
        ------
        InputError
            On invalid budgets, an unsupported oracle output, or a pool smaller than ``max(budgets)``.
        """
        budgets = self.check_run(oracle, pool, budgets)
        start_used = oracle.used
        transfer, substitutes = self._collect_rounds(oracle, pool, budgets[-1], keep=set(budgets))
        result = AttackResult(queries_used=oracle.used - start_used, transfer=transfer)
        for budget in budgets:
            if budget in substitutes:
                clone, records = substitutes[budget]
            else:
                clone, records = self.train_clone(transfer.x[:budget], transfer.y[:budget], oracle.num_classes,
                                                  seed_offset=budget, desc=f"{self.name} clone @{budget}")
            result.clones[budget] = clone
            result.history[budget] = records
        return result

    def _collect_rounds(self, oracle: QueryOracle, pool: torch.Tensor, budget: int,
                        keep: set[int]) -> tuple[TransferSet, dict[int, tuple[nn.Module, list]]]:
        defense = getattr(oracle, "defense", None)  # a HardLabelView wraps the oracle and has none
        if defense is None:
            validate_images(pool, name="pool")
        else:
            validate_images(pool, name="pool", channels=defense.input_shape[0], image_size=defense.input_shape[1:])
        if budget > oracle.remaining:
            raise InputError(f"budget {budget} exceeds the oracle's remaining {oracle.remaining} queries")
        if len(pool) < budget:
            raise InputError(
                f"ActiveThief queries each pool image at most once, but the pool has {len(pool)} images "
                f"for a budget of {budget}; pass a pool of at least {budget} images"
            )
        generator = make_generator(self.seed)
        schedule = round_schedule(budget, self.seed_fraction, self.rounds)
        labelled = torch.randperm(len(pool), generator=generator)[: schedule[0]]
        answers = [self._query(oracle, pool[labelled])]
        substitutes: dict[int, tuple[nn.Module, list]] = {}
        logger.info("%s: seed set of %d, then %d rounds up to %d queries", self.name, schedule[0],
                    len(schedule) - 1, budget)

        for target in schedule[1:]:
            count = len(labelled)
            substitute, records = self.train_clone(pool[labelled], torch.cat(answers), oracle.num_classes,
                                                   seed_offset=count, desc=f"{self.name} substitute @{count}")
            if count in keep:
                substitutes[count] = (substitute, records)
            unlabelled = _complement(labelled, len(pool))
            if self.max_candidates is not None and len(unlabelled) > self.max_candidates:
                subset = torch.randperm(len(unlabelled), generator=generator)[: self.max_candidates]
                unlabelled = unlabelled[torch.sort(subset).values]
            picks = self.rank(substitute, pool, labelled, unlabelled, target - count, generator)
            new = unlabelled[picks]
            answers.append(self._query(oracle, pool[new]))
            labelled = torch.cat([labelled, new])

        return TransferSet(x=pool[labelled], y=torch.cat(answers)), substitutes

    def rank(self, substitute: nn.Module, pool: torch.Tensor, labelled: torch.Tensor, unlabelled: torch.Tensor,
             n: int, generator: torch.Generator) -> torch.Tensor:
        """Pick ``n`` of the ``unlabelled`` pool indices, best first.

        Returns
        -------
        torch.Tensor
            ``(n,)`` distinct int64 positions into ``unlabelled`` (not into ``pool``).
        """
        if self.selection == "random":
            _check_count(n, len(unlabelled))
            return torch.randperm(len(unlabelled), generator=generator)[:n]
        if self.selection == "uncertainty":
            return select_uncertainty(self._probs(substitute, pool[unlabelled]), n)
        if self.selection == "kcenter":
            embed = self._probs if self.kcenter_space == "probs" else self._features
            return select_kcenter(embed(substitute, pool[unlabelled]), embed(substitute, pool[labelled]), n)
        distances = deepfool_distances(substitute, pool[unlabelled], steps=self.deepfool_steps,
                                       overshoot=self.deepfool_overshoot, device=self.device)
        return select_dfal(distances, n)

    def _probs(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(predict_logits(model, x, device=self.device), dim=1)

    def _features(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not hasattr(model, "features"):
            raise InputError(f"kcenter_space='features' needs a clone model with a features() method; "
                             f"{type(model).__name__} has none, so use kcenter_space='probs'")
        model.eval()
        with torch.inference_mode():
            return torch.cat([model.features(x[i:i + 1024].to(self.device)).float().cpu()
                              for i in range(0, len(x), 1024)])

    def _query(self, oracle: QueryOracle, x: torch.Tensor) -> torch.Tensor:
        answers = []
        for start in tqdm(range(0, len(x), self.query_batch_size), desc=f"{self.name} queries",
                          disable=not self.progress, leave=False, mininterval=5.0):
            batch = x[start:start + self.query_batch_size]
            if len(batch) > oracle.remaining:
                raise BudgetExhaustedError(f"{self.name} would send {len(batch)} queries with only "
                                           f"{oracle.remaining} left in the oracle's budget")
            answers.append(oracle.query(batch))
        return torch.cat(answers)

    def config(self) -> dict:
        return {**super().config(), "selection": self.selection, "seed_fraction": self.seed_fraction,
                "rounds": self.rounds, "kcenter_space": self.kcenter_space,
                "deepfool_steps": self.deepfool_steps, "deepfool_overshoot": self.deepfool_overshoot,
                "max_candidates": self.max_candidates, "query_batch_size": self.query_batch_size}


def _complement(indices: torch.Tensor, size: int) -> torch.Tensor:
    mask = torch.ones(size, dtype=torch.bool)
    mask[indices] = False
    return mask.nonzero(as_tuple=True)[0]


class _FixedSelection(ActiveThief):
    """ActiveThief with the selection strategy fixed by the registry name."""

    fixed_selection = "random"

    def __init__(self, **kwargs):
        selection = kwargs.pop("selection", self.fixed_selection)
        if selection != self.fixed_selection:
            raise InputError(f"{self.name} always uses selection {self.fixed_selection!r}, got {selection!r}; "
                             f"use ActiveThief(selection={selection!r}) or activethief_{selection}")
        super().__init__(selection=self.fixed_selection, **kwargs)


class ActiveThiefRandom(_FixedSelection):
    """ActiveThief with random selection; knobs as :class:`ActiveThief`."""

    name = "activethief_random"
    fixed_selection = "random"


class ActiveThiefUncertainty(_FixedSelection):
    """ActiveThief with entropy (uncertainty) selection; knobs as :class:`ActiveThief`."""

    name = "activethief_uncertainty"
    fixed_selection = "uncertainty"


class ActiveThiefKCenter(_FixedSelection):
    """ActiveThief with greedy k-center (core-set) selection; knobs as :class:`ActiveThief`."""

    name = "activethief_kcenter"
    fixed_selection = "kcenter"


class ActiveThiefDFAL(_FixedSelection):
    """ActiveThief with DeepFool-based (DFAL) selection; knobs as :class:`ActiveThief`."""

    name = "activethief_dfal"
    fixed_selection = "dfal"
