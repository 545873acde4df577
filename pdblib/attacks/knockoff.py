"""Knockoff Nets with the random and the adaptive sampling strategy.

T. Orekondy, B. Schiele, M. Fritz, "Knockoff Nets: Stealing Functionality of Black-Box
Models", CVPR 2019. The attacker draws queries uniformly at random from a natural image pool,
queries the victim and trains a clone on the answers (posteriors, or labels for a label-only
API). The paper trains clones with SGD (lr 0.01, momentum 0.5) for up to 100 epochs on
ImageNet-scale pools; the defaults here (Adam, 10 epochs, a small CNN) fit a 28x28 task on a
CPU and are knobs of the attack notebook.

When the budget exceeds the pool size, the pool is drawn again in a new random order, and each
repeated image is shifted by up to ``jitter_pixels`` pixels (zero padding) so that it is a new
query. This is a choice of this package; the paper's pools are larger than its budgets.

The adaptive strategy (:class:`KnockoffAdaptive`) replaces uniform sampling by a gradient
bandit over groups of the pool; see its docstring.
"""

from __future__ import annotations

import logging
from collections import deque

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pdblib.attacks.base import Attack, TransferSet, query_in_batches
from pdblib.attacks.oracle import QueryOracle
from pdblib.utils import InputError, make_generator, validate_images

logger = logging.getLogger(__name__)


def random_shift(x: torch.Tensor, max_pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by a random integer offset in ``[-max_pixels, max_pixels]``, filling with 0."""
    if max_pixels == 0:
        return x.clone()
    n, _, h, w = x.shape
    padded = F.pad(x, (max_pixels,) * 4)
    dx = torch.randint(0, 2 * max_pixels + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * max_pixels + 1, (n,), generator=generator)
    out = torch.empty_like(x)
    for i in range(n):
        out[i] = padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    return out


class KnockoffRandom(Attack):
    """Knockoff Nets, random sampling strategy.

    Parameters
    ----------
    query_batch_size : int
        Queries per oracle call.
    jitter_pixels : int
        Maximum shift of images drawn again after the pool is used up.
    **kwargs
        Passed to :class:`~pdblib.attacks.base.Attack` (clone model, clone training, seed).
    """

    name = "knockoff_random"

    def __init__(self, *, query_batch_size: int = 256, jitter_pixels: int = 2, **kwargs):
        super().__init__(**kwargs)
        if query_batch_size < 1:
            raise InputError(f"query_batch_size must be at least 1, got {query_batch_size}")
        if jitter_pixels < 0:
            raise InputError(f"jitter_pixels must be >= 0, got {jitter_pixels}")
        self.query_batch_size = query_batch_size
        self.jitter_pixels = jitter_pixels

    def sample_queries(self, pool: torch.Tensor, budget: int, generator: torch.Generator) -> torch.Tensor:
        """Draw ``budget`` query images: random passes over the pool, with later passes shifted."""
        validate_images(pool, name="pool")
        chunks, total, passes = [], 0, 0
        while total < budget:
            order = torch.randperm(len(pool), generator=generator)[: budget - total]
            chunk = pool[order]
            if passes > 0:
                chunk = random_shift(chunk, self.jitter_pixels, generator)
            chunks.append(chunk)
            total += len(chunk)
            passes += 1
        if passes > 1:
            logger.info("budget %d exceeds the pool of %d images: %d passes, repeats shifted by up to %d px",
                        budget, len(pool), passes, self.jitter_pixels)
        return torch.cat(chunks)

    def collect(self, oracle: QueryOracle, pool: torch.Tensor, budget: int) -> TransferSet:
        generator = make_generator(self.seed)
        queries = self.sample_queries(pool, budget, generator)
        sent, answers = query_in_batches(oracle, queries, self.query_batch_size, progress=self.progress,
                                         desc=f"{self.name} queries")
        return TransferSet(x=sent, y=answers)

    def config(self) -> dict:
        return {**super().config(), "query_batch_size": self.query_batch_size,
                "jitter_pixels": self.jitter_pixels}


def kmeans(x: torch.Tensor, num_clusters: int, generator: torch.Generator, *,
           iterations: int = 25) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the rows of ``x`` ``(N, D)`` with k-means (k-means++ seeding, Lloyd iterations).

    Returns
    -------
    (assignments, centers)
        ``(N,)`` int64 cluster indices in ``[0, num_clusters)`` and ``(num_clusters, D)`` centers.
        A cluster that loses all its points is moved to the point farthest from its center,
        so every cluster keeps at least one point while ``N >= num_clusters``.
    """
    n = len(x)
    if not 1 <= num_clusters <= n:
        raise InputError(f"num_clusters must be in [1, {n}] for {n} points, got {num_clusters}")
    x = x.double()
    centers = x[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, num_clusters):
        d2 = torch.cdist(x, centers).min(dim=1).values.pow(2)
        weights = d2 if float(d2.sum()) > 0 else torch.ones(n, dtype=x.dtype)
        pick = torch.multinomial(weights, 1, generator=generator)
        centers = torch.cat([centers, x[pick]])
    assignments = torch.cdist(x, centers).argmin(dim=1)
    for _ in range(iterations):
        for c in range(num_clusters):
            members = assignments == c
            if members.any():
                centers[c] = x[members].mean(dim=0)
            else:
                far = torch.cdist(x, centers).min(dim=1).values.argmax()
                centers[c] = x[far]
        new = torch.cdist(x, centers).argmin(dim=1)
        if torch.equal(new, assignments):
            break
        assignments = new
    return assignments, centers.float()


class RunningNorm:
    """Online standardization of a scalar stream (Welford's running mean and variance).

    :meth:`update` adds a value and returns it standardized with the statistics that include
    it. The result is 0 while fewer than two values were seen or when their standard deviation
    is below ``eps`` (a constant stream), and non-finite inputs are ignored and return 0, so
    the output is always a finite float.
    """

    def __init__(self, eps: float = 1e-8):
        self.eps = eps
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0

    @property
    def std(self) -> float:
        """Population standard deviation of the values seen so far (0 before two values)."""
        return (self.m2 / self.count) ** 0.5 if self.count > 1 else 0.0

    def update(self, value: float) -> float:
        """Add ``value`` and return it standardized."""
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            logger.warning("non-finite reward %r ignored", value)
            return 0.0
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (value - self.mean)
        std = self.std
        if std < self.eps:
            return 0.0
        return (value - self.mean) / std


REWARDS = ("cert", "div", "loss")


def certainty_reward(y: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability of each answer, ``(B, K) -> (B,)`` in [0, 1]."""
    top2 = y.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def diversity_reward(y: torch.Tensor, recent: torch.Tensor | None) -> torch.Tensor:
    """Diversity of answers ``(B, K)`` against the mean of recent answers ``(M, K)``.

    ``sum_k max(0, y_k - mean_k)``: large when an answer puts mass on classes that the recent
    answers rarely had. With no recent answers the mean is taken as zero, so the reward is 1.
    """
    mean = torch.zeros(y.shape[1]) if recent is None or len(recent) == 0 else recent.mean(dim=0)
    return (y - mean).clamp(min=0).sum(dim=1)


def loss_reward(clone_logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the clone's logits ``(B, K)`` against the answers, ``(B,)``.

    Computed through ``log_softmax``, so a zero probability in the answer or in the clone
    never produces ``log(0)``.
    """
    return -(y * torch.log_softmax(clone_logits, dim=1)).sum(dim=1)


class KnockoffAdaptive(KnockoffRandom):
    """Knockoff Nets, adaptive sampling strategy.

    T. Orekondy, B. Schiele, M. Fritz, "Knockoff Nets: Stealing Functionality of Black-Box
    Models", CVPR 2019. A gradient bandit (Sutton and Barto, "Reinforcement Learning: An
    Introduction", 2nd ed., 2018, section 2.8) chooses which group of the pool to sample
    next. Step ``t``:

    1. the policy is ``pi = softmax(H)`` over the preferences ``H`` of the groups;
    2. draw a group ``a ~ pi`` and ``images_per_step`` unused images of it, query them;
    3. reward ``r`` = sum of the enabled rewards, each standardized online over the run:
       certainty (top-1 minus top-2 probability of the answer), diversity (mass of the answer
       above the mean of the last ``diversity_window`` answers) and loss (the online clone's
       cross-entropy against the answer), averaged over the step's images;
    4. ``H[a] += bandit_lr * (r - r_bar) * (1 - pi[a])`` and
       ``H[j] -= bandit_lr * (r - r_bar) * pi[j]`` for ``j != a``, with ``r_bar`` the mean
       of the earlier rewards;
    5. the online clone takes one optimizer step on the step's queries and answers.

    The online clone serves only the loss reward. As in the paper, the returned clones are
    trained afresh on the collected transfer set (the base class trains one per budget).

    The paper's actions are the pool's labelled classes (and their hierarchy). Pool labels
    are not available to the attacker here, so the groups are k-means clusters of the pool's
    pixels, computed with a seeded generator. This is a choice of this package. When a group
    runs out of images it is refilled with its images in a new order, each shifted by up to
    ``jitter_pixels`` pixels.

    Parameters
    ----------
    num_clusters : int
        Number of k-means groups; default 10, this package's choice: the class count of the
        default pool (MNIST), so that groups can roughly follow its classes. Capped at the
        pool size.
    rewards : tuple of {"cert", "div", "loss"}
        Enabled rewards; default all three (the paper's combined reward).
    images_per_step : int
        Images per bandit step, queried in one oracle call; default 16, this package's
        choice to keep oracle calls and clone updates cheap. ``1`` gives the paper's
        one-image-per-step sequence.
    bandit_lr : float
        Step size of the preference update; default 0.1, this package's choice (a common
        gradient-bandit value).
    diversity_window : int
        Number of recent answers the diversity reward compares against; default 25, this
        package's choice.
    preference_limit : float
        Preferences are clipped to ``[-preference_limit, preference_limit]`` so that the
        policy never underflows to exact zeros; default 30.
    kmeans_iterations : int
        Maximum Lloyd iterations; default 25.
    **kwargs
        Passed to :class:`KnockoffRandom` (``query_batch_size`` is unused here,
        ``jitter_pixels``) and :class:`~pdblib.attacks.base.Attack` (clone model, clone
        training, seed). The online clone uses the clone training's optimizer and lr.

    Attributes
    ----------
    policy_history : (T, G) float
        Policy of each step of the last :meth:`collect` (rows sum to 1).
    reward_history : (T,) float
        Combined standardized reward of each step.
    action_history : (T,) int64
        Group drawn at each step.
    """

    name = "knockoff_adaptive"

    def __init__(self, *, num_clusters: int = 10, rewards: tuple[str, ...] = REWARDS, images_per_step: int = 16,
                 bandit_lr: float = 0.1, diversity_window: int = 25, preference_limit: float = 30.0,
                 kmeans_iterations: int = 25, **kwargs):
        super().__init__(**kwargs)
        if num_clusters < 1:
            raise InputError(f"num_clusters must be at least 1, got {num_clusters}")
        rewards = tuple(rewards)
        if not rewards or any(r not in REWARDS for r in rewards):
            raise InputError(f"rewards must be a non-empty subset of {list(REWARDS)}, got {list(rewards)}")
        if images_per_step < 1:
            raise InputError(f"images_per_step must be at least 1, got {images_per_step}")
        if not bandit_lr > 0:
            raise InputError(f"bandit_lr must be positive, got {bandit_lr}")
        if diversity_window < 1:
            raise InputError(f"diversity_window must be at least 1, got {diversity_window}")
        if not preference_limit > 0:
            raise InputError(f"preference_limit must be positive, got {preference_limit}")
        if kmeans_iterations < 1:
            raise InputError(f"kmeans_iterations must be at least 1, got {kmeans_iterations}")
        self.num_clusters = num_clusters
        self.rewards = rewards
        self.images_per_step = images_per_step
        self.bandit_lr = bandit_lr
        self.diversity_window = diversity_window
        self.preference_limit = preference_limit
        self.kmeans_iterations = kmeans_iterations
        self.policy_history = torch.empty(0)
        self.reward_history = torch.empty(0)
        self.action_history = torch.empty(0, dtype=torch.int64)

    def group_pool(self, pool: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return the k-means group ``(N,)`` of each pool image."""
        k = min(self.num_clusters, len(pool))
        if k < self.num_clusters:
            logger.warning("pool of %d images is smaller than num_clusters=%d; using %d groups",
                           len(pool), self.num_clusters, k)
        assignments, _ = kmeans(pool.flatten(1), k, generator, iterations=self.kmeans_iterations)
        return assignments

    def update_preferences(self, preferences: torch.Tensor, policy: torch.Tensor, action: int,
                           advantage: float) -> torch.Tensor:
        """Return the gradient-bandit update of ``preferences`` ``(G,)`` after ``action``."""
        step = self.bandit_lr * advantage
        new = preferences - step * policy
        new[action] += step
        return new.clamp(-self.preference_limit, self.preference_limit)

    def step_reward(self, answers: torch.Tensor, clone_logits: torch.Tensor, recent: torch.Tensor | None,
                    norms: dict[str, RunningNorm]) -> float:
        """Combined standardized reward of one step from answers ``(B, K)`` and clone logits ``(B, K)``."""
        raw = {
            "cert": lambda: certainty_reward(answers),
            "div": lambda: diversity_reward(answers, recent),
            "loss": lambda: loss_reward(clone_logits, answers),
        }
        return float(sum(norms[name].update(float(raw[name]().mean())) for name in self.rewards))

    def collect(self, oracle: QueryOracle, pool: torch.Tensor, budget: int) -> TransferSet:
        validate_images(pool, name="pool")
        generator = make_generator(self.seed)
        k = oracle.num_classes
        groups = self.group_pool(pool, generator)
        num_groups = int(groups.max()) + 1
        members = [(groups == g).nonzero(as_tuple=True)[0] for g in range(num_groups)]
        queues: list[list[int]] = [[] for _ in range(num_groups)]
        passes = [0] * num_groups

        clone = self.new_clone(k, seed_offset=-1).to(self.device)
        optimizer = (torch.optim.SGD(clone.parameters(), lr=self.clone_train.lr, momentum=0.9)
                     if self.clone_train.optimizer == "sgd"
                     else torch.optim.Adam(clone.parameters(), lr=self.clone_train.lr))
        preferences = torch.zeros(num_groups, dtype=torch.float64)
        norms = {name: RunningNorm() for name in self.rewards}
        recent: deque[torch.Tensor] = deque(maxlen=self.diversity_window)
        reward_mean, steps, collected = 0.0, 0, 0
        xs, ys, policies, rewards, actions = [], [], [], [], []

        with tqdm(total=budget, desc=f"{self.name} queries", disable=not self.progress, leave=False,
                  mininterval=5.0) as bar:
            while oracle.remaining > 0 and collected < budget:
                policy = torch.softmax(preferences, dim=0)
                action = int(torch.multinomial(policy, 1, generator=generator))
                n = min(self.images_per_step, budget - collected, oracle.remaining)
                batch = self._draw(pool, members, queues, passes, action, n, generator)
                answers = oracle.query(batch)
                soft = answers if answers.dim() == 2 else F.one_hot(answers, k).float()

                clone.eval()
                with torch.no_grad():
                    logits = clone(batch.to(self.device)).float().cpu()
                window = torch.stack(list(recent)) if recent else None
                reward = self.step_reward(soft, logits, window, norms)
                advantage = reward - reward_mean if steps > 0 else 0.0
                preferences = self.update_preferences(preferences, policy, action, advantage)
                steps += 1
                reward_mean += (reward - reward_mean) / steps
                recent.extend(soft)

                clone.train()
                loss = loss_reward(clone(batch.to(self.device)), soft.to(self.device)).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

                xs.append(batch)
                ys.append(answers)
                policies.append(policy.float())
                rewards.append(reward)
                actions.append(action)
                collected += len(batch)
                bar.update(len(batch))

        self.policy_history = torch.stack(policies)
        self.reward_history = torch.tensor(rewards)
        self.action_history = torch.tensor(actions, dtype=torch.int64)
        logger.info("%s: %d steps, final policy %s", self.name, steps,
                    [round(float(p), 3) for p in self.policy_history[-1]])
        return TransferSet(x=torch.cat(xs), y=torch.cat(ys))

    def _draw(self, pool, members, queues, passes, group: int, n: int, generator) -> torch.Tensor:
        """Take ``n`` images of ``group``; refilled passes over the group are shifted."""
        chunks = []
        while n > 0:
            if not queues[group]:
                order = members[group][torch.randperm(len(members[group]), generator=generator)]
                queues[group] = order.tolist()
                passes[group] += 1
            take = queues[group][:n]
            queues[group] = queues[group][n:]
            images = pool[take]
            if passes[group] > 1:
                images = random_shift(images, self.jitter_pixels, generator)
            chunks.append(images)
            n -= len(take)
        return torch.cat(chunks)

    def config(self) -> dict:
        return {**super().config(), "num_clusters": self.num_clusters, "rewards": list(self.rewards),
                "images_per_step": self.images_per_step, "bandit_lr": self.bandit_lr,
                "diversity_window": self.diversity_window}
