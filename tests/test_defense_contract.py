"""One contract over every registered defense: shapes, simplex, top-1, determinism, input checks."""

import pytest
import torch

from pdblib.core.head import extend_head
from pdblib.defenses import DEFENSES, build_defense
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def _pdb(model):
    extended = extend_head(model, generator=make_generator(0), weight_std=1.0).eval()
    return build_defense("pdb", extended, K, threshold=-0.5, input_shape=IMAGE_SHAPE)


# Knobs are set so that every perturbation is active on the blobs task with an untrained MLP,
# whose posteriors are close to uniform.
FACTORIES = {
    "undefended": lambda model: build_defense("undefended", model, K, input_shape=IMAGE_SHAPE),
    "label_only": lambda model: build_defense("label_only", model, K, input_shape=IMAGE_SHAPE),
    "rounding": lambda model: build_defense("rounding", model, K, decimals=1, input_shape=IMAGE_SHAPE),
    "gaussian_noise": lambda model: build_defense("gaussian_noise", model, K, sigma=0.2, input_shape=IMAGE_SHAPE),
    "reverse_sigmoid": lambda model: build_defense("reverse_sigmoid", model, K, beta=2.0, gamma=0.5,
                                                   input_shape=IMAGE_SHAPE),
    "mad": lambda model: build_defense("mad", model, K, epsilon=0.8, input_shape=IMAGE_SHAPE),
    "mad_argmax": lambda model: build_defense("mad", model, K, epsilon=0.8, oracle="argmax",
                                              input_shape=IMAGE_SHAPE),
    "adaptive_misinformation": lambda model: build_defense(
        "adaptive_misinformation", model, K, misinformation_model=make_mlp(seed=7).eval(), tau=0.5,
        input_shape=IMAGE_SHAPE),
    "bdpl": lambda model: build_defense("bdpl", model, K, zone_width=0.5, epsilon=0.5, input_shape=IMAGE_SHAPE),
    "bdpl_onehot": lambda model: build_defense("bdpl", model, K, zone_width=0.5, answer_form="onehot",
                                               input_shape=IMAGE_SHAPE),
    "pdb": _pdb,
}


def test_factories_cover_registry():
    covered = {name.removesuffix("_argmax").removesuffix("_onehot") for name in FACTORIES}
    assert covered == set(DEFENSES)


@pytest.fixture(params=sorted(FACTORIES))
def defense(request):
    return FACTORIES[request.param](make_mlp(seed=3))


@pytest.fixture
def queries():
    x, _ = make_blobs(64, seed=21)
    return x


def test_answer_shapes(defense, queries):
    answer = defense.answer(queries)
    assert answer.probs.shape == (64, K)
    assert answer.labels.shape == (64,)
    assert answer.labels.dtype == torch.int64
    assert answer.flipped.shape == (64,)
    assert answer.flipped.dtype == torch.bool


def test_answer_on_simplex(defense, queries):
    probs = defense.answer(queries).probs
    assert torch.isfinite(probs).all()
    assert (probs >= 0).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(64), atol=1e-5)


def test_labels_are_maximal_entries(defense, queries):
    answer = defense.answer(queries)
    chosen = answer.probs.gather(1, answer.labels[:, None]).squeeze(1)
    assert torch.allclose(chosen, answer.probs.max(dim=1).values)


def test_flipped_marks_changed_top1(defense, queries):
    answer = defense.answer(queries)
    reference = defense.reference_labels(queries)
    assert torch.equal(answer.flipped, answer.labels != reference)


def test_keeps_top1_when_declared(defense, queries):
    if not defense.keeps_top1:
        pytest.skip(f"{defense.name} may change the top-1")
    answer = defense.answer(queries)
    assert torch.equal(answer.labels, defense.reference_labels(queries))
    assert not answer.flipped.any()


def test_deterministic_across_batches(defense, queries):
    if not defense.deterministic:
        pytest.skip(f"{defense.name} is randomized per query")
    first = defense.answer(queries).probs
    again = defense.answer(queries).probs
    reversed_batch = defense.answer(queries.flip(0)).probs.flip(0)
    alone = torch.cat([defense.answer(queries[i:i + 1]).probs for i in range(8)])
    assert torch.equal(first, again)
    assert torch.allclose(first, reversed_batch, atol=1e-5)
    assert torch.allclose(first[:8], alone, atol=1e-5)


def test_config_names_defense(defense):
    assert defense.config()["name"] == defense.name


BAD_BATCHES = {
    "no_batch_dim": lambda x: x[0],
    "wrong_size": lambda x: x[:, :, :4, :4],
    "wrong_channels": lambda x: x.repeat(1, 3, 1, 1),
    "uint8": lambda x: (x * 255).to(torch.uint8),
    "nan": lambda x: torch.where(torch.arange(x.numel()).reshape(x.shape) == 5, float("nan"), x),
    "inf": lambda x: torch.where(torch.arange(x.numel()).reshape(x.shape) == 7, float("inf"), x),
    "minus_inf": lambda x: torch.where(torch.arange(x.numel()).reshape(x.shape) == 7, float("-inf"), x),
    "above_one": lambda x: x + 1.5,
    "below_zero": lambda x: x - 1.5,
    "empty": lambda x: x[:0],
}


@pytest.mark.parametrize("case", sorted(BAD_BATCHES))
def test_rejects_bad_batch(defense, queries, case):
    with pytest.raises(InputError):
        defense.answer(BAD_BATCHES[case](queries))


@pytest.mark.parametrize(("case", "match"), [("nan", "1 NaN or infinite"), ("inf", "1 NaN or infinite"),
                                             ("minus_inf", "1 NaN or infinite"), ("above_one", r"expected \[0, 1\]")])
def test_bad_values_are_named(queries, case, match):
    from pdblib.utils import validate_images

    with pytest.raises(InputError, match=match):
        validate_images(BAD_BATCHES[case](queries))


def test_unknown_name_lists_choices():
    with pytest.raises(InputError, match="rounding"):
        build_defense("rounded", make_mlp(), K)
