"""Named parameter profiles of the notebook chain.

``smoke``
    A small slice of the real data and one epoch per step; tests and CI use it (minutes).
``quick``
    The default job on the full 70,000 Fashion-MNIST images, sized for 2 CPU cores
    (about a quarter of an hour measured on the development machine; see the README).
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
                "08_report": "report"}
STEPS = ("01_data", "02_victim", "03_pdb", "04_attack", "05_baselines", "06_attack_suite", "07_ablations",
         "08_report")

_SLOW_ATTACKS = ["activethief_random", "activethief_uncertainty", "activethief_kcenter", "activethief_dfal", "dfme",
                 "maze"]
_SLOW_ATTACK_KWARGS = {**{f"activethief_{selection}": {"rounds": 5, "max_candidates": 3000, "deepfool_steps": 10}
                          for selection in ("random", "uncertainty", "kcenter", "dfal")},
                       "dfme": {"generator_width": 16}, "maze": {"generator_width": 16}}

_QUICK = {
    "common": {"seed": 0, "device": "cpu", "progress": True},
    "01_data": {"val_size": 5000, "attacker_pool_size": 10000, "victim_train_size": None,
                "test_size": None, "mnist_pool_size": None},
    "02_victim": {"model": "small_cnn", "epochs": 8, "batch_size": 128, "lr": 1e-3, "min_test_acc": 0.90},
    "03_pdb": {"lambda_gp": 0.1, "transition_ratio": 0.1, "strategy": "bisection", "penalty_method": "exact",
               "epochs": 2, "batch_size": 128, "lr": 5e-4, "target_flip_rate": 0.01,
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
    # ActiveThief, DFME and MAZE cost minutes each on 2 CPU cores; the full profile runs them.
    "06_attack_suite": {"attacks": ["knockoff_random", "knockoff_adaptive", "jbda", "jb_self", "jb_topk", "copycat",
                                    "knockoff_hard", "averaging", "flip_aware"],
                        "defenses": ["undefended", "pdb"], "pool": "fashion_mnist", "budgets": [5000],
                        "attack_kwargs": {},
                        "clone_model": "small_cnn_narrow", "clone_epochs": 10, "clone_lr": 1e-3},
    "07_ablations": {"variants": ["full", "penalty_only", "transition_only", "strategy_margin", "strategy_mixup"],
                     "train_size": 10000, "budget": 5000, "pool": "fashion_mnist", "boundary_samples": 200,
                     "clone_model": "small_cnn_narrow", "clone_epochs": 10},
    "08_report": {},
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
_SMOKE["06_attack_suite"].update({
    "budgets": [150, 300], "clone_epochs": 2, "attacks": _QUICK["06_attack_suite"]["attacks"] + _SLOW_ATTACKS,
    "attack_kwargs": {**_SLOW_ATTACK_KWARGS, "jbda": {"seed_size": 50},
                      "jb_self": {"seed_size": 50}, "jb_topk": {"seed_size": 50},
                      "dfme": {"generator_width": 8, "batch_size": 32}, "maze": {"generator_width": 8, "batch_size": 16}}})

_FULL = copy.deepcopy(_QUICK)
_FULL["06_attack_suite"].update({"budgets": [2000, 5000, 10000],
                                 "attacks": _QUICK["06_attack_suite"]["attacks"] + _SLOW_ATTACKS,
                                 "attack_kwargs": _SLOW_ATTACK_KWARGS})
_FULL["02_victim"].update({"epochs": 15})
_FULL["03_pdb"].update({"epochs": 5})
_FULL["04_attack"].update({"budgets": [1000, 2000, 5000, 10000, 20000], "clone_model": "small_cnn",
                           "clone_epochs": 30, "flip_form_budgets": [5000, 10000]})

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
