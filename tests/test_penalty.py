import pytest
import torch
import torch.nn.functional as F

from pdblib.core.penalty import GradientPenaltyLoss, finite_difference_penalty, input_gradient_penalty
from pdblib.utils import InputError
from tests.conftest import make_blobs, make_mlp


def _smooth_model():
    return make_mlp(activation="tanh", seed=3).double()


def test_penalty_matches_finite_differences():
    model = _smooth_model()
    x, y = make_blobs(3, seed=2)
    x = x.double()
    _, penalty, _ = input_gradient_penalty(model, x, y, create_graph=False)
    eps = 1e-6
    for i in range(len(x)):
        grad = torch.zeros(x[i].numel(), dtype=torch.float64)
        flat = x[i].flatten()
        for j in range(flat.numel()):
            plus, minus = flat.clone(), flat.clone()
            plus[j] += eps
            minus[j] -= eps
            f_plus = F.cross_entropy(model(plus.view(1, 1, 8, 8)), y[i:i + 1])
            f_minus = F.cross_entropy(model(minus.view(1, 1, 8, 8)), y[i:i + 1])
            grad[j] = (f_plus - f_minus) / (2 * eps)
        assert penalty[i].item() == pytest.approx(grad.pow(2).sum().item(), rel=1e-6)


def test_penalty_is_per_sample():
    model = _smooth_model()
    x, y = make_blobs(6, seed=4)
    x = x.double()
    _, batch_penalty, _ = input_gradient_penalty(model, x, y, create_graph=False)
    for i in range(len(x)):
        _, single, _ = input_gradient_penalty(model, x[i:i + 1], y[i:i + 1], create_graph=False)
        assert single.item() == pytest.approx(batch_penalty[i].item(), rel=1e-10)


def test_penalty_gradient_reaches_parameters():
    model = _smooth_model()
    x, y = make_blobs(4, seed=5)
    x = x.double()
    _, penalty, _ = input_gradient_penalty(model, x, y, create_graph=True)
    penalty.mean().backward()
    weight = model.body[1].weight
    analytic = weight.grad[0, 0].item()
    assert analytic != 0.0
    eps = 1e-6
    with torch.no_grad():
        weight[0, 0] += eps
    plus = input_gradient_penalty(model, x, y, create_graph=False)[1].mean().item()
    with torch.no_grad():
        weight[0, 0] -= 2 * eps
    minus = input_gradient_penalty(model, x, y, create_graph=False)[1].mean().item()
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=1e-4)


def test_finite_difference_penalty_close_to_exact():
    model = _smooth_model()
    x, y = make_blobs(16, seed=6)
    x = x.double()
    _, exact, _ = input_gradient_penalty(model, x, y, create_graph=False)
    _, estimate, _ = finite_difference_penalty(model, x, y, step=1e-4)
    assert torch.allclose(estimate, exact, rtol=2e-2, atol=1e-8)


def test_finite_difference_uses_one_dropout_mask():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.Tanh(),
                                torch.nn.Dropout(0.5), torch.nn.Linear(32, 4)).double().train()
    x, y = make_blobs(16, seed=9)
    x = x.double()
    torch.manual_seed(1)
    _, exact, _ = input_gradient_penalty(model, x, y, create_graph=False)
    torch.manual_seed(1)  # the same dropout mask for the exact penalty and the estimate
    _, estimate, _ = finite_difference_penalty(model, x, y, step=1e-5)
    assert torch.allclose(estimate, exact, rtol=1e-3, atol=1e-10)


def test_loss_with_zero_lambda_is_cross_entropy():
    model = make_mlp()
    x, y = make_blobs(8)
    loss, logits, parts = GradientPenaltyLoss(0.0)(model, x, y)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item())
    assert "penalty" not in parts


def test_loss_adds_weighted_penalty():
    model = make_mlp(activation="tanh")
    x, y = make_blobs(8)
    loss, _, parts = GradientPenaltyLoss(2.5)(model, x, y)
    assert parts["penalty"].item() > 0
    assert loss.item() == pytest.approx(parts["ce"].item() + 2.5 * parts["penalty"].item(), rel=1e-5)


@pytest.mark.parametrize("method", ["exact", "finite_difference"])
def test_penalty_fraction_leading_rows_only(method):
    model = _smooth_model()
    x, y = make_blobs(12, seed=7)
    x = x.double()
    full_loss, full_logits, full_parts = GradientPenaltyLoss(1.0, method=method)(model, x, y)
    loss, logits, parts = GradientPenaltyLoss(1.0, method=method, fraction=0.25)(model, x, y)
    # Logits and cross-entropy cover the whole batch in its order; the penalty only rows 0..2.
    assert torch.allclose(logits, full_logits)
    assert parts["ce"].item() == pytest.approx(full_parts["ce"].item(), rel=1e-10)
    first_rows = GradientPenaltyLoss(1.0, method=method)(model, x[:3], y[:3])[2]["penalty"]
    assert parts["penalty"].item() == pytest.approx(first_rows.item(), rel=1e-10)
    assert parts["penalty"].item() != pytest.approx(full_parts["penalty"].item(), rel=1e-3)
    assert loss.item() == pytest.approx(parts["ce"].item() + parts["penalty"].item(), rel=1e-10)


def test_penalty_fraction_gradient_unbiased():
    # Averaged over every cyclic shift of the batch, the leading-rows estimate of the penalty's
    # parameter gradient equals the full-batch gradient.
    model = _smooth_model()
    x, y = make_blobs(8, seed=8)
    x = x.double()
    weight = model.body[1].weight

    def grad(loss_fn, xb, yb):
        model.zero_grad()
        loss_fn(model, xb, yb)[0].backward()
        return weight.grad.clone()

    full = grad(GradientPenaltyLoss(1.0), x, y)
    sub = GradientPenaltyLoss(1.0, fraction=0.25)
    shifts = [torch.roll(torch.arange(8), -2 * k) for k in range(4)]
    average = sum(grad(sub, x[order], y[order]) for order in shifts) / len(shifts)
    assert torch.allclose(average, full, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kwargs", [{"lambda_gp": -1.0}, {"lambda_gp": float("nan")}, {"method": "approx"},
                                    {"fd_step": 0.0}, {"fraction": 0.0}, {"fraction": 1.5}])
def test_loss_rejects_bad_knobs(kwargs):
    with pytest.raises(InputError):
        GradientPenaltyLoss(**kwargs)
