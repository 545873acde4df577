import pytest
import torch

from pdblib.core.transition import STRATEGIES, logit_margin, synthesize_transition_samples
from pdblib.training import predict_logits
from pdblib.utils import InputError, make_generator
from tests.conftest import K


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_samples_have_shape_range_and_label(trained_mlp, blobs, strategy):
    x, _, _, _ = blobs
    result = synthesize_transition_samples(trained_mlp, x, 50, strategy=strategy, generator=make_generator(0))
    assert result.x.shape[1:] == x.shape[1:]
    assert 0 < len(result) <= 50
    assert result.x.min() >= 0 and result.x.max() <= 1
    assert (result.y == K).all()
    assert result.strategy == strategy


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_same_seed_same_samples(trained_mlp, blobs, strategy):
    x, _, _, _ = blobs
    first = synthesize_transition_samples(trained_mlp, x, 30, strategy=strategy, generator=make_generator(7))
    second = synthesize_transition_samples(trained_mlp, x, 30, strategy=strategy, generator=make_generator(7))
    assert torch.equal(first.x, second.x)


def test_margin_samples_within_threshold(trained_mlp, blobs):
    x, _, _, _ = blobs
    threshold = 0.5
    result = synthesize_transition_samples(trained_mlp, x, 80, strategy="margin", margin_threshold=threshold,
                                           generator=make_generator(1))
    assert len(result) == 80
    margins = logit_margin(predict_logits(trained_mlp, result.x))
    assert (margins < threshold).all()
    assert torch.allclose(margins, result.margin)


def test_bisection_lands_near_boundary(trained_mlp, blobs):
    x, _, _, _ = blobs
    benign_margin = logit_margin(predict_logits(trained_mlp, x)).median()
    result = synthesize_transition_samples(trained_mlp, x, 100, strategy="bisection", band=0.0,
                                           bisection_steps=16, generator=make_generator(2))
    assert result.margin.median() < 0.1 * benign_margin
    assert result.margin.median() < 0.05


def test_mixup_weight_stays_in_band(trained_mlp):
    # Two constant images: the mix weight is recoverable from any pixel.
    x = torch.cat([torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)])
    x[0, 0, :4, :4] = 0.0
    model = trained_mlp
    pred = predict_logits(model, x).argmax(dim=1)
    if pred[0] == pred[1]:
        pytest.skip("the trained model predicts both constant images as one class")
    result = synthesize_transition_samples(model, x, 40, strategy="mixup", mix_width=0.1,
                                           generator=make_generator(3))
    weight = result.x[:, 0, 7, 7]  # 1 - lambda or lambda, by the pair's order
    assert ((weight >= 0.4 - 1e-6) & (weight <= 0.6 + 1e-6)).all()


def test_unknown_strategy_rejected(trained_mlp, blobs):
    x, _, _, _ = blobs
    with pytest.raises(InputError, match="unknown transition strategy"):
        synthesize_transition_samples(trained_mlp, x, 10, strategy="gan", generator=make_generator(0))


def test_single_class_input_rejected(trained_mlp, blobs):
    x, _, _, _ = blobs
    pred = predict_logits(trained_mlp, x).argmax(dim=1)
    same = x[pred == pred[0]]
    with pytest.raises(InputError, match="same predicted class"):
        synthesize_transition_samples(trained_mlp, same, 10, strategy="bisection", generator=make_generator(0))
