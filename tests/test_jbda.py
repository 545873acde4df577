import pytest
import torch

from pdblib.attacks import QueryOracle
from pdblib.attacks.jbda import JBDA, JBSelf, JBTopK, jacobian_step
from pdblib.defenses import Undefended
from pdblib.training import TrainConfig
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


@pytest.fixture(autouse=True)
def small_clone_model(monkeypatch):
    from pdblib import models

    original = models.MODELS["mlp"]
    monkeypatch.setitem(models.MODELS, "mlp", lambda num_classes=10, **kw: original(num_classes, in_features=64))


def _attack(cls=JBDA, **kwargs):
    return cls(clone_model="mlp", clone_train=TrainConfig(epochs=1, batch_size=16, lr=1e-2), progress=False,
               **kwargs)


def _oracle(budget, output="probs"):
    return QueryOracle(Undefended(make_mlp(seed=1), K, input_shape=IMAGE_SHAPE), budget, output=output)


def _expected_step(model, x, classes, step):
    x = x.clone().requires_grad_(True)
    probs = torch.softmax(model(x), dim=1)
    grad = torch.stack([torch.autograd.grad(probs[i, classes[i]], x, retain_graph=True)[0][i]
                        for i in range(len(x))])
    return (x.detach() + step * grad.sign()).clamp(0, 1)


@pytest.mark.parametrize("step", [0.1, -0.1, 0.3])
def test_jacobian_step_matches_gradient_sign(step):
    model = make_mlp(activation="tanh")
    x, _ = make_blobs(6, seed=2)
    classes = torch.tensor([0, 1, 2, 3, 0, 1])
    assert torch.allclose(jacobian_step(model, x, classes, step), _expected_step(model, x, classes, step))


def test_jacobian_step_stays_in_unit_box():
    x = torch.cat([torch.zeros(3, *IMAGE_SHAPE), torch.ones(3, *IMAGE_SHAPE)])
    out = jacobian_step(make_mlp(activation="tanh"), x, torch.tensor([0, 1, 2, 3, 0, 1]), 0.5)
    assert out.min() >= 0
    assert out.max() <= 1


def test_jbda_doubles_each_round():
    pool, _ = make_blobs(30, seed=3)
    oracle = _oracle(100)
    transfer = _attack(seed_size=4, rounds=3).collect(oracle, pool, 100)
    assert len(transfer) == 16  # 4 seeds, doubled in each of the 2 augmentation rounds
    assert oracle.used == 16


def test_jbda_new_points_within_step_of_parents():
    pool, _ = make_blobs(30, seed=3)
    transfer = _attack(seed_size=4, rounds=2, step=0.1).collect(_oracle(100), pool, 100)
    moved = (transfer.x[4:8] - transfer.x[:4]).abs()
    assert moved.max() <= 0.1 + 1e-6
    assert moved.max() > 0


def test_jbda_first_round_uses_oracle_labels():
    pool, _ = make_blobs(30, seed=3)
    attack = _attack(seed_size=4, rounds=2, step=0.1)
    transfer = attack.collect(_oracle(100, output="labels"), pool, 100)
    substitute, _ = attack.train_clone(transfer.x[:4], transfer.y[:4], K, seed_offset=1001)
    expected = jacobian_step(substitute, transfer.x[:4], transfer.y[:4], 0.1)
    assert torch.allclose(transfer.x[4:8], expected)


def test_jbda_stops_exactly_at_budget():
    pool, _ = make_blobs(30, seed=3)
    oracle = _oracle(10)
    transfer = _attack(seed_size=4, rounds=6).collect(oracle, pool, 10)
    assert len(transfer) == 10
    assert oracle.used == 10


def test_jbda_without_round_limit_spends_budget():
    pool, _ = make_blobs(30, seed=3)
    oracle = _oracle(50)
    _attack(seed_size=4, rounds=None).collect(oracle, pool, 50)
    assert oracle.used == 50


def test_jbda_clones_at_each_budget():
    pool, _ = make_blobs(30, seed=3)
    result = _attack(seed_size=4, rounds=3).run(_oracle(16), pool, [6, 16])
    assert sorted(result.clones) == [6, 16]
    assert result.queries_used == 16


def test_jbself_uses_substitute_prediction():
    x, _ = make_blobs(6, seed=4)
    substitute = make_mlp(activation="tanh")
    wrong_answers = torch.zeros(6, dtype=torch.int64)
    own = substitute(x).argmax(dim=1)
    out = _attack(JBSelf, step=0.1).augment(substitute, x, wrong_answers, 1, make_generator(0))
    assert torch.allclose(out, jacobian_step(substitute, x, own, 0.1))


def test_jbtopk_targets_hand_worked():
    attack = _attack(JBTopK, top_k=1)
    scores = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    targets = attack.target_classes(scores, torch.tensor([0, 3]), make_generator(0))
    assert targets.tolist() == [1, 2]


def test_jbtopk_never_targets_answered_class():
    attack = _attack(JBTopK, top_k=2)
    scores = torch.randn(200, K, generator=make_generator(1))
    answered = scores.argmax(dim=1)
    targets = attack.target_classes(scores, answered, make_generator(0))
    second, third = scores.topk(3, dim=1).indices[:, 1], scores.topk(3, dim=1).indices[:, 2]
    assert (targets != answered).all()
    assert ((targets == second) | (targets == third)).all()


def test_jbtopk_rejects_top_k_of_k():
    pool, _ = make_blobs(30, seed=3)
    with pytest.raises(InputError, match="top_k"):
        _attack(JBTopK, top_k=K).run(_oracle(20), pool, [20])


@pytest.mark.parametrize("kwargs, message", [
    ({"seed_size": 0}, "seed_size"),
    ({"step": 0.0}, "step"),
    ({"rounds": 0}, "rounds"),
    ({"query_batch_size": 0}, "query_batch_size"),
])
def test_jbda_rejects_bad_knobs(kwargs, message):
    with pytest.raises(InputError, match=message):
        _attack(**kwargs)
