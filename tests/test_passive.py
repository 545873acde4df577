import pytest
import torch

from pdblib.defenses import GaussianNoise, Rounding, Undefended
from pdblib.defenses.passive import keyed_normal_noise, noisy_probs, round_probs
from pdblib.utils import InputError
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def _constant_model(logits):
    """An MLP whose output is ``logits`` for every input."""
    model = make_mlp()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(logits))
    return model.eval()


def test_rounding_exact_when_sum_is_one():
    probs = torch.tensor([[0.123, 0.456, 0.421]])
    # 0.12 + 0.46 + 0.42 = 1.00, so renormalizing changes nothing.
    assert torch.allclose(round_probs(probs, 2), torch.tensor([[0.12, 0.46, 0.42]]), atol=1e-7)


def test_rounding_renormalizes():
    probs = torch.full((1, 3), 1.0 / 3.0)
    # Each entry rounds to 0.33; the row sums to 0.99 and renormalizes back to 1/3.
    assert torch.allclose(round_probs(probs, 2), torch.full((1, 3), 1.0 / 3.0), atol=1e-7)


def test_rounding_values_on_grid():
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(200, K, generator=generator), dim=1)
    out = round_probs(probs, 1)
    totals = (torch.round(probs * 10) / 10).sum(dim=1, keepdim=True)
    scaled = out * totals * 10  # undo the renormalization: back on the 0.1 grid
    assert torch.allclose(scaled, scaled.round(), atol=1e-5)


def test_rounding_all_zero_row_becomes_onehot():
    probs = torch.tensor([[0.3, 0.3, 0.4]])
    assert torch.equal(round_probs(probs, 0), torch.tensor([[0.0, 0.0, 1.0]]))


def test_rounding_tie_keeps_top1_label():
    # softmax of these logits is about (0.504, 0.496, 0, 0); both round to 0.5 at one decimal.
    logits = [0.016, 0.0, -30.0, -30.0]
    defense = Rounding(_constant_model(logits), K, decimals=1, input_shape=IMAGE_SHAPE)
    x, _ = make_blobs(3, seed=1)
    answer = defense.answer(x)
    assert torch.allclose(answer.probs[0], torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert torch.equal(answer.labels, torch.zeros(3, dtype=torch.int64))


@pytest.mark.parametrize("decimals", [-1, 9, 1.5, True])
def test_rounding_rejects_bad_decimals(decimals):
    with pytest.raises(InputError, match="decimals"):
        Rounding(make_mlp(), K, decimals=decimals, input_shape=IMAGE_SHAPE)


def test_noise_sigma_zero_is_identity():
    model = make_mlp(seed=2)
    x, _ = make_blobs(40, seed=3)
    noisy = GaussianNoise(model, K, sigma=0.0, input_shape=IMAGE_SHAPE).answer(x)
    plain = Undefended(model, K, input_shape=IMAGE_SHAPE).answer(x)
    assert torch.equal(noisy.probs, plain.probs)
    assert not noisy.flipped.any()


def test_noise_hand_values():
    probs = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    noise = torch.tensor([[1.0, -1.0], [0.0, -1.0]])
    # Row 0 with sigma 0.1: (0.5 + 0.1, 0.5 - 0.1).
    # Row 1 with sigma 0.2: (0.9, 0.1 - 0.2) clips to (0.9, 0) and renormalizes to (1, 0).
    expected = torch.tensor([[0.6, 0.4], [1.0, 0.0]])
    assert torch.allclose(noisy_probs(probs[:1], noise[:1], 0.1), expected[:1], atol=1e-6)
    assert torch.allclose(noisy_probs(probs[1:], noise[1:], 0.2), expected[1:], atol=1e-6)


def test_noise_all_clipped_row_becomes_onehot():
    probs = torch.tensor([[0.6, 0.4]])
    noise = torch.tensor([[-10.0, -5.0]])
    assert torch.equal(noisy_probs(probs, noise, 1.0), torch.tensor([[0.0, 1.0]]))


def test_noise_depends_on_key_only():
    keys = torch.tensor([5, 7, 5])
    noise = keyed_normal_noise(keys, K, secret_seed=1)
    assert torch.equal(noise[0], noise[2])
    assert not torch.equal(noise[0], noise[1])


def test_noise_secret_seed_changes_answer():
    model = make_mlp(seed=2)
    x, _ = make_blobs(20, seed=4)
    a = GaussianNoise(model, K, sigma=0.1, secret_seed=1, input_shape=IMAGE_SHAPE).answer(x).probs
    b = GaussianNoise(model, K, sigma=0.1, secret_seed=2, input_shape=IMAGE_SHAPE).answer(x).probs
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("sigma", [-0.1, 11.0, float("nan")])
def test_noise_rejects_bad_sigma(sigma):
    with pytest.raises(InputError, match="sigma"):
        GaussianNoise(make_mlp(), K, sigma=sigma, input_shape=IMAGE_SHAPE)
