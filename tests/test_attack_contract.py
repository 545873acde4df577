"""One contract over every registered attack, against three defenses and both oracle outputs."""

import pytest
import torch

from pdblib.attacks import ATTACKS, QueryOracle, build_attack
from pdblib.core.head import extend_head
from pdblib.core.inference import PDBDefense
from pdblib.defenses import LabelOnly, Undefended
from pdblib.training import TrainConfig, train_model
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp

BUDGETS = [12, 24]

# Test-size knobs per attack, so each run takes about a second on a CPU. An attack missing
# here runs with its defaults plus the shared clone settings below.
ATTACK_KWARGS = {
    "knockoff_random": {},
    "knockoff_adaptive": {"num_clusters": 3, "images_per_step": 6, "kmeans_iterations": 5},
    "jbda": {"seed_size": 6, "rounds": 3},
    "jb_self": {"seed_size": 6, "rounds": 3},
    "jb_topk": {"seed_size": 6, "rounds": 3, "top_k": 2},
    "copycat": {},
    "knockoff_hard": {},
    "averaging": {"repeats": 3},
    "flip_aware": {},
}


@pytest.fixture(autouse=True)
def small_clone_model(monkeypatch):
    # The registry's mlp defaults to 784 inputs; the synthetic task has 8x8 images.
    from pdblib import models

    original = models.MODELS["mlp"]
    monkeypatch.setitem(models.MODELS, "mlp", lambda num_classes=10, **kw: original(num_classes, in_features=64))


@pytest.fixture(scope="module")
def victim():
    x, y = make_blobs(200, seed=1)
    model = make_mlp()
    train_model(model, x, y, TrainConfig(epochs=3, batch_size=32, lr=1e-2, seed=0), progress=False)
    return model.eval()


def _defense(name, victim):
    if name == "undefended":
        return Undefended(victim, K, input_shape=IMAGE_SHAPE)
    if name == "label_only":
        return LabelOnly(victim, K, input_shape=IMAGE_SHAPE)
    pdb_model = extend_head(victim, generator=make_generator(0), weight_std=1.0).eval()
    return PDBDefense(pdb_model, K, threshold=-1.0, input_shape=IMAGE_SHAPE)


def _attack(name, seed=0):
    kwargs = {"clone_model": "mlp", "clone_train": TrainConfig(epochs=1, batch_size=32, lr=1e-2),
              "seed": seed, "progress": False, **ATTACK_KWARGS.get(name, {})}
    return build_attack(name, **kwargs)


def _pool(attack):
    return make_blobs(40, seed=9)[0] if attack.needs_pool else None


@pytest.mark.parametrize("output", ["probs", "labels"])
@pytest.mark.parametrize("defense_name", ["undefended", "label_only", "pdb"])
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_contract(name, defense_name, output, victim):
    attack = _attack(name)
    oracle = QueryOracle(_defense(defense_name, victim), max(BUDGETS), output=output)
    if output not in attack.supported_outputs:
        with pytest.raises(InputError, match=name):
            attack.run(oracle, _pool(attack), BUDGETS)
        assert oracle.used == 0
        return

    result = attack.run(oracle, _pool(attack), BUDGETS)
    probe, _ = make_blobs(5, seed=2)

    assert oracle.used <= max(BUDGETS)
    assert result.queries_used == oracle.used
    assert sum(len(a) for a in oracle.log.answers) == oracle.used
    assert sorted(result.clones) == BUDGETS
    for clone in result.clones.values():
        assert clone(probe).shape == (5, K)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_same_seed_same_clone(name, victim):
    clones = []
    for _ in range(2):
        attack = _attack(name, seed=3)
        output = attack.supported_outputs[0]
        oracle = QueryOracle(_defense("pdb", victim), max(BUDGETS), output=output)
        clones.append(attack.run(oracle, _pool(attack), BUDGETS).clones[max(BUDGETS)])
    for key, value in clones[0].state_dict().items():
        assert torch.equal(value, clones[1].state_dict()[key]), key


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_rejects_budget_above_oracle(name, victim):
    attack = _attack(name)
    oracle = QueryOracle(_defense("undefended", victim), 10, output=attack.supported_outputs[0])
    with pytest.raises(InputError, match="exceeds the oracle"):
        attack.run(oracle, _pool(attack), [11])
