"""Shared fixtures: small seeded synthetic tasks, never real data or network access."""

from __future__ import annotations

import pytest
import torch

from pdblib.models import MLP

IMAGE_SHAPE = (1, 8, 8)
K = 4


def make_blobs(n: int, seed: int = 0, num_classes: int = K) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(n, 1, 8, 8)`` in [0, 1]: class ``c`` brightens a class-specific 4x4 quadrant."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(num_classes, (n,), generator=generator)
    x = torch.rand(n, *IMAGE_SHAPE, generator=generator) * 0.3
    for c in range(num_classes):
        rows, cols = divmod(c, 2)
        mask = y == c
        x[mask, 0, rows * 4:(rows + 1) * 4, cols * 4:(cols + 1) * 4] += 0.6
    return x.clamp(0, 1), y


@pytest.fixture
def blobs():
    """600 training and 200 test images of the 4-class synthetic task."""
    x, y = make_blobs(800, seed=1)
    return x[:600], y[:600], x[600:], y[600:]


def make_mlp(num_classes: int = K, seed: int = 0, activation: str = "relu", hidden: int = 32) -> MLP:
    """A seeded MLP for 1x8x8 inputs."""
    torch.manual_seed(seed)
    return MLP(num_classes=num_classes, in_features=64, hidden=hidden, activation=activation)


@pytest.fixture
def trained_mlp(blobs):
    """An MLP trained to high accuracy on the blobs task."""
    from pdblib.training import TrainConfig, train_model

    x, y, _, _ = blobs
    model = make_mlp()
    train_model(model, x, y, TrainConfig(epochs=15, batch_size=32, lr=1e-2, seed=0), progress=False)
    return model.eval()
