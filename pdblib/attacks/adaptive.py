"""Adaptive attacks aimed at PDB's flipped answers.

PDB answers a query inside its transition region with a wrong top-1 class (a flip) and keys
the flip on the input, so repeating a query returns the same wrong answer. Three attackers
that know this are implemented here, each on top of Knockoff random sampling from a natural
pool (T. Orekondy, B. Schiele, M. Fritz, "Knockoff Nets: Stealing Functionality of Black-Box
Models", CVPR 2019):

- :class:`HardLabelKnockoff` keeps only the top-1 label of each answer, so a defense that
  perturbs posteriors while keeping the top-1 (or PDB's ``swap_top2`` flips, which reveal the
  runner-up) gives it no soft information, and it sees only whether the label is right;
- :class:`AveragingAttack` queries each pool image ``repeats`` times as jittered copies and
  averages the answers, so a flip that changes between copies is outvoted;
- :class:`FlipAwareAttack` trains a probe clone on part of the answers and drops answers whose
  top-1 the probe finds implausible before training the final clone.

These attacks are this package's designs for evaluating PDB; the knobs and their defaults are
its choices and are documented on each class.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from pdblib.attacks.base import AttackResult, HardLabelView, TransferSet, query_in_batches, to_labels
from pdblib.attacks.knockoff import KnockoffRandom, random_shift
from pdblib.attacks.oracle import QueryOracle
from pdblib.training import predict_logits
from pdblib.utils import InputError, check_choice, make_generator

logger = logging.getLogger(__name__)

LABEL_TARGETS = ("majority", "votes")


class HardLabelKnockoff(KnockoffRandom):
    """Knockoff random sampling that trains on top-1 labels only.

    Accepts both oracle outputs. With a posterior oracle each answer is reduced to its top-1
    label through :class:`~pdblib.attacks.base.HardLabelView`, which any other attack can use
    the same way (``attack.run(HardLabelView(oracle), pool, budgets)``). Knobs and defaults as
    :class:`KnockoffRandom`.
    """

    name = "knockoff_hard"

    def run(self, oracle: QueryOracle, pool: torch.Tensor, budgets: list[int]) -> AttackResult:
        """Run :meth:`KnockoffRandom.run` with every answer reduced to its top-1 label."""
        return super().run(HardLabelView(oracle), pool, budgets)


def aggregate_answers(answers: torch.Tensor, repeats: int, num_classes: int, *,
                      label_target: str = "majority") -> torch.Tensor:
    """Aggregate the answers of consecutive groups of ``repeats`` copies into one target each.

    Parameters
    ----------
    answers : (M * repeats, K) float or (M * repeats,) int64
        Answers in query order, the copies of one image contiguous.
    label_target : {"majority", "votes"}
        For label answers: the most frequent label of each group (ties go to the lowest class
        index), or the vote fractions as a soft target ``(M, K)``.

    Returns
    -------
    (M, K) float or (M,) int64
        The mean posterior of each group, or the label target.
    """
    if len(answers) % repeats:
        raise InputError(f"{len(answers)} answers do not split into groups of {repeats}")
    if answers.dim() == 2:
        return answers.reshape(-1, repeats, answers.shape[1]).mean(dim=1)
    votes = F.one_hot(answers.reshape(-1, repeats), num_classes).float().mean(dim=1)  # (M, K)
    if label_target == "votes":
        return votes
    return votes.argmax(dim=1)  # argmax returns the first maximum, the lowest class index


class AveragingAttack(KnockoffRandom):
    """Query each pool image several times as jittered copies and average the answers.

    Every copy is a separate query and counts against the budget, so a budget ``B`` buys
    ``B // repeats`` averaged answers. The remaining ``B % repeats`` queries are not spent.
    The transfer set records the queries spent per entry, so the clone at budget ``b`` trains
    on the ``b // repeats`` answers paid for within ``b``. The clone trains on the original
    (unjittered) image with the aggregated target.

    PDB keys its flip on the input quantized to 8-bit pixels, so only copies that differ after
    quantization can receive different flips: Gaussian noise with a standard deviation well
    above 1/255 and pixel shifts both change the key. An input inside the transition region
    usually stays there under small jitter, so with ``onehot_random`` flips the copies get
    random wrong classes and the true class is the one that never appears; averaging does not
    recover it, which is what this attack measures.

    Parameters
    ----------
    repeats : int
        Copies per pool image, ``n``; default 5, this package's choice (an odd count avoids
        ties between two labels in a majority vote).
    jitter_pixels : int
        Maximum shift of each copy in pixels; default 1, this package's choice (small enough
        to keep a 28x28 digit recognizable).
    noise_std : float
        Standard deviation of the Gaussian noise added to each copy before clipping to [0, 1];
        default 0.02, this package's choice (about five 8-bit steps, so copies get distinct
        flip keys).
    include_original : bool
        Send the unjittered image as the first copy; default True.
    label_target : {"majority", "votes"}
        Aggregation of label answers, see :func:`aggregate_answers`; default "majority".
        Posterior answers are always averaged.
    **kwargs
        Passed to :class:`KnockoffRandom` (``query_batch_size``; its ``jitter_pixels`` is this
        class's) and :class:`~pdblib.attacks.base.Attack`.
    """

    name = "averaging"

    def __init__(self, *, repeats: int = 5, jitter_pixels: int = 1, noise_std: float = 0.02,
                 include_original: bool = True, label_target: str = "majority", **kwargs):
        super().__init__(jitter_pixels=jitter_pixels, **kwargs)
        if repeats < 1:
            raise InputError(f"repeats must be at least 1, got {repeats}")
        if not 0 <= noise_std <= 1:
            raise InputError(f"noise_std must be in [0, 1], got {noise_std}")
        check_choice(label_target, LABEL_TARGETS, what="label target")
        self.repeats = repeats
        self.noise_std = noise_std
        self.include_original = include_original
        self.label_target = label_target

    def make_copies(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return ``repeats`` jittered copies of each image, ``(M, C, H, W) -> (M * repeats, C, H, W)``.

        The copies of image ``i`` are rows ``i * repeats`` to ``(i + 1) * repeats - 1``; with
        ``include_original`` the first of them is the image itself.
        """
        copies = images.repeat_interleave(self.repeats, dim=0)
        jitter = torch.ones(len(copies), dtype=torch.bool)
        if self.include_original:
            jitter[:: self.repeats] = False
        if jitter.any():
            moved = random_shift(copies[jitter], self.jitter_pixels, generator)
            if self.noise_std > 0:
                moved = moved + self.noise_std * torch.randn(moved.shape, generator=generator)
            copies[jitter] = moved.clamp(0, 1)
        return copies

    def collect(self, oracle: QueryOracle, pool: torch.Tensor, budget: int) -> TransferSet:
        generator = make_generator(self.seed)
        groups = min(budget, oracle.remaining) // self.repeats
        if groups == 0:
            raise InputError(f"budget {budget} is below repeats={self.repeats}; no averaged answer fits")
        images = self.sample_queries(pool, groups, generator)
        copies = self.make_copies(images, generator)
        _, answers = query_in_batches(oracle, copies, self.query_batch_size, progress=self.progress,
                                      desc=f"{self.name} queries")
        targets = aggregate_answers(answers, self.repeats, oracle.num_classes, label_target=self.label_target)
        spent = self.repeats * torch.arange(1, groups + 1, dtype=torch.int64)
        return TransferSet(x=images, y=targets, spent=spent)

    def config(self) -> dict:
        return {**super().config(), "repeats": self.repeats, "noise_std": self.noise_std,
                "include_original": self.include_original, "label_target": self.label_target}


def flip_filter(clone_probs: torch.Tensor, answers: torch.Tensor, min_clone_prob: float,
                max_drop_fraction: float) -> torch.Tensor:
    """Mark the answers to keep, dropping those whose top-1 the clone finds implausible.

    An answer is dropped when the clone's probability of the answer's top-1 class is below
    ``min_clone_prob``. At most ``floor(max_drop_fraction * N)`` answers are dropped, those
    with the lowest clone probability first, so that a poor clone cannot discard most of the
    data.

    Parameters
    ----------
    clone_probs : (N, K) float
        The clone's posteriors on the queried inputs.
    answers : (N, K) float or (N,) int64
        The oracle's answers.

    Returns
    -------
    (N,) bool
        True for answers to keep.
    """
    top1 = to_labels(answers)
    plausibility = clone_probs.gather(1, top1[:, None]).squeeze(1)  # (N,)
    suspect = plausibility < min_clone_prob
    limit = int(max_drop_fraction * len(answers))
    if int(suspect.sum()) > limit:
        order = plausibility.argsort(stable=True)
        suspect = torch.zeros_like(suspect)
        suspect[order[:limit]] = True
    return ~suspect


class FlipAwareAttack(KnockoffRandom):
    """Drop answers that a probe clone disagrees with, then train the clone on the rest.

    Queries are Knockoff random samples from the pool. For each budget ``b``, a probe clone
    trains on the first ``round(probe_fraction * b)`` answers. Among the first ``b`` answers,
    those whose top-1 the probe gives a probability below ``min_clone_prob`` are dropped (see
    :func:`flip_filter`), and the clone for budget ``b`` trains on the kept answers. A keyed
    random flip puts the top-1 on a class that the surrounding answers do not support, so a
    probe that has learned the majority behaviour assigns it a low probability.
    ``AttackResult.info[b]`` reports ``{"kept": ..., "dropped": ...}``.

    Parameters
    ----------
    probe_fraction : float
        Share of the budget the probe trains on, in (0, 1]; default 0.5, this package's
        choice (half the answers to learn from, and the whole budget is filtered).
    min_clone_prob : float
        Drop threshold on the probe's probability of the answer's top-1, in (0, 1); default
        0.1, this package's choice (chance level with 10 classes).
    max_drop_fraction : float
        Cap on the share of answers dropped, in [0, 1]; default 0.3, this package's choice
        (far above PDB's benign flip rate of about 1%, far below half the data).
    **kwargs
        Passed to :class:`KnockoffRandom` and :class:`~pdblib.attacks.base.Attack`; the probe
        uses the clone model and clone training.

    Notes
    -----
    The filter also scores the probe's own training answers, on which the probe has partly
    fitted the flips, so it drops fewer flips there than among the later answers.
    """

    name = "flip_aware"

    def __init__(self, *, probe_fraction: float = 0.5, min_clone_prob: float = 0.1,
                 max_drop_fraction: float = 0.3, **kwargs):
        super().__init__(**kwargs)
        if not 0 < probe_fraction <= 1:
            raise InputError(f"probe_fraction must be in (0, 1], got {probe_fraction}")
        if not 0 < min_clone_prob < 1:
            raise InputError(f"min_clone_prob must be in (0, 1), got {min_clone_prob}")
        if not 0 <= max_drop_fraction <= 1:
            raise InputError(f"max_drop_fraction must be in [0, 1], got {max_drop_fraction}")
        self.probe_fraction = probe_fraction
        self.min_clone_prob = min_clone_prob
        self.max_drop_fraction = max_drop_fraction

    def filter_answers(self, probe: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return the keep mask ``(N,)`` for inputs ``x`` and answers ``y`` under ``probe``."""
        probs = torch.softmax(predict_logits(probe, x, device=self.device), dim=1)
        return flip_filter(probs, y, self.min_clone_prob, self.max_drop_fraction)

    def run(self, oracle: QueryOracle, pool: torch.Tensor, budgets: list[int]) -> AttackResult:
        """Collect Knockoff random queries, then filter and train one clone per budget."""
        budgets = self.check_run(oracle, pool, budgets)
        transfer = self.collect(oracle, pool, budgets[-1])
        result = AttackResult(queries_used=oracle.used, transfer=transfer)
        for i, budget in enumerate(budgets):
            part = transfer.within_budget(budget)
            n_probe = max(1, round(self.probe_fraction * len(part)))
            probe, _ = self.train_clone(part.x[:n_probe], part.y[:n_probe], oracle.num_classes,
                                        seed_offset=500 + i, desc=f"{self.name} probe @{budget}")
            keep = self.filter_answers(probe, part.x, part.y)
            clone, records = self.train_clone(part.x[keep], part.y[keep], oracle.num_classes, seed_offset=i,
                                              desc=f"{self.name} clone @{budget}")
            result.clones[budget] = clone
            result.history[budget] = records
            result.info[budget] = {"kept": int(keep.sum()), "dropped": int((~keep).sum())}
            logger.info("%s @%d: dropped %d of %d answers", self.name, budget, int((~keep).sum()), len(part))
        return result

    def config(self) -> dict:
        return {**super().config(), "probe_fraction": self.probe_fraction, "min_clone_prob": self.min_clone_prob,
                "max_drop_fraction": self.max_drop_fraction}
