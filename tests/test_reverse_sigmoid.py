import pytest
import torch

from pdblib.defenses import ReverseSigmoid
from pdblib.defenses.reverse_sigmoid import reverse_sigmoid
from pdblib.utils import InputError
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def test_gamma_one_hand_value():
    # With gamma = 1, s(s^-1(p)) = p, so q = p - beta (p - 1/2) = (1 - beta) p + beta / 2.
    # beta = 0.5, p = (0.7, 0.2, 0.1, 0.0): q = (0.60, 0.35, 0.30, 0.25), sum 1.5,
    # renormalized (0.4, 0.2333, 0.2, 0.1667). p = 0 is clamped to 1e-6, which moves q by 5e-7.
    probs = torch.tensor([[0.7, 0.2, 0.1, 0.0]])
    expected = torch.tensor([[0.6, 0.35, 0.3, 0.25]]) / 1.5
    assert torch.allclose(reverse_sigmoid(probs, beta=0.5, gamma=1.0), expected, atol=1e-5)


def test_gamma_two_hand_value():
    # s(2 s^-1(p)) = p^2 / (p^2 + (1 - p)^2): 0.64 / 0.68 = 0.941176 at p = 0.8, 0.04 / 0.68 = 0.058824 at 0.2.
    # beta = 0.4: q = (0.8 - 0.4 * 0.441176, 0.2 + 0.4 * 0.441176) = (0.623529, 0.376471), sum 1.
    probs = torch.tensor([[0.8, 0.2]])
    expected = torch.tensor([[0.623529, 0.376471]])
    assert torch.allclose(reverse_sigmoid(probs, beta=0.4, gamma=2.0), expected, atol=1e-5)


@pytest.mark.parametrize("row", [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
def test_extreme_probs_stay_finite(row):
    out = reverse_sigmoid(torch.tensor([row]), beta=0.7, gamma=0.2)
    assert torch.isfinite(out).all()
    assert (out >= 0).all()
    assert torch.allclose(out.sum(dim=1), torch.ones(1), atol=1e-6)
    assert out.argmax(dim=1).item() == torch.tensor(row).argmax().item()


def test_top1_restored_by_swap():
    # gamma = 5, beta = 1, p = (0.55, 0.45): s^-1(0.55) = 0.2007, s(5 * 0.2007) = 0.7317, so
    # q = (0.55 - 0.2317, 0.45 + 0.2317) = (0.3183, 0.6817), sum 1. The top-1 moved to class 1;
    # swapping restores it: (0.6817, 0.3183).
    out = reverse_sigmoid(torch.tensor([[0.55, 0.45]]), beta=1.0, gamma=5.0)
    assert torch.allclose(out, torch.tensor([[0.6817, 0.3183]]), atol=1e-4)


def test_random_posteriors_keep_top1():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(4 * torch.randn(500, 10, generator=generator), dim=1)
    for beta, gamma in [(0.2, 0.1), (1.0, 0.2), (3.0, 2.0)]:
        out = reverse_sigmoid(probs, beta, gamma)
        assert torch.equal(out.argmax(dim=1), probs.argmax(dim=1)), (beta, gamma)


def test_defense_changes_posterior():
    model = make_mlp(seed=1)
    with torch.no_grad():
        model.head.weight.mul_(10)  # spread the posteriors so that the perturbation is visible
    x, _ = make_blobs(30, seed=2)
    answer = ReverseSigmoid(model, K, beta=1.0, gamma=0.2, input_shape=IMAGE_SHAPE).answer(x)
    plain = torch.softmax(model(x), dim=1).detach()
    assert (answer.probs - plain).abs().sum(dim=1).min() > 1e-3


@pytest.mark.parametrize("knobs", [{"beta": 0.0}, {"beta": -1.0}, {"gamma": 0.0}, {"gamma": float("inf")},
                                   {"beta": float("nan")}])
def test_rejects_bad_knobs(knobs):
    with pytest.raises(InputError, match=next(iter(knobs))):
        ReverseSigmoid(make_mlp(), K, input_shape=IMAGE_SHAPE, **knobs)
