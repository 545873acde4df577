"""Knockoff Nets with random sampling.

T. Orekondy, B. Schiele, M. Fritz, "Knockoff Nets: Stealing Functionality of Black-Box
Models", CVPR 2019. The attacker draws queries uniformly at random from a natural image pool,
queries the victim and trains a clone on the answers (posteriors, or labels for a label-only
API). The paper trains clones with SGD (lr 0.01, momentum 0.5) for up to 100 epochs on
ImageNet-scale pools; the defaults here (Adam, 10 epochs, a small CNN) fit a 28x28 task on a
CPU and are knobs of the attack notebook.

When the budget exceeds the pool size, the pool is drawn again in a new random order, and each
repeated image is shifted by up to ``jitter_pixels`` pixels (zero padding) so that it is a new
query. This is a choice of this package; the paper's pools are larger than its budgets.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pdblib.attacks.base import Attack, TransferSet
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
        answers = []
        for start in tqdm(range(0, budget, self.query_batch_size), desc=f"{self.name} queries",
                          disable=not self.progress, leave=False, mininterval=5.0):
            answers.append(oracle.query(queries[start:start + self.query_batch_size]))
        return TransferSet(x=queries, y=torch.cat(answers))

    def config(self) -> dict:
        return {**super().config(), "query_batch_size": self.query_batch_size,
                "jitter_pixels": self.jitter_pixels}
