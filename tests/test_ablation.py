"""Naming of PDB's ablation variants, including the knob settings behind its trade-off curves."""

import pytest
import torch

from pdblib.core import PDBConfig
from pdblib.stages_ablation import ablation_variants, resolve_variant
from pdblib.utils import InputError


def test_named_variants_change_one_part():
    base = PDBConfig(lambda_gp=0.1, transition_ratio=0.1, strategy="bisection")
    variants = ablation_variants(base)
    assert variants["full"] == base
    assert variants["penalty_only"].transition_ratio == 0.0
    assert variants["transition_only"].lambda_gp == 0.0
    assert variants["strategy_margin"].strategy == "margin"


@pytest.mark.parametrize(("name", "knob", "value"), [("lambda_gp=1.0", "lambda_gp", 1.0),
                                                     ("transition_ratio=0.3", "transition_ratio", 0.3),
                                                     ("penalty_fraction=0.25", "penalty_fraction", 0.25)])
def test_knob_variant_sets_only_that_knob(name, knob, value):
    base = PDBConfig(lambda_gp=0.1, transition_ratio=0.1)
    config = resolve_variant(name, base)
    assert getattr(config, knob) == value
    other = "transition_ratio" if knob == "lambda_gp" else "lambda_gp"
    assert getattr(config, other) == getattr(base, other)


@pytest.mark.parametrize(("name", "match"), [("bogus", "unknown ablation variant"),
                                             ("epochs=3", "only"),
                                             ("penalty_method=bogus", "penalty"),
                                             ("lambda_gp=abc", "not a valid"),
                                             ("lambda_gp=-1", ">= 0"),
                                             ("penalty_fraction=0", "penalty_fraction"),
                                             ("penalty_fraction=2", "penalty_fraction")])
def test_bad_variant_names_are_clear_errors(name, match):
    with pytest.raises(InputError, match=match):
        resolve_variant(name, PDBConfig())


def test_combined_variant_sets_penalty_method_and_seed():
    config = resolve_variant("penalty_method=finite_difference,seed=2", PDBConfig(lambda_gp=0.1))
    assert config.penalty_method == "finite_difference"
    assert config.seed == 2
    assert config.lambda_gp == 0.1


def test_stage_ablations_writes_only_the_requested_file(tmp_path):
    from pdblib.data import DataBundle
    from pdblib.models import build_model
    from pdblib.runs import RunDir
    from pdblib.stages_ablation import stage_ablations
    from pdblib.utils import save_checkpoint

    generator = torch.Generator().manual_seed(0)
    x = torch.rand(320, 1, 28, 28, generator=generator)
    y = torch.randint(4, (320,), generator=generator)
    bundle = DataBundle(x[:64], y[:64], x[64:128], y[64:128], x[128:192], y[128:192],
                        pools={"fashion_mnist": x[192:]}, pool_labels={"fashion_mnist": y[192:]}, splits={},
                        num_classes=4)
    run = RunDir(tmp_path / "run")
    torch.manual_seed(0)
    save_checkpoint(run.artifact("victim", "victim.pt"),
                    {"model": "mlp", "state_dict": build_model("mlp", 4).state_dict(), "num_classes": 4})
    run.write_json("pdb", "metrics.json", {"config": PDBConfig(epochs=1, batch_size=32).to_dict(),
                                           "flip_form": "onehot_random"})
    other = run.artifact("ablation", "ablations.csv")
    other.write_text("variant\nfrom_step_07\n")
    settings = dict(variants=["lambda_gp=0.5"], train_size=64, budget=32, boundary_samples=4, clone_model="mlp",
                    clone_epochs=1, filename="penalty_quality.csv", progress=False)

    rows = stage_ablations(run, bundle, **settings)
    assert other.read_text() == "variant\nfrom_step_07\n"
    written = run.read_csv("ablation", "penalty_quality.csv")
    assert list(written["variant"]) == ["lambda_gp=0.5"] == list(rows["variant"])
    assert written["lambda_gp"].iloc[0] == 0.5
    # A second call finds the row in its own file and retrains nothing.
    again = stage_ablations(run, bundle, **settings)
    assert list(again["variant"]) == ["lambda_gp=0.5"]
    assert again["retrain_seconds"].iloc[0] == written["retrain_seconds"].iloc[0]
