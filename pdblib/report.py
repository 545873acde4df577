"""Figures, tables and the run's ``index.html``.

Figures use seaborn on matplotlib's non-interactive backend; tables are pandas data frames
built from the JSON and CSV artifacts of a run, never from notebook state.
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from pdblib.runs import REPO_ROOT, RunDir  # noqa: E402
from pdblib.utils import atomic_write_text  # noqa: E402

logger = logging.getLogger(__name__)

DEFENSE_LABELS = {
    "undefended": "Undefended", "ce_finetuned": "CE fine-tuned", "pdb": "PDB",
    "pdb_swap_top2": "PDB (swap top-2)", "pdb_onehot_second": "PDB (one-hot runner-up)",
    "pdb_onehot_random": "PDB (one-hot keyed random)", "label_only": "Top-1 label only", "rounding": "Rounding",
    "gaussian_noise": "Gaussian noise", "reverse_sigmoid": "Reverse sigmoid", "mad": "MAD (prediction poisoning)",
    "adaptive_misinformation": "Adaptive misinformation", "bdpl": "BDPL",
}
POOL_LABELS = {"mnist": "MNIST pool (out of distribution)", "fashion_mnist": "Fashion-MNIST pool (in distribution)"}
OUTPUT_LABELS = {"probs": "soft labels", "labels": "hard labels"}


def set_style() -> None:
    """Apply the seaborn theme that every figure uses."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


def plot_image_grid(rows: dict[str, torch.Tensor], *, columns: int = 10, title: str | None = None):
    """Show the first ``columns`` images of each named batch ``(N, 1, H, W)`` as one row."""
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns, 1.35 * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(columns):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c, 0].cpu().numpy(), cmap="gray", vmin=0, vmax=1)
        axes[r, 0].set_title(label, loc="left", fontsize=10)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def history_frame(histories: dict[str, list[dict]]) -> pd.DataFrame:
    """Stack per-epoch records into one long data frame with a ``model`` column per history."""
    frames = [pd.DataFrame(records).assign(model=name) for name, records in histories.items() if records]
    return pd.concat(frames, ignore_index=True)


def plot_training_curves(histories: dict[str, list[dict]]):
    """Plot training loss and validation accuracy per epoch for each named history."""
    frame = history_frame(histories)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.lineplot(data=frame, x="epoch", y="train_loss", hue="model", marker="o", ax=axes[0])
    axes[0].set(xlabel="epoch", ylabel="training loss (CE + penalty for PDB)", title="Training loss")
    if "val_acc" in frame:
        sns.lineplot(data=frame, x="epoch", y="val_acc", hue="model", marker="o", ax=axes[1])
        axes[1].set(xlabel="epoch", ylabel="validation accuracy", title="Validation accuracy (benign)")
    fig.tight_layout()
    return fig


def plot_clone_accuracy(results: pd.DataFrame, *, victim_acc: float | None = None, y: str = "clone_acc"):
    """Plot clone accuracy against query budget: a panel per pool, a colour per defense, a dash per output."""
    frame = results.copy()
    frame["defense"] = frame["defense"].map(lambda name: DEFENSE_LABELS.get(name, name))
    frame["pool"] = frame["pool"].map(lambda name: POOL_LABELS.get(name, name))
    frame["output"] = frame["output"].map(lambda name: OUTPUT_LABELS.get(name, name))
    grid = sns.relplot(data=frame, x="budget", y=y, hue="defense", style="output", col="pool", kind="line",
                       markers=True, height=3.8, aspect=1.25, facet_kws={"sharey": True})
    label = {"clone_acc": "clone test accuracy", "fidelity_deployed": "fidelity to deployed network",
             "fidelity_victim": "fidelity to original victim"}.get(y, y)
    grid.set_axis_labels("query budget (queries)", label)
    grid.set_titles("{col_name}")
    if victim_acc is not None and y == "clone_acc":
        for ax in grid.axes.flat:
            ax.axhline(victim_acc, color="grey", linestyle=":", linewidth=1)
            ax.text(ax.get_xlim()[0], victim_acc, " victim", va="bottom", fontsize=8, color="grey")
    for ax in grid.axes.flat:
        ax.set_xscale("log")
    return grid.figure


def plot_transition_scores(scores: dict[str, torch.Tensor], threshold: float):
    """Plot histograms of PDB transition scores per input source, with the flip threshold."""
    frame = pd.concat([pd.DataFrame({"score": values.numpy(), "source": name}) for name, values in scores.items()],
                      ignore_index=True)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.histplot(data=frame, x="score", hue="source", stat="density", common_norm=False, element="step",
                 bins=60, ax=ax)
    ax.axvline(threshold, color="black", linestyle="--", linewidth=1)
    ax.text(threshold, ax.get_ylim()[1] * 0.95, " flip threshold", fontsize=9)
    ax.set(xlabel="transition score: logit_K minus best real logit", ylabel="density",
           title="Where inputs land: flipped when the score exceeds the threshold")
    fig.tight_layout()
    return fig


def save_figure(fig, path: str | Path) -> Path:
    """Save a figure as PNG at 110 dpi and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def utility_table(run: RunDir) -> pd.DataFrame:
    """Tabulate utility on the test set of the undefended victim, the CE-fine-tuned victim and PDB."""
    metrics = run.read_json("pdb", "metrics.json")
    frame = pd.DataFrame(metrics["utility_test"]).T
    frame.index = [DEFENSE_LABELS.get(name, name) for name in frame.index]
    columns = ["defended_acc", "acc_drop", "flip_rate", "l1_distortion", "deployed_acc"]
    return frame[columns].rename(columns={
        "defended_acc": "test accuracy", "acc_drop": "drop vs victim", "flip_rate": "benign flip rate",
        "l1_distortion": "mean L1 distortion", "deployed_acc": "unflipped accuracy"})


def clone_table(results: pd.DataFrame, value: str = "clone_acc") -> pd.DataFrame:
    """Pivot one metric into rows defense x pool x output and columns budget."""
    frame = results.copy()
    frame["defense"] = frame["defense"].map(lambda name: DEFENSE_LABELS.get(name, name))
    return frame.pivot_table(index=["defense", "pool", "output"], columns="budget", values=value).round(4)


def _table_html(frame: pd.DataFrame, float_format: str = "{:.4f}") -> str:
    return frame.to_html(float_format=lambda v: float_format.format(v), border=0, classes="table")


_INDEX_CSS = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table.table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
table.table th, table.table td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #eee; text-align: right; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5rem 0; }
code, pre { background: #f6f6f6; padding: 0.1rem 0.3rem; }
.note { color: #555; font-size: 0.9rem; }
"""


def write_index(run: RunDir, *, steps: list[str], wall_seconds: float | None = None) -> Path:
    """Write ``index.html`` for a run: summary tables, figures, step pages and run record."""
    params = json.loads((run.path / "params.json").read_text(encoding="utf-8"))
    env = json.loads((run.path / "environment.json").read_text(encoding="utf-8"))
    parts = [f"<h1>PDB model-stealing study: run <code>{html.escape(run.path.name)}</code></h1>",
             f"<p>Profile <b>{html.escape(params['profile'])}</b>, commit <code>{html.escape(env['git_commit'])}</code>"
             + "".join(f" (earlier steps: commit <code>{html.escape(p['git_commit'])}</code>)"
                       for p in env.get("previous", []) if p.get("git_commit") != env["git_commit"])
             + ", "
             f"torch {html.escape(str(env['packages'].get('torch')))}, {env['torch_threads']} torch threads, "
             f"CUDA available: {env['cuda_available']}."
             + (f" Chain wall time {wall_seconds / 60:.1f} min." if wall_seconds is not None else "") + "</p>"]

    summary_path = run.path / "artifacts" / "report" / "summary.html"
    if summary_path.exists():
        parts.append(summary_path.read_text(encoding="utf-8"))

    figures = sorted((run.path / "artifacts" / "report").glob("*.png"))
    if figures:
        parts.append("<h2>Figures</h2>")
        for figure in figures:
            rel = figure.relative_to(run.path).as_posix()
            parts.append(f"<figure><img src=\"{html.escape(rel)}\" alt=\"{html.escape(figure.stem)}\">"
                         f"<figcaption class=\"note\">{html.escape(figure.stem.replace('_', ' '))}</figcaption></figure>")

    benchmarks = REPO_ROOT / "docs" / "benchmarks.md"
    if benchmarks.exists():
        parts.append("<h2>Benchmarks</h2><p class=\"note\">From <code>docs/benchmarks.md</code> of this "
                     "checkout; it states the command, the machine and the commit that produced it.</p>")
        parts.append(markdown_to_html(benchmarks.read_text(encoding="utf-8"), heading_offset=2))

    parts.append("<h2>Executed notebooks</h2><ul>")
    for step in steps:
        page = run.path / "html" / f"{step}.html"
        if page.exists():
            parts.append(f"<li><a href=\"html/{step}.html\">{step}</a></li>")
        else:
            parts.append(f"<li>{step} (not executed in this run)</li>")
    parts.append("</ul>")
    parts.append("<h2>Run record</h2><p>Resolved parameters: <a href=\"params.json\">params.json</a>; "
                 "package versions and commit: <a href=\"environment.json\">environment.json</a>.</p>")
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>PDB run {html.escape(run.path.name)}</title><style>{_INDEX_CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    return atomic_write_text(run.path / "index.html", page)


def _findings(utility: dict, results: pd.DataFrame) -> list[str]:
    """Write plain-language findings from the measured numbers, good or bad for PDB."""
    findings = []
    victim, pdb, ce = utility["undefended"], utility["pdb"], utility["ce_finetuned"]
    findings.append(
        f"Undefended victim test accuracy {victim['defended_acc']:.2%}; PDB defended accuracy "
        f"{pdb['defended_acc']:.2%} (drop {pdb['acc_drop'] * 100:+.2f} points, benign flip rate "
        f"{pdb['flip_rate']:.2%}); the victim fine-tuned with plain CE for the same epochs reaches "
        f"{ce['defended_acc']:.2%}.")
    top = int(results["budget"].max())
    at_top = results[results["budget"] == top]
    for (pool, output), group in at_top.groupby(["pool", "output"]):
        by_defense = group.set_index("defense")
        if "undefended" not in by_defense.index or "pdb" not in by_defense.index:
            continue
        base, defended = by_defense.loc["undefended"], by_defense.loc["pdb"]
        delta = (defended["clone_acc"] - base["clone_acc"]) * 100
        verdict = "lowers" if delta < 0 else "does not lower"
        findings.append(
            f"{POOL_LABELS.get(pool, pool)}, {OUTPUT_LABELS.get(output, output)}, {top:,} queries: PDB {verdict} "
            f"clone accuracy ({base['clone_acc']:.2%} undefended, {defended['clone_acc']:.2%} against PDB, "
            f"{delta:+.2f} points); {defended['flip_fraction']:.1%} of the attack's queries were answered "
            f"with a flip; fidelity to the deployed network {defended['fidelity_deployed']:.2%} versus "
            f"{defended['fidelity_victim']:.2%} to the original victim.")
    return findings


def build_summary(run: RunDir) -> dict:
    """Build the run's summary tables and findings, and write ``artifacts/report/summary.html``.

    Returns
    -------
    dict
        ``utility``, ``clone_acc``, ``fidelity``, ``flip_fraction``, ``flip_forms``,
        ``defenses``, ``attack_suite``, ``ablations`` and ``tradeoff`` data frames (each but the
        first four None when its step has not run), and ``findings``, a list of sentences.
    """
    metrics = run.read_json("pdb", "metrics.json")
    results = run.read_csv("attack", "results.csv")
    flip_path = run.path / "artifacts" / "attack" / "flip_forms.csv"
    flip_forms = pd.read_csv(flip_path) if flip_path.exists() else None

    utility = utility_table(run)
    clone_acc = clone_table(results, "clone_acc")
    fidelity = clone_table(results, "fidelity_deployed")
    fidelity_victim = clone_table(results, "fidelity_victim")
    flip_fraction = clone_table(results[results["defense"] != "undefended"], "flip_fraction")
    flip_table = None
    if flip_forms is not None and len(flip_forms):
        flip_table = flip_forms.assign(defense=flip_forms["defense"].map(lambda n: DEFENSE_LABELS.get(n, n)))[
            ["defense", "pool", "output", "budget", "clone_acc", "fidelity_deployed", "flip_fraction"]]
    findings = _findings(metrics["utility_test"], results)

    config = metrics["config"]
    parts = [
        "<h2>Findings</h2><ul>" + "".join(f"<li>{html.escape(f)}</li>" for f in findings) + "</ul>",
        "<p class=\"note\">PDB setting behind every PDB number: "
        + html.escape(", ".join(f"{k}={v}" for k, v in config.items() if k != "synthesis"))
        + f", flip form {html.escape(metrics['flip_form'])}, threshold {metrics['threshold']:.4f} calibrated "
          f"on the validation split to a target benign flip rate of {metrics['target_flip_rate']:.2%}.</p>",
        "<h2>Utility on the test set</h2>", _table_html(utility),
        f"<p class=\"note\">Retraining cost: PDB {metrics['pdb_seconds_per_epoch']:.1f} s per epoch "
        f"(synthesis included) versus {metrics['ce_seconds_per_epoch']:.1f} s for plain CE fine-tuning, "
        "measured in the same run.</p>",
        "<h2>Clone test accuracy (Knockoff, random sampling)</h2>", _table_html(clone_acc),
        "<h2>Fidelity to the deployed network (unflipped top-1)</h2>", _table_html(fidelity),
        "<h2>Fidelity to the original victim</h2>", _table_html(fidelity_victim),
        "<h2>Fraction of attack queries answered with a flip</h2>", _table_html(flip_fraction),
    ]
    distance_path = run.path / "artifacts" / "pdb" / "boundary_distance.csv"
    if distance_path.exists():
        distances = pd.read_csv(distance_path)
        finite = distances[distances["distance"] < float("inf")]
        table = finite.groupby("model")["distance"].describe()[["count", "25%", "50%", "75%"]]
        table.index = [DEFENSE_LABELS.get(name, name) for name in table.index]
        parts += ["<h2>Distance to the nearest decision boundary (DeepFool L2, benign test images)</h2>",
                  _table_html(table)]
    defenses_table = _defense_summary(run)
    if defenses_table is not None:
        parts += ["<h2>PDB against the baseline defenses</h2>",
                  "<p class=\"note\">Utility on the test set, mean L1 distortion of the answers on test images and "
                  "on attack queries, latency relative to the undefended model timed in the same loop, and clone "
                  "accuracy per attack. Baseline knobs: " + html.escape(json.dumps(
                      run.read_json("baselines", "config.json")["knobs"])) + ".</p>",
                  _table_html(defenses_table)]
    suite_table = _suite_summary(run)
    if suite_table is not None:
        parts += ["<h2>Attack suite against the undefended victim and PDB</h2>", _table_html(suite_table)]
    ablation_table = _ablation_summary(run)
    if ablation_table is not None:
        parts += ["<h2>Ablations of PDB</h2>",
                  "<p class=\"note\">Every variant retrains from the same victim on the same subset of the training "
                  "split and is calibrated to the same target flip rate; clone accuracy under Knockoff (random).</p>",
                  _table_html(ablation_table)]
    averaging_path = run.path / "artifacts" / "attack" / "ablation_averaging.csv"
    if averaging_path.exists():
        averaging = pd.read_csv(averaging_path).set_index("defense")[
            ["budget", "clone_acc", "fidelity_deployed", "flip_fraction"]]
        averaging.index = [{"pdb": "PDB, keyed flips (same wrong class per input)",
                            "pdb_unkeyed": "PDB, new flip key per call"}.get(n, n) for n in averaging.index]
        parts += ["<h2>Averaging attack: keyed versus unkeyed flips</h2>", _table_html(averaging)]
    if flip_table is not None:
        parts += ["<h2>Flipped-answer forms (Fashion-MNIST pool, soft labels)</h2>",
                  _table_html(flip_table.set_index("defense"))]
    tradeoff_table = _tradeoff_summary(run)
    if tradeoff_table is not None:
        parts += ["<h2>Trade-off: each defense's strength swept</h2>",
                  "<p class=\"note\">Mean over attack seeds (<code>seeds</code> column) with one standard deviation; "
                  "<code>default</code> is the chain's own setting. The figure <i>08 tradeoff</i> plots these "
                  "points.</p>", _table_html(tradeoff_table)]
    atomic_write_text(run.path / "artifacts" / "report" / "summary.html", "\n".join(parts))
    return {"utility": utility, "clone_acc": clone_acc, "fidelity": fidelity, "flip_fraction": flip_fraction,
            "flip_forms": flip_table, "defenses": defenses_table, "attack_suite": suite_table,
            "ablations": ablation_table, "tradeoff": tradeoff_table, "findings": findings}


def _tradeoff_summary(run: RunDir) -> pd.DataFrame | None:
    """Tabulate the strength sweep: defended and clone accuracy per defense setting and attack setting."""
    path = run.path / "artifacts" / "tradeoff" / "tradeoff.csv"
    if not path.exists():
        return None
    table = pd.read_csv(path)
    table["defense"] = table["defense"].map(lambda name: DEFENSE_LABELS.get(name, name))
    columns = ["defended_acc", "clone_acc", "clone_acc_sd", "fidelity_deployed", "seeds"]
    return table.set_index(["defense", "strength", "attack", "pool", "output", "budget"])[columns].sort_index()


def _ablation_summary(run: RunDir) -> pd.DataFrame | None:
    """Tabulate the PDB ablation variants: knobs, utility, boundary distance and clone accuracy."""
    path = run.path / "artifacts" / "ablation" / "ablations.csv"
    if not path.exists():
        return None
    frame = pd.read_csv(path).set_index("variant")
    columns = ["lambda_gp", "transition_ratio", "strategy", "defended_acc", "acc_drop", "flip_rate",
               "median_boundary_distance", "clone_acc", "fidelity_deployed", "attack_flip_fraction",
               "retrain_seconds"]
    return frame[[c for c in columns if c in frame]]


def _defense_summary(run: RunDir) -> pd.DataFrame | None:
    """Tabulate per defense its utility, distortion, latency ratios and clone accuracy per attack setting."""
    table_path = run.path / "artifacts" / "baselines" / "defense_table.csv"
    if not table_path.exists():
        return None
    table = pd.read_csv(table_path).set_index("defense")
    columns = {"defended_acc": "test acc", "acc_drop": "drop", "flip_rate": "benign flip rate",
               "l1_distortion": "L1 test", "l1_queries_mnist": "L1 MNIST queries",
               "l1_queries_fashion_mnist": "L1 FMNIST queries", "latency_ratio_b1": "latency x (batch 1)",
               "latency_ratio_b256": "latency x (batch 256)"}
    out = table[[c for c in columns if c in table]].rename(columns=columns)
    for name in ("baselines_knockoff.csv", "baselines_jbda.csv"):
        path = run.path / "artifacts" / "attack" / name
        if path.exists():
            results = pd.read_csv(path)
            pivot = results.pivot_table(index="defense", columns=["attack", "pool", "budget"], values="clone_acc")
            pivot.columns = [f"clone {a} {p} @{b}" for a, p, b in pivot.columns]
            out = out.join(pivot)
    out.index = [DEFENSE_LABELS.get(name, name) for name in out.index]
    return out


def _suite_summary(run: RunDir) -> pd.DataFrame | None:
    """Tabulate per attack and budget the clone accuracy, fidelity, flip fraction and seconds against undefended and PDB."""
    path = run.path / "artifacts" / "attack" / "suite.csv"
    if not path.exists():
        return None
    suite = pd.read_csv(path)
    pivot = suite.pivot_table(index=["attack", "budget"], columns="defense",
                              values=["clone_acc", "fidelity_deployed", "flip_fraction", "seconds"])
    pivot.columns = [f"{value} ({DEFENSE_LABELS.get(defense, defense)})" for value, defense in pivot.columns]
    return pivot


def plot_boundary_distance(frame: pd.DataFrame):
    """Plot histograms of DeepFool L2 distances to the nearest boundary, per model."""
    data = frame[frame["distance"] < float("inf")].copy()
    data["model"] = data["model"].map(lambda name: DEFENSE_LABELS.get(name, name))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    sns.histplot(data=data, x="distance", hue="model", element="step", stat="density", common_norm=False,
                 bins=50, ax=ax)
    ax.set(xlabel="DeepFool L2 distance to the nearest real-class boundary (pixels in [0, 1])",
           ylabel="density", title="Distance from benign test inputs to the decision boundary")
    fig.tight_layout()
    return fig


def plot_tradeoff_points(table: pd.DataFrame, results: pd.DataFrame):
    """Plot clone accuracy against defended test accuracy: a point per defense, a panel per attack setting."""
    merged = results.drop(columns=["defended_acc"], errors="ignore").merge(table[["defense", "defended_acc"]],
                                                                          on="defense")
    merged["setting"] = merged["attack"] + ", " + merged["pool"] + ", " + merged["budget"].astype(str) + " queries"
    merged["defense"] = merged["defense"].map(lambda name: DEFENSE_LABELS.get(name, name))
    grid = sns.relplot(data=merged, x="defended_acc", y="clone_acc", hue="defense", style="defense",
                       col="setting", col_wrap=3, s=90, height=3.6, aspect=1.1)
    grid.set_axis_labels("defended test accuracy", "clone test accuracy")
    grid.set_titles("{col_name}")
    return grid.figure


def plot_attack_suite(suite: pd.DataFrame):
    """Plot clone accuracy and fidelity to the deployed network per attack, a row of panels per budget."""
    frame = suite.copy()
    frame["defense"] = frame["defense"].map(lambda name: DEFENSE_LABELS.get(name, name))
    long = frame.melt(id_vars=["attack", "defense", "budget"], value_vars=["clone_acc", "fidelity_deployed"],
                      var_name="metric", value_name="value")
    long["metric"] = long["metric"].map({"clone_acc": "clone test accuracy",
                                         "fidelity_deployed": "fidelity to deployed network"})
    grid = sns.catplot(data=long, kind="bar", x="attack", y="value", hue="defense", col="metric", row="budget",
                       height=3.6, aspect=1.9, sharey=True)
    grid.set_axis_labels("attack", "fraction of test images")
    grid.set_titles("{col_name}, {row_name} queries")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=45)
    return grid.figure


TRADEOFF_KEYS = ["defense", "defense_knobs", "attack", "pool", "output", "budget"]


def strength_label(defense: str, knobs: str) -> str:
    """Short label of a defense setting, e.g. ``"epsilon=0.1"``, or ``"default"`` for ``"{}"``."""
    values = json.loads(knobs) if isinstance(knobs, str) and knobs else {}
    return ", ".join(f"{k}={v}" for k, v in sorted(values.items())) or "default"


def aggregate_over_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of defended and clone accuracy per setting.

    Parameters
    ----------
    rows : pandas.DataFrame
        Attack result rows (columns of :data:`pdblib.stages.RESULT_COLUMNS`).

    Returns
    -------
    pandas.DataFrame
        One row per :data:`TRADEOFF_KEYS` combination with ``defended_acc``, ``clone_acc`` and
        ``fidelity_deployed`` means, their ``*_sd`` (0 for a single seed) and ``seeds``.
    """
    frame = rows.copy()
    frame["defense_knobs"] = frame["defense_knobs"].fillna("{}").astype(str)
    if "seed" not in frame:
        frame["seed"] = 0
    grouped = frame.groupby(TRADEOFF_KEYS, dropna=False)
    means = grouped[["defended_acc", "clone_acc", "fidelity_deployed"]].mean()
    spread = grouped[["defended_acc", "clone_acc", "fidelity_deployed"]].std(ddof=1).fillna(0.0)
    out = means.join(spread.add_suffix("_sd")).join(grouped["seed"].nunique().rename("seeds")).reset_index()
    out["strength"] = [strength_label(d, k) for d, k in zip(out["defense"], out["defense_knobs"])]
    return out


def plot_tradeoff_curves(results: pd.DataFrame):
    """Plot clone accuracy against defended accuracy as each defense's strength is swept.

    ``results`` holds attack rows (a sweep's, plus the chain's default-strength rows) with
    ``defense``, ``defense_knobs`` (JSON), ``defended_acc``, ``clone_acc``, ``attack``,
    ``pool``, ``output``, ``budget`` and ``seed``. One line per defense through its strengths,
    ordered by defended accuracy, one panel per attack setting; error bars are one standard
    deviation over seeds where there are several.
    """
    table = aggregate_over_seeds(results)
    table["setting"] = (table["attack"] + ", " + table["pool"] + ", " + table["output"] + ", "
                        + table["budget"].astype(int).map("{:,}".format) + " queries")
    settings = sorted(table["setting"].unique())
    columns = min(2, len(settings))
    rows_n = -(-len(settings) // columns)
    fig, axes = plt.subplots(rows_n, columns, figsize=(6.4 * columns, 4.8 * rows_n), squeeze=False)
    palette = dict(zip(sorted(table["defense"].unique()), sns.color_palette("tab10", table["defense"].nunique())))
    for ax, setting in zip(axes.flat, settings):
        panel = table[table["setting"] == setting]
        for defense, group in panel.groupby("defense"):
            group = group.sort_values("defended_acc")
            ax.errorbar(group["defended_acc"] * 100, group["clone_acc"] * 100, xerr=group["defended_acc_sd"] * 100,
                        yerr=group["clone_acc_sd"] * 100, marker="o", capsize=3, color=palette[defense],
                        label=DEFENSE_LABELS.get(defense, defense))
            for _, row in group.iterrows():
                if row["strength"] != "default" or len(group) > 1:
                    ax.annotate(row["strength"], (row["defended_acc"] * 100, row["clone_acc"] * 100), fontsize=7,
                                xytext=(3, 3), textcoords="offset points", color=palette[defense])
        ax.set(xlabel="defended test accuracy (%)", ylabel="clone test accuracy (%)", title=setting)
        ax.legend(fontsize=8, loc="best")
    for ax in list(axes.flat)[len(settings):]:
        ax.set_visible(False)
    fig.suptitle("Security-utility trade-off: lower clone accuracy at higher defended accuracy is better")
    fig.tight_layout()
    return fig


def plot_budget_curves(results: pd.DataFrame):
    """Plot clone accuracy against query budget per defense, mean and one standard deviation over seeds."""
    frame = results.copy()
    frame["defense"] = [DEFENSE_LABELS.get(d, d) + ("" if strength_label(d, k) == "default"
                                                    else f" ({strength_label(d, k)})")
                        for d, k in zip(frame["defense"], frame["defense_knobs"].fillna("{}").astype(str))]
    frame["setting"] = frame["attack"] + ", " + frame["pool"] + ", " + frame["output"]
    frame["clone accuracy (%)"] = frame["clone_acc"] * 100
    grid = sns.relplot(data=frame, x="budget", y="clone accuracy (%)", hue="defense", col="setting", col_wrap=2,
                       kind="line", marker="o", errorbar="sd", height=3.8, aspect=1.3)
    grid.set_axis_labels("query budget", "clone test accuracy (%)")
    grid.set_titles("{col_name}")
    return grid.figure


def plot_pdb_knob_curves(ablations: pd.DataFrame, *, base_lambda: float, base_ratio: float):
    """Plot PDB's own trade-off as ``lambda_gp`` and the transition ratio move (retrained variants).

    ``ablations`` contains the rows of ``artifacts/ablation/ablations.csv``; a curve collects the
    variants that share the run's synthesis strategy and the other knob's base value.
    """
    frame = ablations.copy()
    base_strategy = frame.loc[frame["variant"] == "full", "strategy"]
    if len(base_strategy):
        frame = frame[frame["strategy"] == base_strategy.iloc[0]]
    curves = {"lambda_gp": frame[frame["transition_ratio"] == base_ratio],
              "transition_ratio": frame[frame["lambda_gp"] == base_lambda]}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (knob, group) in zip(axes, curves.items()):
        group = group.drop_duplicates(knob).sort_values(knob)
        ax.plot(group["defended_acc"] * 100, group["clone_acc"] * 100, marker="o")
        for _, row in group.iterrows():
            ax.annotate(f"{knob}={row[knob]:g}", (row["defended_acc"] * 100, row["clone_acc"] * 100), fontsize=8,
                        xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel="defended test accuracy (%)", ylabel="Knockoff clone test accuracy (%)",
               title=f"PDB retrained with {knob} varied")
    fig.suptitle("PDB's knobs (variants retrained on a subset of the training split; see 07_ablations)")
    fig.tight_layout()
    return fig


def _inline_markdown(text: str) -> str:
    """Escape ``text`` and turn Markdown code spans and bold into HTML."""
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def markdown_to_html(text: str, *, heading_offset: int = 0) -> str:
    """Convert the Markdown subset of generated pages (headings, pipe tables, code fences, paragraphs).

    ``heading_offset`` demotes headings, so a page's ``#`` becomes ``<h3>`` with offset 2.
    """
    blocks, paragraph, lines = [], [], text.splitlines()
    i = 0

    def flush():
        if paragraph:
            blocks.append("<p>" + _inline_markdown(" ".join(paragraph)) + "</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            blocks.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        if line.startswith("#"):
            flush()
            level = min(len(line) - len(line.lstrip("#")) + heading_offset, 6)
            blocks.append(f"<h{level}>{_inline_markdown(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("|"):
            flush()
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [cell.strip() for cell in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-{3,}:?", cell) for cell in cells):
                    rows.append(cells)
                i += 1
            head = "".join(f"<th>{_inline_markdown(c)}</th>" for c in rows[0]) if rows else ""
            body = "".join("<tr>" + "".join(f"<td>{_inline_markdown(c)}</td>" for c in row) + "</tr>"
                           for row in rows[1:])
            blocks.append(f"<table class=\"table\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        elif not line.strip():
            flush()
        else:
            paragraph.append(line.strip().lstrip("-* ").strip() if line.lstrip().startswith(("- ", "* ")) else line.strip())
        i += 1
    flush()
    return "\n".join(blocks)
