import pytest
import torch

from pdblib.attacks import ATTACKS, QueryOracle, build_attack
from pdblib.attacks.knockoff import KnockoffRandom, random_shift
from pdblib.core.head import extend_head
from pdblib.core.inference import PDBDefense
from pdblib.defenses import Undefended
from pdblib.training import TrainConfig, accuracy
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs


def _attack(seed=0, epochs=5):
    return KnockoffRandom(clone_model="mlp", clone_train=TrainConfig(epochs=epochs, batch_size=32, lr=1e-2),
                          seed=seed, progress=False)


def _clone_model_patch(monkeypatch):
    # The registry's mlp defaults to 784 inputs; the synthetic task has 8x8 images.
    from pdblib import models

    original = models.MODELS["mlp"]
    monkeypatch.setitem(models.MODELS, "mlp", lambda num_classes=10, **kw: original(num_classes, in_features=64))


def _defenses(trained_mlp):
    pdb_model = extend_head(trained_mlp, generator=make_generator(0), weight_std=1.0).eval()
    return {
        "undefended": Undefended(trained_mlp, K, input_shape=IMAGE_SHAPE),
        "pdb": PDBDefense(pdb_model, K, threshold=-1.0, input_shape=IMAGE_SHAPE),
    }


@pytest.mark.parametrize("output", ["probs", "labels"])
@pytest.mark.parametrize("defense_name", ["undefended", "pdb"])
def test_knockoff_spends_budget_and_trains_clones(monkeypatch, trained_mlp, blobs, output, defense_name):
    _clone_model_patch(monkeypatch)
    _, _, x_test, y_test = blobs
    pool, _ = make_blobs(300, seed=9)
    oracle = QueryOracle(_defenses(trained_mlp)[defense_name], 200, output=output)
    result = _attack().run(oracle, pool, [50, 200])
    assert oracle.used == 200
    assert result.queries_used == 200
    assert sorted(result.clones) == [50, 200]
    for clone in result.clones.values():
        assert clone.num_outputs == K
    if defense_name == "undefended":
        assert accuracy(result.clones[200], x_test, y_test) > 0.8


def test_knockoff_same_seed_same_clone(monkeypatch, trained_mlp):
    _clone_model_patch(monkeypatch)
    pool, _ = make_blobs(100, seed=3)
    clones = []
    for _ in range(2):
        oracle = QueryOracle(_defenses(trained_mlp)["undefended"], 80)
        clones.append(_attack(seed=4, epochs=2).run(oracle, pool, [80]).clones[80])
    for a, b in zip(clones[0].state_dict().values(), clones[1].state_dict().values()):
        assert torch.equal(a, b)


def test_knockoff_repeats_pool_with_shifts():
    pool, _ = make_blobs(30, seed=5)
    queries = _attack().sample_queries(pool, 75, make_generator(0))
    assert len(queries) == 75
    assert queries.min() >= 0 and queries.max() <= 1
    first_pass = {tuple(q.flatten().tolist()) for q in queries[:30]}
    assert first_pass == {tuple(p.flatten().tolist()) for p in pool}


def test_random_shift_keeps_mass_within_bounds():
    x = torch.zeros(4, 1, 8, 8)
    x[:, 0, 3:5, 3:5] = 1.0
    shifted = random_shift(x, 2, make_generator(0))
    assert torch.equal(shifted.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)))


def test_run_rejects_budget_above_oracle(trained_mlp):
    pool, _ = make_blobs(50)
    oracle = QueryOracle(_defenses(trained_mlp)["undefended"], 10)
    with pytest.raises(InputError, match="exceeds the oracle"):
        _attack().run(oracle, pool, [20])


def test_registry_rejects_unknown_attack():
    assert "knockoff_random" in ATTACKS
    with pytest.raises(InputError, match="unknown attack 'jbda2'"):
        build_attack("jbda2")
