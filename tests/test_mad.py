import pytest
import torch

from pdblib.defenses import MAD
from pdblib.defenses.mad import ORACLES, angular_deviation, last_layer_log_prob_gradients, mad_perturb, reinitialize
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def _posteriors(n, k=K, seed=0, scale=3.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.softmax(scale * torch.randn(n, k, generator=generator), dim=1)


def test_gradients_match_autograd():
    generator = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(5, 3)
    with torch.no_grad():
        head.weight.copy_(torch.randn(3, 5, generator=generator))
        head.bias.copy_(torch.randn(3, generator=generator))
    h = torch.randn(2, 5, generator=generator)
    probs = torch.softmax(head(h), dim=1).detach()
    closed = last_layer_log_prob_gradients(h, probs)
    for n in range(2):
        for k in range(3):
            head.zero_grad()
            torch.log_softmax(head(h[n:n + 1]), dim=1)[0, k].backward()
            expected = torch.cat([head.weight.grad.flatten(), head.bias.grad])
            assert torch.allclose(closed[n, k], expected, atol=1e-6), (n, k)


def test_objective_matches_explicit_gradients():
    generator = torch.Generator().manual_seed(1)
    h = torch.randn(6, 7, generator=generator)
    p = _posteriors(6, seed=2)
    y = _posteriors(6, seed=3)
    y_hat = _posteriors(6, seed=4)
    g = last_layer_log_prob_gradients(h, p)  # (N, K, D)
    a_hat = torch.einsum("nk,nkd->nd", y_hat, g)
    a = torch.einsum("nk,nkd->nd", y, g)
    explicit = 2 - 2 * torch.nn.functional.cosine_similarity(a_hat, a, dim=1)
    assert torch.allclose(angular_deviation(y_hat, y, p), explicit, atol=1e-5)


@pytest.mark.parametrize("oracle", ORACLES)
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5, 1.1, 2.0])
def test_perturbation_within_budget(oracle, epsilon):
    y = _posteriors(300, seed=5)
    out = mad_perturb(y, _posteriors(300, seed=6), epsilon, oracle)
    assert (out - y).abs().sum(dim=1).max() <= epsilon + 1e-5


@pytest.mark.parametrize("oracle", ORACLES)
def test_perturbation_on_simplex(oracle):
    out = mad_perturb(_posteriors(300, seed=7), _posteriors(300, seed=8), 0.8, oracle)
    assert (out >= 0).all()
    assert torch.allclose(out.sum(dim=1), torch.ones(300), atol=1e-6)


def test_perturbation_uses_budget():
    y = 0.5 * _posteriors(300, seed=9) + 0.5 / K  # every entry is below 0.75, so the budget of 0.5 binds
    out = mad_perturb(y, _posteriors(300, seed=10), 0.5, "extreme")
    assert torch.allclose((out - y).abs().sum(dim=1), torch.full((300,), 0.5), atol=1e-5)


def test_argmax_oracle_keeps_top1():
    y = _posteriors(500, seed=11, scale=1.0)
    out = mad_perturb(y, _posteriors(500, seed=12), 2.0, "argmax")
    assert torch.equal(out.argmax(dim=1), y.argmax(dim=1))


def test_extreme_oracle_reaches_best_vertex():
    y = _posteriors(50, seed=13)
    p = _posteriors(50, seed=14)
    out = mad_perturb(y, p, 2.0, "extreme")  # a budget of 2 reaches every vertex
    vertices = torch.eye(K).expand(50, K, K)
    best = angular_deviation(vertices, y, p).argmax(dim=1)
    assert torch.allclose(out, torch.eye(K)[best], atol=1e-6)


def test_extreme_oracle_flips_some_top1():
    y = _posteriors(300, seed=15, scale=1.0)
    out = mad_perturb(y, _posteriors(300, seed=16), 1.0, "extreme")
    assert (out.argmax(dim=1) != y.argmax(dim=1)).any()


def test_perturbation_increases_deviation():
    y = _posteriors(200, seed=17, scale=1.0)
    p = _posteriors(200, seed=18, scale=1.0)  # no surrogate posterior is close to a vertex
    out = mad_perturb(y, p, 0.5, "extreme")
    assert (angular_deviation(out, y, p) > 0.0).all()


def test_zero_budget_is_identity():
    y = _posteriors(20, seed=19)
    assert torch.allclose(mad_perturb(y, _posteriors(20, seed=20), 0.0, "extreme"), y, atol=1e-7)


def test_reinitialize_is_seeded():
    a = reinitialize(make_mlp(seed=0), make_generator(5))
    b = reinitialize(make_mlp(seed=1), make_generator(5))
    c = reinitialize(make_mlp(seed=0), make_generator(6))
    assert torch.equal(a.head.weight, b.head.weight)
    assert not torch.equal(a.head.weight, c.head.weight)


def test_default_surrogate_is_independent_copy():
    model = make_mlp(seed=0)
    defense = MAD(model, K, input_shape=IMAGE_SHAPE)
    assert type(defense.surrogate) is type(model)
    assert not torch.equal(defense.surrogate.head.weight, model.head.weight)


def test_defense_answer_within_budget():
    model = make_mlp(seed=0)
    x, _ = make_blobs(40, seed=21)
    answer = MAD(model, K, epsilon=0.3, input_shape=IMAGE_SHAPE).answer(x)
    plain = torch.softmax(model(x), dim=1).detach()
    assert (answer.probs - plain).abs().sum(dim=1).max() <= 0.3 + 1e-5


def test_argmax_defense_declares_keeps_top1():
    assert MAD(make_mlp(), K, oracle="argmax", input_shape=IMAGE_SHAPE).keeps_top1
    assert not MAD(make_mlp(), K, oracle="extreme", input_shape=IMAGE_SHAPE).keeps_top1


@pytest.mark.parametrize("epsilon", [-0.1, 2.5, float("nan")])
def test_rejects_bad_epsilon(epsilon):
    with pytest.raises(InputError, match="epsilon"):
        MAD(make_mlp(), K, epsilon=epsilon, input_shape=IMAGE_SHAPE)


def test_rejects_unknown_oracle():
    with pytest.raises(InputError, match="oracle"):
        MAD(make_mlp(), K, oracle="random", input_shape=IMAGE_SHAPE)


def test_rejects_surrogate_without_linear_head():
    surrogate = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, K))
    with pytest.raises(InputError, match="head"):
        MAD(make_mlp(), K, surrogate=surrogate, input_shape=IMAGE_SHAPE)


def test_rejects_surrogate_with_wrong_outputs():
    with pytest.raises(InputError, match="outputs"):
        MAD(make_mlp(), K, surrogate=make_mlp(num_classes=K + 1), input_shape=IMAGE_SHAPE)
