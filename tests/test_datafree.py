import math

import pytest
import torch

from pdblib.attacks import QueryOracle
from pdblib.attacks.datafree import (DFME, MAZE, ImageGenerator, centered_log_probs, kl_loss, l1_logit_loss,
                                     zeroth_order_gradient)
from pdblib.defenses import Undefended
from pdblib.training import TrainConfig, train_model
from pdblib.utils import InputError
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp

SMALL = {"batch_size": 8, "directions": 2, "noise_dim": 8, "generator_width": 4}


@pytest.fixture(scope="module")
def victim():
    """An MLP victim trained once for the whole module, because training dominates the runtime."""
    x, y = make_blobs(600, seed=1)
    model = make_mlp()
    train_model(model, x, y, TrainConfig(epochs=10, batch_size=32, lr=1e-2, seed=0), progress=False)
    return Undefended(model.eval(), K, input_shape=IMAGE_SHAPE)


def _clone_model_patch(monkeypatch):
    # The registry's mlp defaults to 784 inputs; the synthetic task has 8x8 images.
    from pdblib import models

    original = models.MODELS["mlp"]
    monkeypatch.setitem(models.MODELS, "mlp", lambda num_classes=10, **kw: original(num_classes, in_features=64))


def _attack(cls, seed=0, **knobs):
    return cls(clone_model="mlp", seed=seed, progress=False, **{**SMALL, **knobs})


def _relative_error(estimate, truth):
    return float((torch.linalg.vector_norm(estimate - truth, dim=1) / torch.linalg.vector_norm(truth, dim=1)).mean())


def test_zeroth_order_linear_error_shrinks():
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, generator=generator)
    x = torch.rand(8, 64, generator=generator)
    errors = []
    for m in (16, 256, 4096):
        gradient, _ = zeroth_order_gradient(lambda p: p @ a, x, directions=m, generator=generator)
        errors.append(_relative_error(gradient, a.expand_as(x)))
    assert errors[0] > errors[1] > errors[2]
    # The relative error of this estimator is about sqrt((d - 1) / m) = 0.12 at d = 64, m = 4096.
    assert errors[2] < 0.2


def test_zeroth_order_quadratic_gradient():
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(4, 16, generator=generator) + 0.5
    gradient, values = zeroth_order_gradient(lambda p: (p ** 2).sum(dim=1), x, directions=8192, generator=generator)
    assert _relative_error(gradient, 2 * x) < 0.1
    assert torch.allclose(values, (x ** 2).sum(dim=1))


def test_zeroth_order_calls_fn_once():
    calls = []

    def fn(points):
        calls.append(points.shape)
        return points.flatten(1).sum(dim=1)

    gradient, _ = zeroth_order_gradient(fn, torch.rand(3, 1, 2, 2), directions=5,
                                        generator=torch.Generator().manual_seed(0))
    assert calls == [torch.Size([18, 1, 2, 2])]
    assert gradient.shape == (3, 1, 2, 2)


def test_zeroth_order_rejects_bad_knobs():
    with pytest.raises(InputError, match="directions must be an int >= 1"):
        zeroth_order_gradient(lambda p: p.sum(dim=1), torch.rand(2, 3), directions=0)
    with pytest.raises(InputError, match="epsilon must be positive"):
        zeroth_order_gradient(lambda p: p.sum(dim=1), torch.rand(2, 3), epsilon=0.0)


def test_zeroth_order_rejects_wrong_fn_shape():
    with pytest.raises(InputError, match="one value per point"):
        zeroth_order_gradient(lambda p: p, torch.rand(2, 3))


def test_centered_log_probs_recover_posterior():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    logits = centered_log_probs(probs)
    assert torch.allclose(logits.sum(dim=1), torch.zeros(2), atol=1e-6)
    assert torch.allclose(torch.softmax(logits, dim=1), probs, atol=1e-6)


def test_l1_loss_ignores_logit_shift():
    probs = torch.tensor([[0.7, 0.2, 0.1]])
    assert l1_logit_loss(probs.log() + 3.0, probs).item() == pytest.approx(0.0, abs=1e-6)


def test_l1_loss_hand_value():
    probs = torch.tensor([[0.5, 0.5]])
    clone_logits = torch.tensor([[1.0, -1.0]])  # centred victim logits are (0, 0)
    assert l1_logit_loss(clone_logits, probs).item() == pytest.approx(1.0)


def test_kl_loss_hand_values():
    assert kl_loss(torch.zeros(1, 2), torch.tensor([[1.0, 0.0]])).item() == pytest.approx(math.log(2))
    probs = torch.tensor([[0.6, 0.3, 0.1]])
    assert kl_loss(probs.log(), probs).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 5, 7)])
def test_generator_shape_and_range(shape):
    torch.manual_seed(0)
    images = ImageGenerator(4, shape, width=4)(torch.randn(3, 4))
    assert images.shape == (3, *shape)
    assert images.min() >= 0
    assert images.max() <= 1


@pytest.mark.parametrize("cls", [DFME, MAZE])
def test_datafree_spends_exact_budgets(monkeypatch, victim, cls):
    _clone_model_patch(monkeypatch)
    oracle = QueryOracle(victim, 150)
    result = _attack(cls).run(oracle, None, [7, 61, 150])
    assert oracle.used == 150
    assert result.queries_used == 150
    assert len(result.transfer.x) == 150
    assert len(result.transfer.y) == 150
    assert sorted(result.clones) == [7, 61, 150]
    for clone in result.clones.values():
        assert clone.num_outputs == K
    assert [r["queries"] for r in result.history[150]][-1] == 150


def test_maze_iteration_queries_through_oracle(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    oracle = QueryOracle(victim, 24)
    _attack(MAZE, batch_size=4, directions=3, clone_steps=2, replay_steps=3).run(oracle, None, [24])
    # One generator step costs 4 * (3 + 1) queries, each clone step 4, replay steps none.
    assert [len(a) for a in oracle.log.answers] == [16, 4, 4]


def test_dfme_tail_skips_generator_step(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    oracle = QueryOracle(victim, 2)
    _attack(DFME).run(oracle, None, [2])
    # Two queries cannot pay for a point and its 2 directions, so only a clone step runs.
    assert [len(a) for a in oracle.log.answers] == [2]


@pytest.mark.parametrize("cls", [DFME, MAZE])
def test_datafree_same_seed_same_clone(monkeypatch, victim, cls):
    _clone_model_patch(monkeypatch)
    clones = []
    for _ in range(2):
        oracle = QueryOracle(victim, 60)
        clones.append(_attack(cls, seed=3).run(oracle, None, [60]).clones[60])
    for a, b in zip(clones[0].state_dict().values(), clones[1].state_dict().values()):
        assert torch.equal(a, b)


def test_datafree_leaves_global_rng(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _attack(DFME).run(QueryOracle(victim, 30), None, [30])
    assert torch.equal(torch.rand(3), expected)


def test_datafree_collect_returns_every_query(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    oracle = QueryOracle(victim, 40)
    transfer = _attack(DFME).collect(oracle, None, 40)
    assert len(transfer.x) == 40
    assert torch.equal(transfer.y, torch.cat(oracle.log.answers))


def test_datafree_needs_probs(victim):
    oracle = QueryOracle(victim, 20, output="labels")
    with pytest.raises(InputError, match="does not support oracle output .labels."):
        _attack(DFME).run(oracle, None, [20])
    assert oracle.used == 0


def test_datafree_rejects_budget_above_oracle(victim):
    oracle = QueryOracle(victim, 10)
    with pytest.raises(InputError, match="exceeds the oracle"):
        _attack(MAZE).run(oracle, None, [20])


@pytest.mark.parametrize("knobs, message", [
    ({"directions": 0}, "directions must be an int >= 1"),
    ({"epsilon": 0.0}, "epsilon must be positive"),
    ({"clone_steps": 0}, "clone_steps must be an int >= 1"),
    ({"generator_steps": -1}, "generator_steps must be an int >= 0"),
    ({"clone_momentum": 1.0}, r"clone_momentum must be in \[0, 1\)"),
    ({"lr_gamma": 0.0}, r"lr_gamma must be in \(0, 1\]"),
    ({"lr_milestones": (0.5, 0.1)}, "lr_milestones must be increasing"),
])
def test_datafree_rejects_bad_knobs(knobs, message):
    with pytest.raises(InputError, match=message):
        _attack(DFME, **knobs)


def test_attack_flags():
    for cls in (DFME, MAZE):
        assert cls.supported_outputs == ("probs",)
        assert cls.needs_pool is False
