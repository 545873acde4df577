"""Naming of PDB's ablation variants, including the knob settings behind its trade-off curves."""

import pytest

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
                                                     ("transition_ratio=0.3", "transition_ratio", 0.3)])
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
                                             ("lambda_gp=-1", ">= 0")])
def test_bad_variant_names_are_clear_errors(name, match):
    with pytest.raises(InputError, match=match):
        resolve_variant(name, PDBConfig())


def test_combined_variant_sets_penalty_method_and_seed():
    config = resolve_variant("penalty_method=finite_difference,seed=2", PDBConfig(lambda_gp=0.1))
    assert config.penalty_method == "finite_difference"
    assert config.seed == 2
    assert config.lambda_gp == 0.1
