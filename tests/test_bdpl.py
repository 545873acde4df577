import math

import pytest
import torch

from pdblib.defenses import BDPL
from pdblib.defenses.bdpl import flip_probability, top2_margin
from pdblib.training import predict_logits
from pdblib.utils import InputError
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def _victim():
    model = make_mlp(seed=2)
    with torch.no_grad():
        model.head.weight.mul_(15)  # spread the margins over [0, 1]
    return model.eval()


def _margins(model, x):
    return top2_margin(torch.softmax(predict_logits(model, x), dim=1))


def test_flip_probability_hand_values():
    # 1 / (e^0 + 1) = 1/2; 1 / (e^1 + 1) = 0.268941.
    assert flip_probability(0.0) == pytest.approx(0.5)
    assert flip_probability(1.0) == pytest.approx(1 / (math.e + 1))


def test_flips_only_inside_zone():
    model = _victim()
    x, _ = make_blobs(400, seed=3)
    answer = BDPL(model, K, zone_width=0.3, epsilon=0.0, input_shape=IMAGE_SHAPE).answer(x)
    margins = _margins(model, x)
    assert answer.flipped.any()
    assert (margins[answer.flipped] < 0.3).all()
    assert (margins >= 0.3).any()


def test_outside_zone_unchanged():
    model = _victim()
    x, _ = make_blobs(400, seed=4)
    answer = BDPL(model, K, zone_width=0.3, epsilon=0.0, input_shape=IMAGE_SHAPE).answer(x)
    outside = _margins(model, x) >= 0.3
    plain = torch.softmax(predict_logits(model, x), dim=1)
    assert torch.equal(answer.probs[outside], plain[outside])


def test_flip_goes_to_runner_up():
    model = _victim()
    x, _ = make_blobs(400, seed=5)
    answer = BDPL(model, K, zone_width=1.0, epsilon=0.0, input_shape=IMAGE_SHAPE).answer(x)
    runner_up = torch.softmax(predict_logits(model, x), dim=1).topk(2, dim=1).indices[:, 1]
    assert torch.equal(answer.labels[answer.flipped], runner_up[answer.flipped])


def test_flip_rate_matches_randomized_response():
    model = _victim()
    x, _ = make_blobs(3000, seed=6)
    answer = BDPL(model, K, zone_width=1.0, epsilon=1.0, input_shape=IMAGE_SHAPE).answer(x)
    # Every query is in a zone of width 1; the expected flip rate is 0.269, and the standard
    # error over 3000 queries is 0.008.
    assert answer.flipped.float().mean().item() == pytest.approx(flip_probability(1.0), abs=0.04)


def test_repeated_queries_consistent():
    model = _victim()
    x, _ = make_blobs(100, seed=7)
    defense = BDPL(model, K, zone_width=1.0, epsilon=0.0, input_shape=IMAGE_SHAPE)
    repeated = torch.cat([x, x, x])
    answer = defense.answer(repeated)
    assert torch.equal(answer.labels[:100], answer.labels[100:200])
    assert torch.equal(answer.labels[:100], answer.labels[200:])
    assert torch.equal(defense.answer(x).labels, answer.labels[:100])


def test_zero_width_never_flips():
    model = _victim()
    x, _ = make_blobs(200, seed=8)
    answer = BDPL(model, K, zone_width=0.0, epsilon=0.0, input_shape=IMAGE_SHAPE).answer(x)
    assert not answer.flipped.any()


def test_logit_margin_zone():
    model = _victim()
    x, _ = make_blobs(400, seed=9)
    answer = BDPL(model, K, zone_width=2.0, epsilon=0.0, margin_on="logits", input_shape=IMAGE_SHAPE).answer(x)
    logit_margins = top2_margin(predict_logits(model, x))
    assert answer.flipped.any()
    assert (logit_margins[answer.flipped] < 2.0).all()


def test_onehot_answers_are_labels():
    model = _victim()
    x, _ = make_blobs(100, seed=10)
    answer = BDPL(model, K, zone_width=0.5, answer_form="onehot", input_shape=IMAGE_SHAPE).answer(x)
    assert torch.equal(answer.probs, torch.nn.functional.one_hot(answer.labels, K).float())


@pytest.mark.parametrize("knobs", [{"zone_width": -0.1}, {"zone_width": 1.5}, {"epsilon": -1.0},
                                   {"epsilon": float("nan")}, {"margin_on": "features"},
                                   {"answer_form": "swap"}])
def test_rejects_bad_knobs(knobs):
    name = next(iter(knobs)).replace("margin_on", "margin space").replace("answer_form", "answer form")
    with pytest.raises(InputError, match=name):
        BDPL(make_mlp(), K, input_shape=IMAGE_SHAPE, **knobs)


def test_logit_zone_accepts_wide_width():
    assert BDPL(make_mlp(), K, zone_width=5.0, margin_on="logits", input_shape=IMAGE_SHAPE).zone_width == 5.0
