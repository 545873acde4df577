import math

import pytest
import torch
from torch import nn

from pdblib.attacks import HardLabelView, QueryOracle
from pdblib.attacks.activethief import (ActiveThief, ActiveThiefDFAL, ActiveThiefKCenter, ActiveThiefRandom,
                                        ActiveThiefUncertainty, deepfool_distances, entropy, round_schedule,
                                        select_dfal, select_kcenter, select_uncertainty)
from pdblib.defenses import Undefended
from pdblib.training import TrainConfig
from pdblib.utils import InputError
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp

SELECTION_CLASSES = [ActiveThiefRandom, ActiveThiefUncertainty, ActiveThiefKCenter, ActiveThiefDFAL]


@pytest.fixture(scope="module")
def victim():
    """An MLP victim trained once for the whole module, because training dominates the runtime."""
    from pdblib.training import train_model

    x, y = make_blobs(600, seed=1)
    model = make_mlp()
    train_model(model, x, y, TrainConfig(epochs=10, batch_size=32, lr=1e-2, seed=0), progress=False)
    return Undefended(model.eval(), K, input_shape=IMAGE_SHAPE)


def _clone_model_patch(monkeypatch):
    # The registry's mlp defaults to 784 inputs; the synthetic task has 8x8 images.
    from pdblib import models

    original = models.MODELS["mlp"]
    monkeypatch.setitem(models.MODELS, "mlp", lambda num_classes=10, **kw: original(num_classes, in_features=64))


def _attack(cls=ActiveThief, seed=0, **knobs):
    knobs.setdefault("rounds", 3)
    return cls(clone_model="mlp", clone_train=TrainConfig(epochs=2, batch_size=32, lr=1e-2), seed=seed,
               progress=False, **knobs)


def _linear_model(weight, bias):
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return nn.Sequential(nn.Flatten(), layer)


def _rows_distinct(x):
    return len({tuple(row.tolist()) for row in x.flatten(1)}) == len(x)


def test_round_schedule_seed_and_rounds():
    schedule = round_schedule(100, 0.1, 10)
    assert schedule[0] == 10
    assert schedule[-1] == 100
    assert len(schedule) == 11
    assert all(b - a in (9, 10) for a, b in zip(schedule, schedule[1:]))


def test_round_schedule_small_budget():
    assert round_schedule(5, 0.1, 10) == [1, 2, 3, 4, 5]
    assert round_schedule(1, 0.1, 10) == [1]


def test_entropy_hand_values():
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    values = entropy(probs)
    assert values[0].item() == pytest.approx(math.log(4))
    assert values[1].item() == pytest.approx(0.0)
    assert values[2].item() == pytest.approx(math.log(2))


def test_uncertainty_picks_highest_entropy():
    probs = torch.tensor([
        [0.97, 0.01, 0.01, 0.01],
        [0.25, 0.25, 0.25, 0.25],  # highest entropy
        [0.70, 0.10, 0.10, 0.10],
        [0.40, 0.30, 0.20, 0.10],  # second highest
        [1.00, 0.00, 0.00, 0.00],
    ])
    assert select_uncertainty(probs, 2).tolist() == [1, 3]


def test_kcenter_picks_farthest_point():
    centers = torch.tensor([[0.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [5.0, 0.0], [2.0, 0.0], [10.0, 0.0], [9.0, 0.0]])
    # 10 is farthest from {0}; then 5 from {0, 10}; then 2 (distance 2) beats 1 and 9 (distance 1).
    assert select_kcenter(candidates, centers, 3).tolist() == [3, 1, 2]


def test_kcenter_uses_every_center():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    candidates = torch.tensor([[9.0, 0.0], [4.0, 3.0], [0.0, 1.0]])
    # Nearest-center distances: 1, 5, 1.
    assert select_kcenter(candidates, centers, 1).tolist() == [1]


def test_kcenter_distinct_among_duplicates():
    centers = torch.zeros(1, 3)
    candidates = torch.zeros(4, 3)
    picked = select_kcenter(candidates, centers, 4)
    assert sorted(picked.tolist()) == [0, 1, 2, 3]


def test_kcenter_chunked_centers_agree():
    generator = torch.Generator().manual_seed(0)
    candidates = torch.rand(50, 4, generator=generator)
    centers = torch.rand(30, 4, generator=generator)
    assert torch.equal(select_kcenter(candidates, centers, 10, chunk_size=7),
                       select_kcenter(candidates, centers, 10))


def test_kcenter_rejects_empty_centers():
    with pytest.raises(InputError, match="centers must be a non-empty"):
        select_kcenter(torch.rand(5, 2), torch.empty(0, 2), 1)


def test_selection_rejects_count_above_candidates():
    with pytest.raises(InputError, match=r"cannot select 6 of 5"):
        select_uncertainty(torch.full((5, 4), 0.25), 6)


def test_deepfool_linear_two_class_distance():
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 64, generator=generator)
    bias = torch.tensor([0.3, -0.2])
    model = _linear_model(weight, bias)
    x = torch.rand(6, *IMAGE_SHAPE, generator=generator)
    logits = x.flatten(1) @ weight.T + bias
    normal = torch.linalg.vector_norm(weight[1] - weight[0])
    expected = 1.02 * ((logits[:, 1] - logits[:, 0]).abs() + 1e-4) / normal
    distances = deepfool_distances(model, x, overshoot=0.02)
    assert torch.allclose(distances, expected, rtol=1e-4)


def test_deepfool_linear_multiclass_nearest_boundary():
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(K, 64, generator=generator)
    bias = torch.randn(K, generator=generator)
    model = _linear_model(weight, bias)
    x = torch.rand(8, *IMAGE_SHAPE, generator=generator)
    logits = x.flatten(1) @ weight.T + bias
    label = logits.argmax(dim=1)
    expected = torch.empty(len(x))
    for i in range(len(x)):
        c = label[i]
        ratios = [((logits[i, c] - logits[i, k]).abs() + 1e-4) / torch.linalg.vector_norm(weight[k] - weight[c])
                  for k in range(K) if k != c]
        expected[i] = 1.02 * min(ratios)
    assert torch.allclose(deepfool_distances(model, x), expected, rtol=1e-4)


def test_dfal_ranks_smallest_distance_first():
    weight = torch.zeros(2, 64)
    weight[1, 0] = 1.0  # boundary: pixel 0 equals 0.5, so the distance is |x_0 - 0.5|
    model = _linear_model(weight, torch.tensor([0.5, 0.0]))
    x = torch.full((4, *IMAGE_SHAPE), 0.2)
    x[:, 0, 0, 0] = torch.tensor([0.1, 0.45, 0.3, 0.05])
    picked = select_dfal(deepfool_distances(model, x), 2)
    assert picked.tolist() == [1, 2]


def test_deepfool_unflipped_is_infinite():
    weight = torch.zeros(2, 64)  # constant logits, so the prediction never changes
    model = _linear_model(weight, torch.tensor([1.0, 0.0]))
    distances = deepfool_distances(model, torch.rand(3, *IMAGE_SHAPE), steps=3)
    assert torch.isinf(distances).all()


def test_deepfool_restores_training_mode():
    model = _linear_model(torch.randn(2, 64), torch.zeros(2)).train()
    deepfool_distances(model, torch.rand(2, *IMAGE_SHAPE))
    assert model.training


@pytest.mark.parametrize("cls", SELECTION_CLASSES)
def test_activethief_spends_budget_once_each(monkeypatch, victim, cls):
    _clone_model_patch(monkeypatch)
    pool, _ = make_blobs(200, seed=9)
    oracle = QueryOracle(victim, 120)
    result = _attack(cls, deepfool_steps=10).run(oracle, pool, [40, 120])
    assert oracle.used == 120
    assert result.queries_used == 120
    assert len(result.transfer.x) == 120
    assert _rows_distinct(result.transfer.x)
    assert sorted(result.clones) == [40, 120]
    for clone in result.clones.values():
        assert clone.num_outputs == K


def test_activethief_label_oracle(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    pool, _ = make_blobs(100, seed=2)
    oracle = QueryOracle(victim, 60, output="labels")
    result = _attack(selection="uncertainty").run(oracle, pool, [60])
    assert oracle.used == 60
    assert result.transfer.y.dtype == torch.int64


def test_activethief_query_order_ignores_intermediate_budgets(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    pool, _ = make_blobs(150, seed=4)
    transfers = []
    for budgets in ([100], [25, 55, 100]):
        oracle = QueryOracle(victim, 100)
        transfers.append(_attack(selection="kcenter").run(oracle, pool, budgets).transfer)
    assert torch.equal(transfers[0].x, transfers[1].x)


def test_activethief_same_seed_same_clone(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    pool, _ = make_blobs(100, seed=3)
    clones = []
    for _ in range(2):
        oracle = QueryOracle(victim, 80)
        clones.append(_attack(selection="dfal", seed=5, deepfool_steps=10).run(oracle, pool, [80]).clones[80])
    for a, b in zip(clones[0].state_dict().values(), clones[1].state_dict().values()):
        assert torch.equal(a, b)


def test_activethief_max_candidates(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    pool, _ = make_blobs(200, seed=6)
    oracle = QueryOracle(victim, 60)
    result = _attack(selection="uncertainty", max_candidates=30).run(oracle, pool, [60])
    assert oracle.used == 60
    assert _rows_distinct(result.transfer.x)


def test_activethief_rejects_small_pool(victim):
    pool, _ = make_blobs(50)
    oracle = QueryOracle(victim, 80)
    with pytest.raises(InputError, match="pool of at least 80"):
        _attack().run(oracle, pool, [80])
    assert oracle.used == 0


def test_activethief_rejects_budget_above_oracle(victim):
    pool, _ = make_blobs(50)
    oracle = QueryOracle(victim, 10)
    with pytest.raises(InputError, match="exceeds the oracle"):
        _attack().run(oracle, pool, [20])


@pytest.mark.parametrize("knobs, message", [
    ({"selection": "margin"}, "unknown ActiveThief selection 'margin'"),
    ({"seed_fraction": 0.0}, r"seed_fraction must be in \(0.0, 1.0\)"),
    ({"rounds": 0}, "rounds must be an int >= 1"),
    ({"kcenter_space": "pixels"}, "unknown k-center embedding space"),
    ({"deepfool_overshoot": -0.1}, "deepfool_overshoot must be >= 0"),
    ({"max_candidates": 0}, "max_candidates must be None or an int >= 1"),
])
def test_activethief_rejects_bad_knobs(knobs, message):
    with pytest.raises(InputError, match=message):
        _attack(**knobs)


def test_fixed_selection_rejects_other():
    with pytest.raises(InputError, match="activethief_random always uses selection 'random'"):
        ActiveThiefRandom(selection="dfal")


def test_fixed_selection_names():
    assert [cls().selection for cls in SELECTION_CLASSES] == ["random", "uncertainty", "kcenter", "dfal"]


def test_activethief_hard_label_view(monkeypatch, victim):
    _clone_model_patch(monkeypatch)
    pool, _ = make_blobs(80, seed=8)
    oracle = QueryOracle(victim, 40)
    result = _attack(selection="kcenter").run(HardLabelView(oracle), pool, [40])
    assert oracle.used == 40
    assert result.transfer.y.dtype == torch.int64
