import pytest
import torch

from pdblib.attacks import HardLabelView, QueryOracle
from pdblib.attacks.adaptive import (AveragingAttack, FlipAwareAttack, HardLabelKnockoff, aggregate_answers,
                                     flip_filter)
from pdblib.attacks.copycat import CopycatCNN
from pdblib.defenses import Undefended
from pdblib.training import TrainConfig, train_model
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp

CLONE = {"clone_model": "mlp", "clone_train": TrainConfig(epochs=1, batch_size=16, lr=1e-2), "progress": False}


@pytest.fixture(autouse=True)
def small_clone_model(monkeypatch):
    from pdblib import models

    original = models.MODELS["mlp"]
    monkeypatch.setitem(models.MODELS, "mlp", lambda num_classes=10, **kw: original(num_classes, in_features=64))


@pytest.fixture(scope="module")
def victim():
    x, y = make_blobs(300, seed=1)
    model = make_mlp()
    train_model(model, x, y, TrainConfig(epochs=8, batch_size=32, lr=1e-2, seed=0), progress=False)
    return model.eval()


def _oracle(budget, output="probs", model=None):
    return QueryOracle(Undefended(model or make_mlp(seed=1), K, input_shape=IMAGE_SHAPE), budget, output=output)


def test_hard_label_view_returns_top1_and_counts():
    oracle = _oracle(20)
    view = HardLabelView(oracle)
    x, _ = make_blobs(6, seed=2)
    labels = view.query(x)
    assert labels.dtype == torch.int64
    assert torch.equal(labels, oracle.log.answers[0].argmax(dim=1))
    assert view.used == 6
    assert view.remaining == 14


@pytest.mark.parametrize("cls", [HardLabelKnockoff, CopycatCNN])
def test_hard_label_attacks_train_on_labels(cls):
    pool, _ = make_blobs(40, seed=3)
    oracle = _oracle(30, output="probs")
    result = cls(**CLONE).run(oracle, pool, [30])
    assert result.transfer.y.shape == (30,)
    assert result.transfer.y.dtype == torch.int64
    assert oracle.used == 30


def test_aggregate_mean_of_posteriors():
    answers = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0]])
    expected = torch.tensor([[0.5, 0.5, 0, 0], [0.25, 0.25, 0.5, 0]])
    assert torch.allclose(aggregate_answers(answers, 2, K), expected)


def test_aggregate_majority_vote():
    answers = torch.tensor([2, 2, 1, 3, 0, 3])
    assert aggregate_answers(answers, 3, K).tolist() == [2, 3]


def test_aggregate_tie_goes_to_lowest_class():
    assert aggregate_answers(torch.tensor([3, 1]), 2, K).tolist() == [1]


def test_aggregate_vote_fractions():
    votes = aggregate_answers(torch.tensor([2, 2, 1]), 3, K, label_target="votes")
    assert torch.allclose(votes, torch.tensor([[0.0, 1 / 3, 2 / 3, 0.0]]))


def test_aggregate_rejects_partial_group():
    with pytest.raises(InputError, match="groups of 3"):
        aggregate_answers(torch.tensor([0, 1]), 3, K)


def test_averaging_spends_repeats_per_answer():
    pool, _ = make_blobs(40, seed=3)
    oracle = _oracle(40)
    attack = AveragingAttack(repeats=3, **CLONE)
    transfer = attack.collect(oracle, pool, 40)
    assert len(transfer) == 13
    assert oracle.used == 39
    assert transfer.spent.tolist() == [3 * (i + 1) for i in range(13)]
    assert len(transfer.within_budget(20)) == 6


def test_averaging_target_is_mean_of_copy_answers():
    pool, _ = make_blobs(40, seed=3)
    oracle = _oracle(12)
    transfer = AveragingAttack(repeats=4, **CLONE).collect(oracle, pool, 12)
    answers = torch.cat(oracle.log.answers)
    assert torch.allclose(transfer.y, answers.reshape(3, 4, K).mean(dim=1))


def test_averaging_copies_jittered_in_unit_box():
    images, _ = make_blobs(5, seed=4)
    copies = AveragingAttack(repeats=3, noise_std=0.05, **CLONE).make_copies(images, make_generator(0))
    assert copies.shape == (15, *IMAGE_SHAPE)
    assert torch.equal(copies[::3], images)
    assert copies.min() >= 0
    assert copies.max() <= 1
    assert not torch.equal(copies[1], images[0])


def test_averaging_clone_budgets():
    pool, _ = make_blobs(40, seed=3)
    result = AveragingAttack(repeats=3, **CLONE).run(_oracle(30, output="labels"), pool, [15, 30])
    assert sorted(result.clones) == [15, 30]
    assert result.queries_used == 30


def test_averaging_rejects_budget_below_repeats():
    pool, _ = make_blobs(10, seed=3)
    with pytest.raises(InputError, match="below repeats"):
        AveragingAttack(repeats=5, **CLONE).collect(_oracle(4), pool, 4)


def test_flip_filter_drops_implausible_answers():
    clone_probs = torch.tensor([[0.9, 0.05, 0.03, 0.02], [0.7, 0.2, 0.05, 0.05], [0.25, 0.25, 0.25, 0.25]])
    answers = torch.tensor([0, 3, 2])
    keep = flip_filter(clone_probs, answers, min_clone_prob=0.1, max_drop_fraction=1.0)
    assert keep.tolist() == [True, False, True]


def test_flip_filter_reads_posterior_answers():
    clone_probs = torch.tensor([[0.9, 0.05, 0.03, 0.02], [0.9, 0.05, 0.03, 0.02]])
    answers = torch.tensor([[0.1, 0.8, 0.05, 0.05], [0.6, 0.2, 0.1, 0.1]])
    keep = flip_filter(clone_probs, answers, min_clone_prob=0.1, max_drop_fraction=1.0)
    assert keep.tolist() == [False, True]


def test_flip_filter_caps_drops_at_lowest():
    clone_probs = torch.tensor([[0.01, 0.99, 0, 0], [0.05, 0.95, 0, 0], [0.02, 0.98, 0, 0], [0.9, 0.1, 0, 0]])
    answers = torch.zeros(4, dtype=torch.int64)
    keep = flip_filter(clone_probs, answers, min_clone_prob=0.1, max_drop_fraction=0.5)
    assert keep.tolist() == [False, True, False, True]


def test_flip_aware_drops_flipped_labels(victim):
    x, _ = make_blobs(60, seed=7)
    labels = victim(x).argmax(dim=1)
    flipped = torch.zeros(60, dtype=torch.bool)
    flipped[::10] = True
    answers = torch.where(flipped, (labels + 1) % K, labels)
    attack = FlipAwareAttack(min_clone_prob=0.1, max_drop_fraction=0.3, **CLONE)
    keep = attack.filter_answers(victim, x, answers)
    assert not keep[flipped].any()
    assert keep[~flipped].float().mean() >= 0.9


def test_flip_aware_reports_kept_and_dropped(victim):
    pool, _ = make_blobs(50, seed=8)
    result = FlipAwareAttack(**CLONE).run(_oracle(40, model=victim), pool, [20, 40])
    assert sorted(result.clones) == [20, 40]
    assert result.info[40]["kept"] + result.info[40]["dropped"] == 40
    assert result.info[40]["dropped"] <= 12  # max_drop_fraction 0.3 of 40


@pytest.mark.parametrize("cls, kwargs, message", [
    (AveragingAttack, {"repeats": 0}, "repeats"),
    (AveragingAttack, {"noise_std": -0.1}, "noise_std"),
    (AveragingAttack, {"label_target": "median"}, "label target"),
    (FlipAwareAttack, {"probe_fraction": 0.0}, "probe_fraction"),
    (FlipAwareAttack, {"min_clone_prob": 1.0}, "min_clone_prob"),
    (FlipAwareAttack, {"max_drop_fraction": 1.5}, "max_drop_fraction"),
])
def test_adaptive_attacks_reject_bad_knobs(cls, kwargs, message):
    with pytest.raises(InputError, match=message):
        cls(**CLONE, **kwargs)
