import pytest
import torch

from pdblib.core.head import extend_head
from pdblib.core.inference import FLIP_FORMS, PDBDefense, calibrate_threshold, input_keys, transition_scores
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def _pdb_model(transition_bias: float = 0.0, seed: int = 0):
    model = make_mlp(seed=seed)
    extended = extend_head(model, generator=make_generator(seed), weight_std=1.0,
                           transition_bias=transition_bias)
    return extended.eval()


def _defense(flip_form="onehot_random", threshold=0.0, transition_bias=0.0, secret_seed=0):
    return PDBDefense(_pdb_model(transition_bias), K, threshold=threshold, flip_form=flip_form,
                      secret_seed=secret_seed, input_shape=IMAGE_SHAPE)


@pytest.mark.parametrize("flip_form", FLIP_FORMS)
def test_answers_have_k_entries_and_sum_to_one(flip_form):
    defense = _defense(flip_form, threshold=-0.5)
    x, _ = make_blobs(200, seed=3)
    answer = defense.answer(x)
    assert answer.probs.shape == (200, K)
    assert answer.labels.shape == (200,)
    assert (answer.probs >= 0).all()
    assert torch.allclose(answer.probs.sum(dim=1), torch.ones(200), atol=1e-5)
    assert answer.flipped.any() and not answer.flipped.all()


@pytest.mark.parametrize("flip_form", FLIP_FORMS)
def test_transition_class_never_leaks(flip_form):
    defense = _defense(flip_form, transition_bias=100.0)  # every input lands in the transition class
    x, _ = make_blobs(50, seed=4)
    answer = defense.answer(x)
    assert answer.flipped.all()
    assert answer.probs.shape == (50, K)
    assert (answer.labels < K).all()


@pytest.mark.parametrize("flip_form", FLIP_FORMS)
def test_flipped_answers_have_wrong_top1(flip_form):
    defense = _defense(flip_form, threshold=-0.5)
    x, _ = make_blobs(200, seed=5)
    answer = defense.answer(x)
    unflipped = defense.reference_labels(x)
    assert (answer.labels[answer.flipped] != unflipped[answer.flipped]).all()
    assert torch.equal(answer.labels[~answer.flipped], unflipped[~answer.flipped])


def test_normal_answers_are_renormalized_posteriors():
    defense = _defense(threshold=1e9)
    x, _ = make_blobs(30, seed=6)
    logits = defense.logits(x)
    full = torch.softmax(logits, dim=1)
    expected = full[:, :K] / full[:, :K].sum(dim=1, keepdim=True)
    assert torch.allclose(defense.answer(x).probs, expected, atol=1e-6)


@pytest.mark.parametrize("flip_form", FLIP_FORMS)
def test_flips_are_deterministic(flip_form):
    defense = _defense(flip_form, threshold=-0.5)
    x, _ = make_blobs(100, seed=7)
    first = defense.answer(x)
    again = defense.answer(x)
    alone = torch.cat([defense.answer(x[i:i + 1]).probs for i in range(len(x))])
    reversed_batch = defense.answer(x.flip(0)).probs.flip(0)
    assert torch.equal(first.probs, again.probs)
    assert torch.allclose(first.probs, alone, atol=1e-6)
    assert torch.allclose(first.probs, reversed_batch, atol=1e-6)


def test_secret_seed_changes_random_flips():
    x, _ = make_blobs(300, seed=8)
    a = _defense("onehot_random", threshold=-1e9, secret_seed=1).answer(x).labels
    b = _defense("onehot_random", threshold=-1e9, secret_seed=2).answer(x).labels
    assert (a != b).any()


def test_keyed_random_flip_covers_every_wrong_class():
    x, _ = make_blobs(400, seed=9)
    defense = _defense("onehot_random", threshold=-1e9)
    answer = defense.answer(x)
    offsets = (answer.labels - defense.reference_labels(x)) % K
    assert set(offsets.tolist()) == set(range(1, K))


def test_input_keys_ignore_float_noise_below_quantization():
    x, _ = make_blobs(20, seed=10)
    x = (x * 255).round() / 255
    assert torch.equal(input_keys(x, 3), input_keys((x + 1e-4).clamp(0, 1), 3))


def test_calibration_hits_target_on_synthetic_scores():
    generator = make_generator(0)
    calibration = torch.randn(20000, generator=generator)
    fresh = torch.randn(20000, generator=generator)
    for target in (0.005, 0.01, 0.05):
        threshold = calibrate_threshold(calibration, target)
        assert float((calibration > threshold).float().mean()) <= target
        assert float((fresh > threshold).float().mean()) == pytest.approx(target, abs=0.3 * target + 0.002)


def test_defense_calibrate_sets_rate_on_validation():
    defense = _defense()
    x, _ = make_blobs(1000, seed=11)
    defense.calibrate(x, 0.02)
    assert float(defense.answer(x).flipped.float().mean()) <= 0.02


@pytest.mark.parametrize("bad", [torch.tensor([]), torch.tensor([[1.0, float("nan")]])])
def test_calibration_rejects_bad_scores(bad):
    with pytest.raises(InputError):
        calibrate_threshold(bad.flatten() if bad.numel() == 0 else bad[0], 0.01)


def test_calibration_rejects_bad_rate():
    with pytest.raises(InputError, match="target_flip_rate"):
        calibrate_threshold(torch.randn(10), 1.5)


def test_defense_rejects_k_output_model():
    with pytest.raises(InputError, match="K\\+1"):
        PDBDefense(make_mlp(), K, input_shape=IMAGE_SHAPE)


def test_defense_rejects_unknown_flip_form():
    with pytest.raises(InputError, match="unknown flip form"):
        PDBDefense(_pdb_model(), K, flip_form="invert", input_shape=IMAGE_SHAPE)


def test_transition_scores_shape_check():
    with pytest.raises(InputError, match="shape"):
        transition_scores(torch.zeros(3, K), K)


def test_unkeyed_flips_change_between_calls():
    x, _ = make_blobs(300, seed=12)
    defense = PDBDefense(_pdb_model(), K, threshold=-1e9, flip_form="onehot_random", deterministic_flips=False,
                         input_shape=IMAGE_SHAPE)
    first = defense.answer(x).labels
    second = defense.answer(x).labels
    assert not defense.deterministic
    assert (first != second).any()
    assert (first != defense.reference_labels(x)).all()


def test_unkeyed_option_keeps_other_forms_deterministic():
    defense = PDBDefense(_pdb_model(), K, flip_form="swap_top2", deterministic_flips=False, input_shape=IMAGE_SHAPE)
    assert defense.deterministic
