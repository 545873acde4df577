"""Named parameter profiles of the notebook chain.

``smoke``
    A small slice of the real data and one epoch per step; tests and CI use it (minutes).
``quick``
    The default job on the full 70,000 Fashion-MNIST images, sized for 2 CPU cores (the
    README gives its measured wall time).
``full``
    More epochs and budgets, several seeds; meant for a GPU machine.

Each profile maps a step name to the parameters papermill injects into that notebook. Every
step also gets ``run_dir`` and the profile's ``common`` entries.
"""

from __future__ import annotations

import copy

from pdblib.utils import InputError, check_choice

# Each notebook writes artifacts/<marker>/done.json as its last act; a resumed run skips those steps.
STEP_MARKERS = {"01_data": "data", "02_victim": "victim", "03_pdb": "pdb", "04_attack": "attack",
                "05_baselines": "baselines", "06_attack_suite": "attack_suite", "07_ablations": "ablation",
                "08_tradeoff": "tradeoff", "09_report": "report"}
STEPS = ("01_data", "02_victim", "03_pdb", "04_attack", "05_baselines", "06_attack_suite", "07_ablations",
         "08_tradeoff", "09_report")

_ACTIVETHIEF = [f"activethief_{selection}" for selection in ("random", "uncertainty", "kcenter", "dfal")]
_SLOW_ATTACKS = _ACTIVETHIEF + ["dfme", "maze"]
_SLOW_ATTACK_KWARGS = {**{name: {"rounds": 5, "max_candidates": 3000, "deepfool_steps": 10} for name in _ACTIVETHIEF},
                       "dfme": {"generator_width": 16}, "maze": {"generator_width": 16}}
# Measured on 2 CPU cores against a Fashion-MNIST victim trained for one epoch, with the settings
# above: ActiveThief at 5,000 queries took 71 s (random), 77 s (k-center) and 185 s (DFAL) per
# defense; DFME and MAZE at 20,000 queries 38 s and 35 s. The quick profile therefore runs them smaller: ActiveThief at 2,000 queries in
# 3 rounds over 1,000 candidates, DFME and MAZE at 10,000 queries (their papers use millions).
_QUICK_SLOW_KWARGS = {**{name: {"rounds": 3, "max_candidates": 1000, "deepfool_steps": 10} for name in _ACTIVETHIEF},
                      "dfme": {"generator_width": 16}, "maze": {"generator_width": 16}}
_QUICK_SLOW_BUDGETS = {**{name: [2000] for name in _ACTIVETHIEF}, "dfme": [10000], "maze": [10000]}

_QUICK = {
    "common": {"seed": 0, "device": "cpu", "progress": True},
    "01_data": {"val_size": 5000, "attacker_pool_size": 10000, "victim_train_size": None,
                "test_size": None, "mnist_pool_size": None},
    "02_victim": {"model": "small_cnn", "epochs": 8, "batch_size": 128, "lr": 1e-3, "min_test_acc": 0.90},
    "03_pdb": {"lambda_gp": 0.1, "transition_ratio": 0.1, "strategy": "bisection", "penalty_method": "exact",
               "penalty_fraction": 1.0, "epochs": 2, "batch_size": 128, "lr": 5e-4, "target_flip_rate": 0.01,
               "flip_form": "onehot_random", "max_acc_drop": 0.015, "max_test_flip_rate": 0.02,
               "boundary_samples": 500},
    "04_attack": {"attack": "knockoff_random", "defenses": ["undefended", "pdb"],
                  "pools": ["mnist", "fashion_mnist"], "outputs": ["probs", "labels"],
                  "budgets": [1000, 5000, 10000], "clone_model": "small_cnn_narrow", "clone_epochs": 10,
                  "clone_lr": 1e-3, "flip_form_defenses": ["pdb_swap_top2", "pdb_onehot_second", "pdb_onehot_random"],
                  "flip_form_budgets": [10000], "defense_knobs": {}, "results_file": "results.csv",
                  "mark_step_done": True},
    "05_baselines": {"baselines": ["label_only", "rounding", "gaussian_noise", "reverse_sigmoid", "mad",
                                   "adaptive_misinformation", "bdpl"],
                     "baseline_knobs": {}, "am_epochs": 2, "am_outliers": 10000, "latency_repeats": 30,
                     "pools": ["mnist", "fashion_mnist"], "knockoff_budgets": [5000], "jbda_budgets": [2400],
                     "clone_model": "small_cnn_narrow", "clone_epochs": 10, "clone_lr": 1e-3},
    # Every registered attack; the slow ones at reduced settings (see _QUICK_SLOW_KWARGS).
    "06_attack_suite": {"attacks": ["knockoff_random", "knockoff_adaptive", "jbda", "jb_self", "jb_topk", "copycat",
                                    "knockoff_hard", "averaging", "flip_aware"] + _SLOW_ATTACKS,
                        "defenses": ["undefended", "pdb"], "pool": "fashion_mnist", "budgets": [5000],
                        "attack_budgets": _QUICK_SLOW_BUDGETS, "attack_kwargs": _QUICK_SLOW_KWARGS,
                        "clone_model": "small_cnn_narrow", "clone_epochs": 10, "clone_lr": 1e-3},
    # penalty_only and transition_only are the zero points of PDB's transition-ratio and lambda_gp curves.
    "07_ablations": {"variants": ["full", "penalty_only", "transition_only", "strategy_margin", "strategy_mixup",
                                  "lambda_gp=1.0", "transition_ratio=0.3"],
                     "train_size": 10000, "budget": 5000, "pool": "fashion_mnist", "boundary_samples": 200,
                     "clone_model": "small_cnn_narrow", "clone_epochs": 10},
    # One weaker and one stronger setting per defense around the chain's own (05_baselines, 03_pdb).
    "08_tradeoff": {"strengths": {"pdb": {"target_flip_rate": [0.05, 0.2]}, "reverse_sigmoid": {"beta": [0.2, 2.0]},
                                  "mad": {"epsilon": [0.1, 1.0]}, "adaptive_misinformation": {"tau": [0.3, 0.8]}},
                    "attacks": ["knockoff_random"], "pools": ["fashion_mnist"], "outputs": ["probs"],
                    "budgets": [5000], "seeds": [0], "clone_model": "small_cnn_narrow", "clone_epochs": 10,
                    "clone_lr": 1e-3},
    "09_report": {},
}

_SMOKE = copy.deepcopy(_QUICK)
_SMOKE["common"]["progress"] = False
_SMOKE["01_data"].update({"val_size": 500, "attacker_pool_size": 600, "victim_train_size": 2000,
                          "test_size": 1000, "mnist_pool_size": 500})
_SMOKE["02_victim"].update({"epochs": 4, "lr": 2e-3, "min_test_acc": 0.6})
_SMOKE["03_pdb"].update({"epochs": 1, "max_acc_drop": 0.2, "max_test_flip_rate": 0.1, "boundary_samples": 100})
_SMOKE["04_attack"].update({"budgets": [200, 800], "clone_epochs": 2, "flip_form_budgets": [400]})
_SMOKE["05_baselines"].update({"am_epochs": 1, "am_outliers": 500, "latency_repeats": 3, "knockoff_budgets": [300],
                               "jbda_budgets": [300], "clone_epochs": 2})
_SMOKE["07_ablations"].update({"train_size": 500, "budget": 200, "boundary_samples": 30, "clone_epochs": 1})
_SMOKE["08_tradeoff"].update({"strengths": {"pdb": {"target_flip_rate": [0.2]}, "reverse_sigmoid": {"beta": [2.0]}},
                              "budgets": [200], "clone_epochs": 1})
_SMOKE["06_attack_suite"].update({
    "budgets": [150, 300], "clone_epochs": 2, "attack_budgets": {},
    "attack_kwargs": {**_SLOW_ATTACK_KWARGS, "jbda": {"seed_size": 50},
                      "jb_self": {"seed_size": 50}, "jb_topk": {"seed_size": 50},
                      "dfme": {"generator_width": 8, "batch_size": 32}, "maze": {"generator_width": 8, "batch_size": 16}}})

_FULL = copy.deepcopy(_QUICK)
_FULL["06_attack_suite"].update({"budgets": [2000, 5000, 10000], "attack_kwargs": _SLOW_ATTACK_KWARGS,
                                 "attack_budgets": {"dfme": [20000, 100000], "maze": [20000, 100000]}})
_FULL["02_victim"].update({"epochs": 15})
_FULL["03_pdb"].update({"epochs": 5})
_FULL["04_attack"].update({"budgets": [1000, 2000, 5000, 10000, 20000], "clone_model": "small_cnn",
                           "clone_epochs": 30, "flip_form_budgets": [5000, 10000]})
_FULL["07_ablations"].update({"variants": _QUICK["07_ablations"]["variants"] + [
    "lambda_gp=0.01", "lambda_gp=0.3", "lambda_gp=3.0", "transition_ratio=0.05", "transition_ratio=0.2",
    "transition_ratio=0.5"], "train_size": 20000})
# Every defense at three or more strengths, two attacks, both pools, three budgets, three seeds.
_FULL["08_tradeoff"].update({
    "strengths": {"undefended": {}, "label_only": {},
                  "pdb": {"target_flip_rate": [0.005, 0.02, 0.05, 0.1, 0.2]},
                  "rounding": {"decimals": [0, 1, 2]}, "gaussian_noise": {"sigma": [0.05, 0.1, 0.3]},
                  "reverse_sigmoid": {"beta": [0.2, 0.7, 2.0]}, "mad": {"epsilon": [0.1, 0.5, 1.0]},
                  "adaptive_misinformation": {"tau": [0.3, 0.5, 0.8]}, "bdpl": {"zone_width": [0.1, 0.2, 0.4]}},
    "attacks": ["knockoff_random", "jbda"], "pools": ["mnist", "fashion_mnist"],
    "budgets": [1000, 5000, 10000], "seeds": [0, 1, 2]})

PROFILES = {"smoke": _SMOKE, "quick": _QUICK, "full": _FULL}


def resolve_profile(name: str, overrides: dict | None = None) -> dict[str, dict]:
    """Return ``{step: parameters}`` for profile ``name``, with ``overrides`` applied.

    ``overrides`` maps ``"step.param"`` (or ``"param"`` for ``common``) to a value.

    Raises
    ------
    InputError
        On an unknown profile or step name.
    """
    check_choice(name, PROFILES, what="profile")
    profile = copy.deepcopy(PROFILES[name])
    for key, value in (overrides or {}).items():
        step, _, param = key.rpartition(".")
        step = step or "common"
        if step != "common":
            check_choice(step, STEPS, what="step")
        known = set(profile["common"]) | set(profile.get(step, {}))
        if param not in known:
            raise InputError(
                f"unknown parameter {key!r}; parameters of step {step!r} are {sorted(known)}"
            )
        profile.setdefault(step, {})[param] = value
    common = profile.pop("common")
    return {step: {**common, **profile.get(step, {})} for step in STEPS}
