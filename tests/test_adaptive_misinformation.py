import math

import pytest
import torch

from pdblib.defenses import AdaptiveMisinformation
from pdblib.defenses.adaptive_misinformation import (
    make_outlier_set, misinformation_loss, misinformation_weight, train_misinformation_model,
    train_outlier_exposure,
)
from pdblib.training import TrainConfig, predict_logits
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def _constant_model(logits):
    """An MLP whose output is ``logits`` for every input."""
    model = make_mlp()
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor(logits))
    return model.eval()


def _defense(victim_logits, tau=0.5, nu=1000.0):
    misinformation = _constant_model([0.0, 0.0, 0.0, 5.0])
    return AdaptiveMisinformation(_constant_model(victim_logits), K, misinformation_model=misinformation,
                                  tau=tau, nu=nu, input_shape=IMAGE_SHAPE)


def test_weight_hand_values():
    weights = misinformation_weight(torch.tensor([0.5, 0.51, 0.49]), tau=0.5, nu=1000.0)
    # 1 / (1 + e^0) = 0.5; 1 / (1 + e^10) = 4.54e-5; 1 / (1 + e^-10) = 1 - 4.54e-5.
    expected = torch.tensor([0.5, 1 / (1 + math.exp(10)), 1 / (1 + math.exp(-10))])
    assert torch.allclose(weights, expected, atol=1e-7)


def test_confident_query_gets_victim_posterior():
    defense = _defense([10.0, 0.0, 0.0, 0.0])  # max prob 0.99986, far above tau = 0.5
    x, _ = make_blobs(5, seed=1)
    answer = defense.answer(x)
    victim = torch.softmax(torch.tensor([10.0, 0.0, 0.0, 0.0]), dim=0)
    assert torch.allclose(answer.probs, victim.expand(5, K), atol=1e-6)
    assert not answer.flipped.any()


def test_unconfident_query_gets_misinformation():
    defense = _defense([0.0, 0.0, 0.0, 0.0])  # max prob 0.25, far below tau = 0.5
    x, _ = make_blobs(5, seed=2)
    answer = defense.answer(x)
    misinformation = torch.softmax(torch.tensor([0.0, 0.0, 0.0, 5.0]), dim=0)
    assert torch.allclose(answer.probs, misinformation.expand(5, K), atol=1e-6)
    assert answer.flipped.all()


def test_mixed_batch_by_confidence():
    victim = make_mlp(seed=4)
    with torch.no_grad():
        victim.head.weight.mul_(20)  # spread the max probs over a wide range
    misinformation = make_mlp(seed=5).eval()
    defense = AdaptiveMisinformation(victim, K, misinformation_model=misinformation, tau=0.6,
                                     input_shape=IMAGE_SHAPE)
    x, _ = make_blobs(200, seed=3)
    y = torch.softmax(predict_logits(victim, x), dim=1)
    y_mis = torch.softmax(predict_logits(misinformation, x), dim=1)
    out = defense.answer(x).probs
    confident = y.max(dim=1).values > 0.62
    unconfident = y.max(dim=1).values < 0.58
    assert confident.any()
    assert unconfident.any()
    assert torch.allclose(out[confident], y[confident], atol=1e-4)
    assert torch.allclose(out[unconfident], y_mis[unconfident], atol=1e-4)


def test_misinformation_loss_hand_value():
    model = _constant_model([0.0, 0.0, 0.0, 0.0])
    x, _ = make_blobs(3, seed=4)
    loss, _, _ = misinformation_loss(model, x, torch.zeros(3, dtype=torch.int64))
    # p_y = 1/4, so -log(1 - 1/4) = log(4/3).
    assert loss.item() == pytest.approx(math.log(4 / 3), abs=1e-6)


def test_misinformation_loss_finite_when_confident():
    model = _constant_model([100.0, 0.0, 0.0, 0.0])  # p_y rounds to 1 in float32
    x, _ = make_blobs(3, seed=5)
    loss, _, _ = misinformation_loss(model, x, torch.zeros(3, dtype=torch.int64))
    assert math.isfinite(loss.item())
    assert loss.item() == pytest.approx(100.0 - math.log(3), abs=1e-3)


def test_misinformation_training_lowers_true_class(blobs):
    x, y, x_test, y_test = blobs
    model = make_mlp(seed=6)
    train_misinformation_model(model, x, y, TrainConfig(epochs=3, batch_size=64, lr=1e-2), progress=False)
    probs = torch.softmax(predict_logits(model, x_test), dim=1)
    true_prob = probs.gather(1, y_test[:, None]).squeeze(1)
    assert true_prob.mean() < 0.05


def test_outlier_exposure_lowers_outlier_confidence(blobs):
    x, y, x_test, y_test = blobs
    outliers = make_outlier_set(x, 600, make_generator(0), method="pixel_permute")
    held_out = make_outlier_set(x_test, 200, make_generator(1), method="pixel_permute")
    model = make_mlp(seed=7)
    train_outlier_exposure(model, x, y, outliers, TrainConfig(epochs=8, batch_size=32, lr=1e-2), progress=False)
    test_conf = torch.softmax(predict_logits(model, x_test), dim=1).max(dim=1).values.mean()
    outlier_conf = torch.softmax(predict_logits(model, held_out), dim=1).max(dim=1).values.mean()
    accuracy = (predict_logits(model, x_test).argmax(dim=1) == y_test).float().mean()
    assert accuracy > 0.9
    assert outlier_conf < 0.5
    assert test_conf > 0.8


def test_outlier_set_shape_and_range():
    x, _ = make_blobs(30, seed=8)
    outliers = make_outlier_set(x, 50, make_generator(0), patch_size=2)
    assert outliers.shape == (50, *IMAGE_SHAPE)
    assert outliers.min() >= 0
    assert outliers.max() <= 1


@pytest.mark.parametrize("method", ["patch_shuffle", "pixel_permute"])
def test_outliers_keep_pixel_values(method):
    x = (torch.arange(64, dtype=torch.float32) / 63).reshape(1, *IMAGE_SHAPE)
    outliers = make_outlier_set(x, 5, make_generator(0), method=method, patch_size=2)
    for image in outliers:
        assert torch.equal(image.flatten().sort().values, x.flatten())
    assert not torch.equal(outliers[0], x[0])


def test_patch_shuffle_moves_whole_patches():
    x = (torch.arange(64, dtype=torch.float32) / 63).reshape(1, *IMAGE_SHAPE)
    out = make_outlier_set(x, 1, make_generator(3), patch_size=4)[0, 0]
    source_patches = {tuple(x[0, 0, r:r + 4, c:c + 4].flatten().tolist()) for r in (0, 4) for c in (0, 4)}
    out_patches = {tuple(out[r:r + 4, c:c + 4].flatten().tolist()) for r in (0, 4) for c in (0, 4)}
    assert out_patches == source_patches


def test_outlier_set_is_seeded():
    x, _ = make_blobs(30, seed=9)
    a = make_outlier_set(x, 10, make_generator(4), patch_size=2)
    b = make_outlier_set(x, 10, make_generator(4), patch_size=2)
    assert torch.equal(a, b)


def test_outlier_set_rejects_bad_patch_size():
    x, _ = make_blobs(4, seed=10)
    with pytest.raises(InputError, match="patch_size"):
        make_outlier_set(x, 4, make_generator(0), patch_size=3)


def test_requires_misinformation_model():
    with pytest.raises(InputError, match="misinformation_model"):
        AdaptiveMisinformation(make_mlp(), K, input_shape=IMAGE_SHAPE)


@pytest.mark.parametrize("knobs", [{"tau": -0.1}, {"tau": 1.5}, {"nu": 0.0}, {"nu": float("nan")}])
def test_rejects_bad_knobs(knobs):
    with pytest.raises(InputError, match=next(iter(knobs))):
        AdaptiveMisinformation(make_mlp(), K, misinformation_model=make_mlp(), input_shape=IMAGE_SHAPE, **knobs)


def test_rejects_misinformation_model_with_wrong_outputs():
    with pytest.raises(InputError, match="outputs"):
        AdaptiveMisinformation(make_mlp(), K, misinformation_model=make_mlp(num_classes=K + 1),
                               input_shape=IMAGE_SHAPE)
