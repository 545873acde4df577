"""The steps of the notebook chain as library functions.

Each notebook validates its parameters, calls one ``stage_*`` function, plots and asserts.
Every stage reads the previous steps' artifacts from the run folder and writes its own, so a
notebook can be re-executed alone with papermill.
"""

from __future__ import annotations

import copy
import json
import logging
import time

import pandas as pd
import torch
from torch import nn

from pdblib.attacks import QueryOracle, build_attack
from pdblib.core import PDBConfig, PDBDefense, pdb_retrain
from pdblib.core.inference import FLIP_FORMS
from pdblib.data import DataBundle, SplitSpec, load_bundle, prepare_fashion_mnist
from pdblib.defenses import Defense, Undefended
from pdblib.metrics import clone_metrics, reference_predictions, utility_metrics
from pdblib.models import build_model
from pdblib.runs import RunDir
from pdblib.training import TrainConfig, accuracy, predict_logits, train_model
from pdblib.utils import InputError, check_choice, load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

BASELINE_NAMES = ("label_only", "rounding", "gaussian_noise", "reverse_sigmoid", "mad", "adaptive_misinformation",
                  "bdpl")
DEFENSE_NAMES = (("undefended", "ce_finetuned", "pdb", "pdb_unkeyed") + tuple(f"pdb_{form}" for form in FLIP_FORMS)
                 + BASELINE_NAMES)
POOL_NAMES = ("mnist", "fashion_mnist")
OUTPUT_NAMES = ("probs", "labels")


# ----------------------------------------------------------------------------- data

def stage_data(run: RunDir, *, dataset: str = "fashion_mnist", seed: int = 0, val_size: int = 5000,
               attacker_pool_size: int = 10000, victim_train_size: int | None = None,
               test_size: int | None = None, mnist_pool_size: int | None = None,
               allow_download: bool = False) -> DataBundle:
    """Prepare the data, draw the seeded splits and record them in ``artifacts/data``."""
    prepare_fashion_mnist(download=allow_download)
    spec = SplitSpec(val_size=val_size, attacker_pool_size=attacker_pool_size,
                     victim_train_size=victim_train_size, test_size=test_size,
                     mnist_pool_size=mnist_pool_size, seed=seed)
    bundle = load_bundle(dataset, spec)
    run.write_json("data", "splits.json", {"dataset": dataset, "seed": seed, "splits": bundle.splits})
    run.write_json("data", "summary.json", {
        "dataset": dataset, "seed": seed, "sizes": bundle.summary(),
        "class_names": list(bundle.class_names),
        "train_class_counts": torch.bincount(bundle.y_train, minlength=bundle.num_classes).tolist(),
    })
    return bundle


def load_run_data(run: RunDir) -> DataBundle:
    """Reload the exact tensors of the run from its recorded splits."""
    record = run.read_json("data", "splits.json")
    return load_bundle(record["dataset"], splits=record["splits"])


# ----------------------------------------------------------------------------- victim

def stage_victim(run: RunDir, bundle: DataBundle, *, model: str = "small_cnn", epochs: int = 8,
                 batch_size: int = 128, lr: float = 1e-3, seed: int = 0, device: str = "cpu",
                 progress: bool = True) -> tuple[nn.Module, list, dict]:
    """Train the undefended victim on ``victim_train``; save it with its history and metrics."""
    torch.manual_seed(seed)
    victim = build_model(model, bundle.num_classes)
    history = train_model(victim, bundle.x_train, bundle.y_train,
                          TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed),
                          x_val=bundle.x_val, y_val=bundle.y_val, device=device, progress=progress,
                          desc="victim")
    metrics = {
        "model": model, "epochs": epochs, "train_seconds": history.seconds,
        "val_acc": accuracy(victim, bundle.x_val, bundle.y_val),
        "test_acc": accuracy(victim, bundle.x_test, bundle.y_test),
    }
    save_checkpoint(run.artifact("victim", "victim.pt"), {"model": model, "state_dict": victim.state_dict(),
                                                           "num_classes": bundle.num_classes})
    run.write_json("victim", "history.json", history.records)
    run.write_json("victim", "metrics.json", metrics)
    return victim, history.records, metrics


def _load_model(path) -> nn.Module:
    state = load_checkpoint(path)
    model = build_model(state["model"], int(state["num_classes"]))
    if int(state.get("outputs", state["num_classes"])) != model.num_outputs:
        model.head = nn.Linear(model.head.in_features, int(state["outputs"]))
    model.load_state_dict(state["state_dict"])
    return model.eval()


def load_victim(run: RunDir) -> nn.Module:
    """Load the run's trained victim."""
    return _load_model(run.artifact("victim", "victim.pt"))


# ----------------------------------------------------------------------------- PDB

def stage_pdb(run: RunDir, bundle: DataBundle, victim: nn.Module, *, config: PDBConfig,
              target_flip_rate: float = 0.01, flip_form: str = "onehot_random", secret_seed: int = 12345,
              device: str = "cpu", progress: bool = True) -> dict:
    """Retrain the victim with PDB, calibrate the flip threshold, and fine-tune a CE baseline.

    The CE baseline is the victim fine-tuned with plain cross-entropy for the same epochs,
    batch size and learning rate as PDB's retraining, so that extra training alone is not
    credited to PDB.

    Returns
    -------
    dict
        Utility metrics on the test set per model, the threshold, timings and flip rates of
        the pools (the fraction of each attacker pool that would be answered with a flip).
    """
    k = bundle.num_classes
    start = time.perf_counter()
    pdb_model, history, transition = pdb_retrain(victim, bundle.x_train, bundle.y_train, config, num_classes=k,
                                                 x_val=bundle.x_val, y_val=bundle.y_val, device=device,
                                                 progress=progress)
    pdb_seconds = time.perf_counter() - start

    defense = PDBDefense(pdb_model, k, flip_form=flip_form, secret_seed=secret_seed, device=device)
    argmax_rule_val_rate = float((defense.scores(bundle.x_val) > 0).float().mean())
    threshold = defense.calibrate(bundle.x_val, target_flip_rate)

    ce_model = copy.deepcopy(victim)
    ce_history = train_model(ce_model, bundle.x_train, bundle.y_train, config.train_config(),
                             x_val=bundle.x_val, y_val=bundle.y_val, device=device, progress=progress,
                             desc="CE fine-tune")

    save_checkpoint(run.artifact("pdb", "pdb.pt"), {
        "model": _model_name(run), "state_dict": pdb_model.state_dict(), "num_classes": k, "outputs": k + 1,
        "threshold": threshold, "flip_form": flip_form, "secret_seed": secret_seed})
    save_checkpoint(run.artifact("pdb", "ce_finetuned.pt"), {
        "model": _model_name(run), "state_dict": ce_model.state_dict(), "num_classes": k})
    if transition is not None:
        save_checkpoint(run.artifact("pdb", "transition_samples.pt"),
                        {"x": transition.x[:256].clone(), "margin": transition.margin[:256].clone(),
                         "strategy": transition.strategy})

    utility = {
        "undefended": utility_metrics(Undefended(victim, k), victim, bundle.x_test, bundle.y_test),
        "ce_finetuned": utility_metrics(Undefended(ce_model, k), victim, bundle.x_test, bundle.y_test),
        "pdb": utility_metrics(defense, victim, bundle.x_test, bundle.y_test),
    }
    val_pdb = utility_metrics(defense, victim, bundle.x_val, bundle.y_val)
    pool_flip = {name: float(defense.answer(pool).flipped.float().mean()) for name, pool in bundle.pools.items()}
    summary = {
        "config": config.to_dict(), "target_flip_rate": target_flip_rate, "flip_form": flip_form,
        "threshold": threshold, "argmax_rule_val_flip_rate": argmax_rule_val_rate,
        "transition_samples": 0 if transition is None else len(transition),
        "transition_median_margin": None if transition is None else float(transition.margin.median()),
        "pdb_seconds": pdb_seconds, "ce_finetune_seconds": ce_history.seconds,
        "pdb_seconds_per_epoch": pdb_seconds / config.epochs,
        "ce_seconds_per_epoch": ce_history.seconds / config.epochs,
        "utility_test": utility, "pdb_val": val_pdb, "pool_flip_rate": pool_flip,
    }
    run.write_json("pdb", "metrics.json", summary)
    run.write_json("pdb", "history.json", {"pdb": history.records, "ce_finetuned": ce_history.records})
    return summary


def _model_name(run: RunDir) -> str:
    return load_checkpoint(run.artifact("victim", "victim.pt"))["model"]


def load_defense(run: RunDir, name: str, *, device: str = "cpu", knobs: dict | None = None) -> Defense:
    """Build a named defense from the run's checkpoints.

    Names: ``undefended``, ``ce_finetuned`` (the CE-fine-tuned victim, undefended), ``pdb``
    (the calibrated flip form), ``pdb_unkeyed`` (the same, with a new flip key on every call),
    ``pdb_<form>`` for each flip form with the same threshold, and
    the baselines of :data:`BASELINE_NAMES` with the knobs recorded by :func:`stage_baselines`.
    ``knobs`` overrides constructor arguments (a baseline's strength, or PDB's ``threshold``
    and ``flip_form``); sweeps use it. For PDB, the knob ``target_flip_rate`` recalibrates the
    threshold on the run's validation split to that benign flip rate instead, which is how a
    sweep varies PDB's strength without knowing the score scale.
    """
    check_choice(name, DEFENSE_NAMES, what="defense")
    if name in BASELINE_NAMES:
        from pdblib.stages_baselines import load_baseline

        return load_baseline(run, name, device=device, knobs=knobs)
    if name == "undefended":
        return Undefended(load_victim(run), _num_classes(run), device=device)
    if name == "ce_finetuned":
        return Undefended(_load_model(run.artifact("pdb", "ce_finetuned.pt")), _num_classes(run), device=device)
    state = load_checkpoint(run.artifact("pdb", "pdb.pt"))
    model = _load_model(run.artifact("pdb", "pdb.pt"))
    form = state["flip_form"] if name in ("pdb", "pdb_unkeyed") else name[len("pdb_"):]
    settings = {"threshold": float(state["threshold"]), "flip_form": form, "secret_seed": int(state["secret_seed"]),
                "deterministic_flips": name != "pdb_unkeyed"}
    knobs = dict(knobs or {})
    target_flip_rate = knobs.pop("target_flip_rate", None)
    if target_flip_rate is not None and "threshold" in knobs:
        raise InputError("give PDB either 'threshold' or 'target_flip_rate' in the knobs, not both")
    settings.update(knobs)
    defense = PDBDefense(model, int(state["num_classes"]), device=device, **settings)
    if target_flip_rate is not None:
        defense.calibrate(load_run_data(run).x_val, float(target_flip_rate))
    defense.name = name
    return defense


def _num_classes(run: RunDir) -> int:
    return int(load_checkpoint(run.artifact("victim", "victim.pt"))["num_classes"])


# ----------------------------------------------------------------------------- attacks

RESULT_COLUMNS = ["defense", "attack", "pool", "output", "budget", "seed", "queries_used", "clone_acc",
                  "normalized_clone_acc", "fidelity_victim", "fidelity_deployed", "flip_fraction",
                  "victim_acc", "defended_acc", "seconds", "defense_knobs"]


class ReferenceCache:
    """Test-set predictions that stay the same across the attack runs of one run folder.

    Step 06 calls :func:`stage_attacks` once per attack, and every call needs the victim's and
    each defense's predictions on the same test images. An entry is reused while the test
    tensor is the same object and the checkpoints and knob records it depends on are unchanged
    (same modification times), so a re-trained victim or re-fitted baseline is predicted anew.
    """

    def __init__(self):
        self._entries: dict[tuple, tuple] = {}

    @staticmethod
    def stamp(run: RunDir) -> tuple:
        """Return the modification times of the run's checkpoints and knob records."""
        files = []
        for step in ("victim", "pdb", "baselines"):
            folder = run.path / "artifacts" / step
            if folder.is_dir():
                files += sorted(folder.glob("*.pt")) + sorted(folder.glob("config.json"))
        return tuple((str(path), path.stat().st_mtime_ns) for path in files)

    def get(self, key: tuple, x: torch.Tensor, stamp: tuple, compute):
        """Return ``compute()`` for ``key``, computed again only when ``x`` or ``stamp`` changed."""
        entry = self._entries.get(key)
        if entry is None or entry[0] is not x or entry[1] != stamp:
            entry = (x, stamp, compute())
            self._entries[key] = entry
        return entry[2]


_REFERENCE_CACHE = ReferenceCache()


def stage_attacks(run: RunDir, bundle: DataBundle, *, defenses: list[str], attack: str = "knockoff_random",
                  pools: list[str], outputs: list[str], budgets: list[int], seed: int = 0,
                  clone_model: str = "small_cnn_narrow", clone_epochs: int = 10, clone_lr: float = 1e-3,
                  clone_batch_size: int = 128, attack_kwargs: dict | None = None, filename: str = "results.csv",
                  defense_knobs: dict[str, dict] | None = None, device: str = "cpu",
                  progress: bool = True) -> pd.DataFrame:
    """Run ``attack`` against each defense, pool and output form at every budget.

    Results go to ``artifacts/attack/<filename>``, one row per (defense, pool, output, budget),
    written after each combination finishes. Combinations already in the file are skipped, so
    an interrupted step resumes where it stopped. ``defense_knobs`` maps a defense name to
    constructor overrides (see :func:`load_defense`); they are recorded in the ``defense_knobs``
    column.
    """
    for name in defenses:
        check_choice(name, DEFENSE_NAMES, what="defense")
    for name in pools:
        check_choice(name, POOL_NAMES, what="pool")
    for name in outputs:
        check_choice(name, OUTPUT_NAMES, what="oracle output")
    if not budgets or min(budgets) < 1:
        raise InputError(f"budgets must be a non-empty list of positive ints, got {budgets}")
    budgets = sorted(int(b) for b in budgets)

    path = run.artifact("attack", filename)
    done = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=RESULT_COLUMNS)
    victim = load_victim(run)
    stamp = ReferenceCache.stamp(run)
    run_key = str(run.path.resolve())
    victim_pred = _REFERENCE_CACHE.get((run_key, "victim"), bundle.x_test, stamp,
                                      lambda: predict_logits(victim, bundle.x_test).argmax(dim=1))
    victim_acc = float((victim_pred == bundle.y_test).float().mean())

    for defense_name in defenses:
        knobs = (defense_knobs or {}).get(defense_name)
        defense = load_defense(run, defense_name, device=device, knobs=knobs)
        # Unkeyed PDB draws a new flip key on every call, so its defended labels are not reused.
        reusable = defense.deterministic
        defense_key = (run_key, defense_name, json.dumps(knobs or {}, sort_keys=True))
        defended_acc = deployed_pred = None
        for pool_name in pools:
            for output in outputs:
                key = (done["defense"] == defense_name) & (done["attack"] == attack) & \
                      (done["pool"] == pool_name) & (done["output"] == output) & (done["seed"] == seed)
                if set(budgets) <= set(done.loc[key, "budget"].astype(int)):
                    logger.info("skipping %s/%s/%s/%s: already in %s", defense_name, attack, pool_name, output, path)
                    continue
                if defended_acc is None:
                    def predict(defense=defense):
                        return reference_predictions(defense, bundle.x_test)

                    if reusable:
                        labels, deployed_pred = _REFERENCE_CACHE.get(defense_key, bundle.x_test, stamp, predict)
                    else:
                        labels, deployed_pred = predict()
                    defended_acc = float((labels == bundle.y_test).float().mean())
                start = time.perf_counter()
                oracle = QueryOracle(defense, max(budgets), output=output)
                attacker = build_attack(attack, clone_model=clone_model, seed=seed, device=device, progress=progress,
                                        clone_train=TrainConfig(epochs=clone_epochs, lr=clone_lr,
                                                                batch_size=clone_batch_size, seed=seed),
                                        **(attack_kwargs or {}))
                result = attacker.run(oracle, bundle.pools[pool_name], budgets)
                seconds = time.perf_counter() - start
                flipped = torch.cat(oracle.log.flipped)
                rows = []
                for budget, clone in result.clones.items():
                    metrics = clone_metrics(clone, bundle.x_test, bundle.y_test, victim=victim, defense=defense,
                                            victim_pred=victim_pred, deployed_pred=deployed_pred)
                    rows.append({"defense": defense_name, "attack": attack, "pool": pool_name, "output": output,
                                 "budget": budget, "seed": seed, "queries_used": min(budget, oracle.used),
                                 "flip_fraction": float(flipped[:budget].float().mean()),
                                 "victim_acc": victim_acc, "defended_acc": defended_acc, "seconds": seconds,
                                 "defense_knobs": json.dumps(knobs or {}, sort_keys=True), **metrics})
                    logger.info("%s vs %s, pool %s, %s, budget %d: clone acc %.4f", attack, defense_name,
                                pool_name, output, budget, metrics["clone_acc"])
                done = pd.concat([done[~(key & done["budget"].isin(budgets))], pd.DataFrame(rows)],
                                 ignore_index=True)[RESULT_COLUMNS]
                run.write_csv("attack", filename, done)
    return done


# ----------------------------------------------------------------------------- mechanism

def stage_boundary_distance(run: RunDir, bundle: DataBundle, *, samples: int = 500, max_iter: int = 50) -> dict:
    """DeepFool L2 distance of benign test inputs to the nearest boundary, victim versus PDB.

    Uses the first ``samples`` test images. Writes ``artifacts/pdb/boundary_distance.csv`` (one
    row per image and model) and returns the medians.
    """
    from pdblib.analysis import deepfool_distance

    if samples < 1:
        raise InputError(f"samples must be at least 1, got {samples}")
    x = bundle.x_test[:samples]
    k = bundle.num_classes
    models = {"undefended": load_victim(run), "pdb": _load_model(run.artifact("pdb", "pdb.pt")),
              "ce_finetuned": _load_model(run.artifact("pdb", "ce_finetuned.pt"))}
    frames = []
    for name, model in models.items():
        distance = deepfool_distance(model, x, num_classes=k, max_iter=max_iter)
        frames.append(pd.DataFrame({"model": name, "index": range(len(x)), "distance": distance.numpy()}))
    frame = pd.concat(frames, ignore_index=True)
    run.write_csv("pdb", "boundary_distance.csv", frame)
    finite = frame[frame["distance"] < float("inf")]
    return {name: float(group["distance"].median()) for name, group in finite.groupby("model")}


# ----------------------------------------------------------------------------- deployment

def stage_export(run: RunDir, bundle: DataBundle, *, device: str = "cpu") -> dict:
    """Export the PDB-defended model as one TorchScript module and compare it on the whole test set.

    Writes ``artifacts/pdb/pdb_deployed.pt`` and ``artifacts/pdb/export.json`` with the number
    of test images whose label or flip flag differs between the module and the Python defense,
    and the largest absolute difference of their posteriors.
    """
    from pdblib.core.export import export_torchscript, load_torchscript

    defense = load_defense(run, "pdb", device=device)
    path = export_torchscript(defense, run.artifact("pdb", "pdb_deployed.pt"))
    module = load_torchscript(path)
    label_mismatch = flip_mismatch = 0
    max_abs_diff = 0.0
    with torch.inference_mode():
        for start in range(0, len(bundle.x_test), 1000):
            xb = bundle.x_test[start:start + 1000]
            expected = defense.answer(xb)
            probs, flipped = module.answer(xb)
            label_mismatch += int((probs.argmax(dim=1) != expected.labels).sum())
            flip_mismatch += int((flipped != expected.flipped).sum())
            max_abs_diff = max(max_abs_diff, float((probs - expected.probs).abs().max()))
    record = {"test_images": len(bundle.x_test), "label_mismatches": label_mismatch,
              "flip_mismatches": flip_mismatch, "max_abs_prob_diff": max_abs_diff,
              "network_export": getattr(module, "network_export", "unknown"), "bytes": path.stat().st_size}
    run.write_json("pdb", "export.json", record)
    return record
