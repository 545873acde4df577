import math

import pytest
import torch

from pdblib.attacks import QueryOracle
from pdblib.attacks.knockoff import (KnockoffAdaptive, RunningNorm, certainty_reward, diversity_reward, kmeans,
                                     loss_reward)
from pdblib.defenses import Undefended
from pdblib.training import TrainConfig
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


@pytest.fixture(autouse=True)
def small_clone_model(monkeypatch):
    from pdblib import models

    original = models.MODELS["mlp"]
    monkeypatch.setitem(models.MODELS, "mlp", lambda num_classes=10, **kw: original(num_classes, in_features=64))


def _attack(**kwargs):
    knobs = {"num_clusters": 4, "images_per_step": 8, "kmeans_iterations": 10, **kwargs}
    return KnockoffAdaptive(clone_model="mlp", clone_train=TrainConfig(epochs=1, batch_size=16, lr=1e-2),
                            progress=False, **knobs)


def _oracle(budget, output="probs"):
    return QueryOracle(Undefended(make_mlp(seed=1), K, input_shape=IMAGE_SHAPE), budget, output=output)


def test_certainty_reward_hand_worked():
    y = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
    assert torch.allclose(certainty_reward(y), torch.tensor([0.2, 0.0]))


def test_diversity_reward_hand_worked():
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    recent = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]])  # mean (0.5, 0.5, 0, 0)
    assert torch.allclose(diversity_reward(y, recent), torch.tensor([0.5, 1.0]))


def test_diversity_reward_without_history():
    assert torch.allclose(diversity_reward(torch.tensor([[0.7, 0.3, 0.0, 0.0]]), None), torch.tensor([1.0]))


def test_loss_reward_hand_worked():
    y = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(loss_reward(torch.zeros(1, K), y), torch.tensor([math.log(K)]))


def test_loss_reward_finite_for_extreme_logits():
    logits = torch.tensor([[1e4, -1e4, 0.0, 0.0]])
    y = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    assert torch.isfinite(loss_reward(logits, y)).all()


def test_running_norm_constant_stream_is_zero():
    norm = RunningNorm()
    outputs = [norm.update(0.7) for _ in range(20)]
    assert outputs == [0.0] * 20


def test_running_norm_ignores_non_finite():
    norm = RunningNorm()
    norm.update(1.0)
    assert norm.update(float("nan")) == 0.0
    assert norm.update(float("inf")) == 0.0
    assert norm.count == 1


def test_running_norm_standardizes():
    norm = RunningNorm()
    norm.update(0.0)
    assert norm.update(2.0) == pytest.approx(1.0)  # mean 1, population std 1


def test_step_reward_finite_on_constant_answers():
    attack = _attack()
    norms = {name: RunningNorm() for name in attack.rewards}
    answers = torch.full((8, K), 1.0 / K)
    rewards = [attack.step_reward(answers, torch.zeros(8, K), answers, norms) for _ in range(10)]
    assert all(math.isfinite(r) for r in rewards)
    assert rewards == [0.0] * 10


def test_preference_update_keeps_sum():
    attack = _attack()
    preferences = torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64)
    policy = torch.softmax(preferences, dim=0)
    new = attack.update_preferences(preferences, policy, 1, advantage=2.0)
    assert float(new.sum()) == pytest.approx(float(preferences.sum()))
    assert new[1] > preferences[1]
    assert (new[[0, 2]] < preferences[[0, 2]]).all()


def test_preference_update_guards_overflow():
    attack = _attack()
    preferences = torch.zeros(3, dtype=torch.float64)
    for _ in range(5):
        policy = torch.softmax(preferences, dim=0)
        preferences = attack.update_preferences(preferences, policy, 0, advantage=1e300)
    policy = torch.softmax(preferences, dim=0)
    assert torch.isfinite(policy).all()
    assert (policy > 0).all()


def test_kmeans_separates_blobs():
    generator = make_generator(0)
    x = torch.cat([torch.randn(20, 2, generator=generator), torch.randn(20, 2, generator=generator) + 10])
    assignments, _ = kmeans(x, 2, make_generator(1))
    assert len(set(assignments[:20].tolist())) == 1
    assert len(set(assignments[20:].tolist())) == 1
    assert assignments[0] != assignments[20]


def test_kmeans_same_seed_same_clusters():
    x = torch.rand(50, 5, generator=make_generator(0))
    assert torch.equal(kmeans(x, 4, make_generator(2))[0], kmeans(x, 4, make_generator(2))[0])


def test_kmeans_rejects_too_many_clusters():
    with pytest.raises(InputError, match="num_clusters"):
        kmeans(torch.rand(3, 2), 5, make_generator(0))


@pytest.mark.parametrize("output", ["probs", "labels"])
def test_policy_rows_sum_to_one(output):
    pool, _ = make_blobs(60, seed=5)
    attack = _attack()
    attack.collect(_oracle(64, output), pool, 64)
    assert attack.policy_history.shape == (8, 4)
    assert torch.allclose(attack.policy_history.sum(dim=1), torch.ones(8))
    assert torch.isfinite(attack.reward_history).all()


def test_adaptive_stops_exactly_at_budget():
    pool, _ = make_blobs(60, seed=5)
    oracle = _oracle(37)
    transfer = _attack().collect(oracle, pool, 37)
    assert len(transfer) == 37
    assert oracle.used == 37


def test_adaptive_refills_small_groups():
    pool, _ = make_blobs(12, seed=6)
    oracle = _oracle(60)
    transfer = _attack(num_clusters=3, images_per_step=5).collect(oracle, pool, 60)
    assert len(transfer) == 60
    assert transfer.x.min() >= 0
    assert transfer.x.max() <= 1


def test_adaptive_draws_only_from_chosen_group():
    pool, _ = make_blobs(60, seed=5)
    attack = _attack()
    transfer = attack.collect(_oracle(16), pool, 16)
    groups = attack.group_pool(pool, make_generator(attack.seed))
    index = {tuple(p.flatten().tolist()): int(g) for p, g in zip(pool, groups)}
    first_step = {index[tuple(q.flatten().tolist())] for q in transfer.x[:8]}
    assert first_step == {int(attack.action_history[0])}


@pytest.mark.parametrize("kwargs, message", [
    ({"num_clusters": 0}, "num_clusters"),
    ({"rewards": ("cert", "novelty")}, "rewards"),
    ({"rewards": ()}, "rewards"),
    ({"images_per_step": 0}, "images_per_step"),
    ({"bandit_lr": 0.0}, "bandit_lr"),
    ({"diversity_window": 0}, "diversity_window"),
])
def test_adaptive_rejects_bad_knobs(kwargs, message):
    with pytest.raises(InputError, match=message):
        _attack(**kwargs)
