"""Data-free model extraction: a generator trained against the clone with zeroth-order gradients.

Both attacks play a two-player game without any pool. A generator maps noise to images and is
trained to maximize the disagreement between the victim and the clone. The clone is trained to
minimize it on fresh generator images labelled with the victim's posteriors. The victim is a
black box, so the gradient of the disagreement with respect to the generator's output is
estimated by forward differences (:func:`zeroth_order_gradient`), and every point of that
estimate is a query that counts against the budget.

The generator's images are ``sigmoid(a)`` of a pre-activation ``a``, and the forward
differences perturb ``a``, not the image. This is this package's choice, because the oracle
rejects inputs outside [0, 1] and ``sigmoid`` keeps every perturbed point inside, whereas a
perturbed image could leave that range.

Both papers spend budgets in the millions of queries. This package's profiles use budgets
thousands of times smaller, so expect much weaker clones than the papers report.
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pdblib.attacks.base import Attack, AttackResult, TransferSet
from pdblib.attacks.oracle import QueryOracle
from pdblib.utils import InputError, make_generator

logger = logging.getLogger(__name__)


def zeroth_order_gradient(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, directions: int = 1,
                          epsilon: float = 1e-3,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Estimate the gradient of a black-box scalar function at each point by forward differences.

    For each point ``x_i`` in ``d`` dimensions, draw ``m = directions`` directions ``u_j``
    uniformly on the unit sphere and return

        g_i = (d / m) * sum_j (fn(x_i + epsilon * u_j) - fn(x_i)) / epsilon * u_j,

    an estimate whose expectation tends to the gradient as ``epsilon -> 0`` (because
    ``E[d u u^T] = I``), with variance falling as ``1 / m``. ``fn`` is called exactly once, on
    ``N * (m + 1)`` points: the ``N`` points themselves first, then the perturbed points in
    point-major order, so a caller that queries an oracle inside ``fn`` spends exactly that
    many queries.

    Parameters
    ----------
    fn : callable
        Maps a batch ``(B, *shape)`` to per-point values ``(B,)``.
    x : (N, *shape) float
        Points at which to estimate the gradient.
    directions : int
        ``m``, random directions per point, >= 1.
    epsilon : float
        Step of the forward difference, > 0.
    generator : torch.Generator, optional
        Source of the random directions (CPU).

    Returns
    -------
    gradient : (N, *shape) float
        Estimated gradients.
    values : (N,) float
        ``fn(x)``.
    """
    if not isinstance(directions, int) or directions < 1:
        raise InputError(f"directions must be an int >= 1, got {directions!r}")
    if not epsilon > 0:
        raise InputError(f"epsilon must be positive, got {epsilon!r}")
    if x.dim() < 2 or len(x) == 0:
        raise InputError(f"x must be a non-empty batch of shape (N, ...), got shape {tuple(x.shape)}")
    n, dim = len(x), x[0].numel()
    flat = x.detach().flatten(1)
    u = torch.randn(n, directions, dim, generator=generator, dtype=flat.dtype).to(flat.device)
    u = u / torch.linalg.vector_norm(u, dim=2, keepdim=True)
    perturbed = flat.unsqueeze(1) + epsilon * u  # (N, m, d)
    points = torch.cat([flat, perturbed.reshape(n * directions, dim)]).view(n * (directions + 1), *x.shape[1:])
    values = fn(points)
    if values.shape != (n * (directions + 1),):
        raise InputError(f"fn must return one value per point, shape ({n * (directions + 1)},), "
                         f"got {tuple(values.shape)}")
    values = values.detach().to(flat.dtype)
    base, shifted = values[:n], values[n:].view(n, directions)
    slopes = (shifted - base.unsqueeze(1)) / epsilon  # (N, m) directional derivatives
    gradient = (dim / directions) * (slopes.unsqueeze(2) * u).sum(dim=1)
    return gradient.view_as(x), base


class ImageGenerator(nn.Module):
    """Noise ``(N, noise_dim)`` to images ``(N, C, H, W)`` in [0, 1].

    A small DCGAN-style generator: a linear projection to a ``ceil(H/4) x ceil(W/4)`` map, two
    nearest-neighbour 2x upsamplings each followed by a 3x3 convolution, batch normalization and
    leaky ReLU, a last 3x3 convolution to ``C`` channels, a crop to ``(H, W)``, then a sigmoid.
    Both papers use generators of this family (three convolutions with batch normalization).
    """

    def __init__(self, noise_dim: int, image_shape: tuple[int, int, int], width: int = 64):
        super().__init__()
        channels, height, width_px = image_shape
        self.image_shape = (channels, height, width_px)
        self.start = (max(2, math.ceil(height / 4)), max(2, math.ceil(width_px / 4)))
        self.width = width
        self.project = nn.Linear(noise_dim, 2 * width * self.start[0] * self.start[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, padding=1),
            nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
        )

    def pre_activation(self, z: torch.Tensor) -> torch.Tensor:
        """Images before the sigmoid, ``(N, C, H, W)`` unbounded."""
        h = self.project(z).view(len(z), 2 * self.width, *self.start)
        return self.body(h)[:, :, : self.image_shape[1], : self.image_shape[2]]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.pre_activation(z))


def centered_log_probs(probs: torch.Tensor, floor: float = 1e-8) -> torch.Tensor:
    """Logits recovered from ``(N, K)`` posteriors: ``log p`` minus its mean over the K classes.

    Posteriors fix logits only up to an additive constant per row; subtracting the row mean
    picks one representative (DFME's "mean correction"). ``floor`` keeps ``log 0`` finite for
    one-hot answers.
    """
    log_probs = probs.clamp_min(floor).log()
    return log_probs - log_probs.mean(dim=1, keepdim=True)


def l1_logit_loss(clone_logits: torch.Tensor, victim_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample DFME loss ``(N,)``: mean absolute difference of centred clone and recovered victim logits.

    The clone's logits are centred too, so the loss compares both up to the additive constant
    that posteriors cannot reveal. Centring leaves the clone's softmax unchanged.
    """
    clone_centered = clone_logits - clone_logits.mean(dim=1, keepdim=True)
    return (clone_centered - centered_log_probs(victim_probs)).abs().mean(dim=1)


def kl_loss(clone_logits: torch.Tensor, victim_probs: torch.Tensor) -> torch.Tensor:
    """Per-sample MAZE loss ``(N,)``: ``KL(victim || clone) = sum_k p_k (log p_k - log q_k)``, 0 log 0 = 0."""
    log_q = F.log_softmax(clone_logits, dim=1)
    return (torch.special.xlogy(victim_probs, victim_probs) - victim_probs * log_q).sum(dim=1)


class _GeneratorAttack(Attack):
    """Shared loop of DFME and MAZE; subclasses set the loss and the replay steps."""

    name = "datafree"
    supported_outputs = ("probs",)
    needs_pool = False

    def __init__(self, *, batch_size: int, directions: int, epsilon: float, generator_steps: int,
                 clone_steps: int, replay_steps: int, noise_dim: int, generator_width: int, clone_lr: float,
                 clone_momentum: float, clone_weight_decay: float, generator_lr: float,
                 lr_milestones: tuple[float, ...], lr_gamma: float, **kwargs):
        super().__init__(**kwargs)
        positive_ints = {"batch_size": batch_size, "directions": directions, "clone_steps": clone_steps,
                         "noise_dim": noise_dim, "generator_width": generator_width}
        for knob, value in positive_ints.items():
            if not isinstance(value, int) or value < 1:
                raise InputError(f"{knob} must be an int >= 1, got {value!r}")
        for knob, value in {"generator_steps": generator_steps, "replay_steps": replay_steps}.items():
            if not isinstance(value, int) or value < 0:
                raise InputError(f"{knob} must be an int >= 0, got {value!r}")
        for knob, value in {"epsilon": epsilon, "clone_lr": clone_lr, "generator_lr": generator_lr}.items():
            if not value > 0:
                raise InputError(f"{knob} must be positive, got {value!r}")
        if not 0 <= clone_momentum < 1:
            raise InputError(f"clone_momentum must be in [0, 1), got {clone_momentum!r}")
        if not clone_weight_decay >= 0:
            raise InputError(f"clone_weight_decay must be >= 0, got {clone_weight_decay!r}")
        if not 0 < lr_gamma <= 1:
            raise InputError(f"lr_gamma must be in (0, 1], got {lr_gamma!r}")
        milestones = tuple(float(m) for m in lr_milestones)
        if any(not 0 < m < 1 for m in milestones) or list(milestones) != sorted(milestones):
            raise InputError(f"lr_milestones must be increasing fractions of the budget in (0, 1), "
                             f"got {lr_milestones!r}")
        self.batch_size = batch_size
        self.directions = directions
        self.epsilon = float(epsilon)
        self.generator_steps = generator_steps
        self.clone_steps = clone_steps
        self.replay_steps = replay_steps
        self.noise_dim = noise_dim
        self.generator_width = generator_width
        self.clone_lr = float(clone_lr)
        self.clone_momentum = float(clone_momentum)
        self.clone_weight_decay = float(clone_weight_decay)
        self.generator_lr = float(generator_lr)
        self.lr_milestones = milestones
        self.lr_gamma = float(lr_gamma)

    def loss(self, clone_logits: torch.Tensor, victim_probs: torch.Tensor) -> torch.Tensor:
        """Per-sample disagreement ``(N,)`` between the clone's logits and the victim's posteriors."""
        raise NotImplementedError

    def collect(self, oracle: QueryOracle, pool: torch.Tensor | None, budget: int) -> TransferSet:
        """Spend ``budget`` queries on the game and return every query and answer in query order.

        The transfer set holds the forward-difference points as well as the clone's training
        images, so its length equals the queries spent. ``pool`` is ignored.
        """
        return self.run(oracle, pool, [budget]).transfer

    def run(self, oracle: QueryOracle, pool: torch.Tensor | None, budgets: list[int]) -> AttackResult:
        """Play the game until ``max(budgets)`` queries are spent, keeping a copy of the clone at each budget.

        Every budget is hit exactly: batches shrink so that no step crosses the next budget, and
        the clone at budget ``b`` is a snapshot taken when exactly ``b`` queries had been spent.
        ``pool`` is ignored. Training runs under a forked global RNG seeded by ``seed`` (for
        dropout), which is restored afterwards.

        Raises
        ------
        InputError
            On invalid budgets or an oracle whose output is not ``"probs"``.
        """
        budgets = self.check_run(oracle, pool, budgets)
        if pool is not None:
            logger.info("%s is data-free and ignores the pool of %d images", self.name, len(pool))
        devices = [torch.device(self.device)] if torch.device(self.device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return _Game(self, oracle, budgets).play()

    def config(self) -> dict:
        return {"name": self.name, "clone_model": self.clone_model, "seed": self.seed,
                "supported_outputs": list(self.supported_outputs),
                "batch_size": self.batch_size, "directions": self.directions, "epsilon": self.epsilon,
                "generator_steps": self.generator_steps, "clone_steps": self.clone_steps,
                "replay_steps": self.replay_steps, "noise_dim": self.noise_dim,
                "generator_width": self.generator_width, "clone_lr": self.clone_lr,
                "clone_momentum": self.clone_momentum, "clone_weight_decay": self.clone_weight_decay,
                "generator_lr": self.generator_lr, "lr_milestones": list(self.lr_milestones),
                "lr_gamma": self.lr_gamma}


class _Game:
    """State of one generator-versus-clone run."""

    def __init__(self, attack: _GeneratorAttack, oracle: QueryOracle, budgets: list[int]):
        self.attack = attack
        self.oracle = oracle
        self.budgets = budgets
        self.start_used = oracle.used
        self.total = budgets[-1]
        self.device = torch.device(attack.device)
        self.rng = make_generator(attack.seed)
        self.clone = attack.new_clone(oracle.num_classes).to(self.device)
        self.generator = ImageGenerator(attack.noise_dim, oracle.defense.input_shape, attack.generator_width)
        self.generator.to(self.device)
        self.clone_optimizer = torch.optim.SGD(self.clone.parameters(), lr=attack.clone_lr,
                                               momentum=attack.clone_momentum,
                                               weight_decay=attack.clone_weight_decay)
        self.generator_optimizer = torch.optim.Adam(self.generator.parameters(), lr=attack.generator_lr)
        self.milestones_passed = 0
        self.queries: list[torch.Tensor] = []
        self.answers: list[torch.Tensor] = []
        self.replay_x: list[torch.Tensor] = []
        self.replay_y: list[torch.Tensor] = []
        self.records: list[dict] = []
        self.result = AttackResult()
        self.next_budget = 0

    @property
    def spent(self) -> int:
        return self.oracle.used - self.start_used

    @property
    def limit(self) -> int:
        """Queries left before the next budget checkpoint."""
        return self.budgets[self.next_budget] - self.spent

    @property
    def done(self) -> bool:
        return self.next_budget == len(self.budgets)

    def play(self) -> AttackResult:
        attack = self.attack
        bar = tqdm(total=self.total, desc=f"{attack.name} queries", disable=not attack.progress, leave=False,
                   mininterval=5.0)
        while not self.done:
            before = self.spent
            # One record per iteration, updated in place so that a snapshot taken mid-iteration
            # already shows the queries spent so far.
            record = {"queries": before, "generator_loss": math.nan, "clone_loss": math.nan}
            self.records.append(record)
            for _ in range(attack.generator_steps):
                if self.done or self.limit < attack.directions + 1:
                    break
                record["generator_loss"] = self.generator_step(min(attack.batch_size,
                                                                   self.limit // (attack.directions + 1)))
                record["queries"] = self.spent
                self.checkpoint()
            for _ in range(attack.clone_steps):
                if self.done:
                    break
                record["clone_loss"] = self.clone_step(min(attack.batch_size, self.limit))
                record["queries"] = self.spent
                self.checkpoint()
            for _ in range(attack.replay_steps):
                if self.done or not self.replay_x:
                    break
                self.replay_step()
            self.decay_learning_rates()
            bar.update(self.spent - before)
            logger.debug("%s at %d queries: %s", attack.name, self.spent, record)
        bar.close()
        self.result.queries_used = self.spent
        self.result.transfer = TransferSet(x=torch.cat(self.queries), y=torch.cat(self.answers))
        return self.result

    def query(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise RuntimeError(f"internal error: {len(x)} queries would cross the budget checkpoint "
                               f"{self.budgets[self.next_budget]} at {self.spent} spent")
        x = x.detach().cpu()
        y = self.oracle.query(x)
        self.queries.append(x)
        self.answers.append(y)
        return y.to(self.device)

    def generator_step(self, batch: int) -> float:
        """Update the generator once from a forward-difference estimate, spending ``batch * (m + 1)`` queries."""
        attack = self.attack
        self.generator.train()
        self.clone.eval()  # dropout off, so fn is deterministic between a point and its perturbations
        z = torch.randn(batch, attack.noise_dim, generator=self.rng).to(self.device)
        pre = self.generator.pre_activation(z)

        def disagreement(points: torch.Tensor) -> torch.Tensor:
            images = torch.sigmoid(points)
            victim = self.query(images)
            with torch.no_grad():
                return attack.loss(self.clone(images), victim)

        gradient, values = zeroth_order_gradient(disagreement, pre.detach(), directions=attack.directions,
                                                 epsilon=attack.epsilon, generator=self.rng)
        self.generator_optimizer.zero_grad(set_to_none=True)
        pre.backward(-gradient / batch)  # ascend the mean disagreement
        self.generator_optimizer.step()
        return float(values.mean())

    def clone_step(self, batch: int) -> float:
        """Update the clone once on fresh generator images labelled by the oracle, spending ``batch`` queries."""
        attack = self.attack
        z = torch.randn(batch, attack.noise_dim, generator=self.rng).to(self.device)
        self.generator.train()  # batch statistics, as in the generator step
        with torch.no_grad():
            images = self.generator(z)
        victim = self.query(images)
        if attack.replay_steps > 0:
            self.replay_x.append(images.cpu())
            self.replay_y.append(victim.cpu())
        return self.train_clone_on(images, victim)

    def replay_step(self) -> float:
        """Update the clone once on a random batch of earlier clone queries (experience replay), spending none."""
        if len(self.replay_x) > 1:
            self.replay_x, self.replay_y = [torch.cat(self.replay_x)], [torch.cat(self.replay_y)]
        x, y = self.replay_x[0], self.replay_y[0]
        index = torch.randint(len(x), (min(self.attack.batch_size, len(x)),), generator=self.rng)
        return self.train_clone_on(x[index].to(self.device), y[index].to(self.device))

    def train_clone_on(self, images: torch.Tensor, victim: torch.Tensor) -> float:
        self.clone.train()
        loss = self.attack.loss(self.clone(images), victim).mean()
        self.clone_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.clone_optimizer.step()
        return float(loss.detach())

    def checkpoint(self) -> None:
        if self.spent == self.budgets[self.next_budget]:
            budget = self.budgets[self.next_budget]
            self.result.clones[budget] = copy.deepcopy(self.clone).cpu().eval()
            self.result.history[budget] = [dict(record) for record in self.records]
            logger.info("%s: clone saved at %d queries", self.attack.name, budget)
            self.next_budget += 1

    def decay_learning_rates(self) -> None:
        milestones = self.attack.lr_milestones
        while self.milestones_passed < len(milestones) and \
                self.spent >= milestones[self.milestones_passed] * self.total:
            for optimizer in (self.clone_optimizer, self.generator_optimizer):
                for group in optimizer.param_groups:
                    group["lr"] *= self.attack.lr_gamma
            self.milestones_passed += 1


class DFME(_GeneratorAttack):
    """Data-Free Model Extraction.

    J.-B. Truong, P. Maini, R. J. Walls, N. Papernot, "Data-Free Model Extraction", CVPR 2021.
    Each iteration takes ``generator_steps`` generator updates, each estimating the gradient of
    the l1 disagreement between clone logits and victim logits recovered from posteriors
    (:func:`l1_logit_loss`) by forward differences, then ``clone_steps`` clone updates on fresh
    generator images that minimize the same loss. There is no replay. An iteration at the
    defaults costs ``256 * (1 + 1) + 5 * 256 = 1792`` queries.

    Parameters
    ----------
    batch_size : int
        Images per generator or clone step. Default 256 (paper).
    directions : int
        ``m``, random directions per forward-difference estimate. Default 1 (paper).
    epsilon : float
        Forward-difference step. Default 1e-3 (paper).
    generator_steps, clone_steps : int
        ``n_G`` and ``n_S`` updates per iteration. Defaults 1 and 5 (paper).
    noise_dim : int
        Generator input size. Default 256 (paper).
    generator_width : int
        Channels of the generator's last hidden convolution. Default 64, this package's choice
        (the usual DCGAN width). The generator's convolutions dominate the CPU time at 28x28,
        so lower it to trade generator capacity for speed.
    clone_lr, clone_momentum, clone_weight_decay : float
        SGD of the clone. Defaults 0.1, 0.9 and 5e-4 (paper).
    generator_lr : float
        Adam learning rate of the generator. Default 5e-4 (paper).
    lr_milestones, lr_gamma
        Both learning rates are multiplied by ``lr_gamma`` once the spent queries pass each
        fraction of ``max(budgets)``. Defaults ``(0.1, 0.3, 0.5)`` and 0.3 (paper).
    **kwargs
        ``clone_model``, ``seed``, ``device`` and ``progress`` of
        :class:`~pdblib.attacks.base.Attack`; ``clone_train`` is not used because the clone
        trains online.

    Notes
    -----
    The papers' budgets are in the millions of queries; this package's profiles use far
    smaller ones. NOTE: the defaults were taken from the paper's experimental setup as read
    by the author of this module and were not re-checked against the text in this package.
    """

    name = "dfme"

    def __init__(self, *, batch_size: int = 256, directions: int = 1, epsilon: float = 1e-3,
                 generator_steps: int = 1, clone_steps: int = 5, noise_dim: int = 256, generator_width: int = 64,
                 clone_lr: float = 0.1, clone_momentum: float = 0.9, clone_weight_decay: float = 5e-4,
                 generator_lr: float = 5e-4, lr_milestones: tuple[float, ...] = (0.1, 0.3, 0.5),
                 lr_gamma: float = 0.3, **kwargs):
        super().__init__(batch_size=batch_size, directions=directions, epsilon=epsilon,
                         generator_steps=generator_steps, clone_steps=clone_steps, replay_steps=0,
                         noise_dim=noise_dim, generator_width=generator_width, clone_lr=clone_lr,
                         clone_momentum=clone_momentum, clone_weight_decay=clone_weight_decay,
                         generator_lr=generator_lr, lr_milestones=lr_milestones, lr_gamma=lr_gamma, **kwargs)

    def loss(self, clone_logits: torch.Tensor, victim_probs: torch.Tensor) -> torch.Tensor:
        return l1_logit_loss(clone_logits, victim_probs)


class MAZE(_GeneratorAttack):
    """MAZE: data-free model stealing with zeroth-order gradient estimation.

    S. Kariyappa, A. Prakash, M. K. Qureshi, "MAZE: Data-Free Model Stealing Attack Using
    Zeroth-Order Gradient Estimation", CVPR 2021. Each iteration takes ``generator_steps``
    generator updates that ascend a forward-difference estimate of ``KL(victim || clone)``
    (:func:`kl_loss`), then ``clone_steps`` clone updates on fresh generator images that
    minimize it. Then come ``replay_steps`` clone updates on batches drawn from every earlier
    clone query (experience replay), which spend no queries. At the defaults an iteration costs
    ``128 * (10 + 1) + 5 * 128 = 2048`` queries.

    Parameters
    ----------
    batch_size : int
        Images per step. Default 128 (paper).
    directions : int
        ``m``, random directions per forward-difference estimate. Default 10 (paper).
    epsilon : float
        Forward-difference step. Default 1e-3 (paper).
    generator_steps, clone_steps, replay_steps : int
        ``N_G``, ``N_C`` and ``N_R`` per iteration. Defaults 1, 5 and 10 (paper).
    noise_dim : int
        Generator input size. Default 100, this package's choice (the usual DCGAN size).
    generator_width : int
        Default 64, this package's choice, as for :class:`DFME`.
    clone_lr, clone_momentum, clone_weight_decay : float
        SGD of the clone. Defaults 0.1, 0.9 and 5e-4 (paper).
    generator_lr : float
        Adam learning rate of the generator. Default 1e-4 (paper).
    lr_milestones, lr_gamma
        Step decay as in :class:`DFME`. Default ``()``, constant learning rates, this package's
        choice.
    **kwargs
        As for :class:`DFME`.

    Notes
    -----
    The papers' budgets are in the millions of queries; this package's profiles use far
    smaller ones. NOTE: the defaults marked "paper" were taken from the paper's experimental
    setup as read by the author of this module and were not re-checked against the text in
    this package.
    """

    name = "maze"

    def __init__(self, *, batch_size: int = 128, directions: int = 10, epsilon: float = 1e-3,
                 generator_steps: int = 1, clone_steps: int = 5, replay_steps: int = 10, noise_dim: int = 100,
                 generator_width: int = 64, clone_lr: float = 0.1, clone_momentum: float = 0.9,
                 clone_weight_decay: float = 5e-4, generator_lr: float = 1e-4,
                 lr_milestones: tuple[float, ...] = (), lr_gamma: float = 0.3, **kwargs):
        super().__init__(batch_size=batch_size, directions=directions, epsilon=epsilon,
                         generator_steps=generator_steps, clone_steps=clone_steps, replay_steps=replay_steps,
                         noise_dim=noise_dim, generator_width=generator_width, clone_lr=clone_lr,
                         clone_momentum=clone_momentum, clone_weight_decay=clone_weight_decay,
                         generator_lr=generator_lr, lr_milestones=lr_milestones, lr_gamma=lr_gamma, **kwargs)

    def loss(self, clone_logits: torch.Tensor, victim_probs: torch.Tensor) -> torch.Tensor:
        return kl_loss(clone_logits, victim_probs)
