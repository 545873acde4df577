import pytest
import torch
from torch import nn

from pdblib.analysis import deepfool_distance
from pdblib.utils import InputError


class Linear2D(nn.Module):
    """Logits W x + b on flattened 1x1x2 inputs; distances have a closed form."""

    def __init__(self, weight, bias):
        super().__init__()
        self.weight = torch.tensor(weight)
        self.bias = torch.tensor(bias)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T + self.bias


def test_deepfool_matches_closed_form_for_linear_model():
    # Two classes, boundary x0 = x1: distance |x0 - x1| / sqrt(2).
    model = Linear2D([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    x = torch.tensor([[0.9, 0.1], [0.2, 0.6], [0.5, 0.45]]).view(3, 1, 1, 2)
    expected = (x[:, 0, 0, 0] - x[:, 0, 0, 1]).abs() / 2 ** 0.5
    distance = deepfool_distance(model, x, overshoot=0.0)
    assert torch.allclose(distance, expected, rtol=1e-3, atol=1e-3)


def test_deepfool_picks_nearest_of_several_boundaries():
    # Three classes; from (1, 0) the boundary with class 1 at (1 - 0.5) / sqrt(2) is nearer than class 2's.
    model = Linear2D([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [0.0, 0.5, 0.0])
    x = torch.tensor([[1.0, 0.0]]).view(1, 1, 1, 2)
    distance = deepfool_distance(model, x, overshoot=0.0)
    assert distance.item() == pytest.approx(0.5 / 2 ** 0.5, rel=1e-3)


def test_deepfool_ignores_extra_logits():
    # A third logit that always wins must not count when num_classes=2.
    model = Linear2D([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [0.0, 0.0, 100.0])
    x = torch.tensor([[0.9, 0.1]]).view(1, 1, 1, 2)
    assert deepfool_distance(model, x, num_classes=2, overshoot=0.0).item() == pytest.approx(0.8 / 2 ** 0.5, rel=1e-3)


def test_deepfool_rejects_zero_iterations():
    with pytest.raises(InputError):
        deepfool_distance(Linear2D([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0]), torch.zeros(1, 1, 1, 2), max_iter=0)
