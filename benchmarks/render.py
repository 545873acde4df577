"""Render benchmark results (the JSON of ``benchmarks.run``) as a Markdown page.

Usage::

    python -m benchmarks.render benchmarks/results.json --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pdblib.utils import atomic_write_text, read_json

_INFERENCE_DESCRIPTIONS = {
    "network": "undefended victim network, eager `softmax(victim(x))` (baseline)",
    "network_torchscript": "undefended victim network, traced with TorchScript",
    "pdb_torchscript": "PDB exported as one TorchScript module (flip rule included)",
    "pdb": "PDB, Python `PDBDefense.answer`",
    "undefended": "`Undefended.answer` (Defense API: validation plus softmax)",
}


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _spread(stats: dict, digits: int) -> str:
    """Format a summary as ``median (IQR q1 to q3)``."""
    return f"{stats['median']:.{digits}f} ({stats['q1']:.{digits}f} to {stats['q3']:.{digits}f})"


def _machine_section(results: dict) -> list[str]:
    machine = results["machine"]
    facts = [
        ["CPU", str(machine.get("cpu_model"))],
        ["cores (logical / usable)", f"{machine.get('logical_cores')} / {machine.get('usable_cores')}"],
        ["memory", f"{machine.get('memory_gib')} GiB"],
        ["torch", f"{machine.get('torch')}, {machine.get('torch_threads')} intra-op threads, "
                  f"{machine.get('torch_interop_threads')} inter-op threads"],
        ["Python", str(machine.get("python"))],
        ["platform", str(machine.get("platform"))],
        ["device", str(results.get("device", "cpu"))],
        ["git commit", str(results.get("git_commit"))],
        ["created", str(results.get("created"))],
    ]
    return ["## Machine", ""] + _table(["fact", "value"], facts) + [""]


def _inference_section(inference: dict) -> list[str]:
    latency_batch = inference["rows"][0]["latency"]["batch_size"]
    throughput_batch = inference["rows"][0]["throughput"]["batch_size"]
    pdb = inference["pdb"]
    lines = [
        "## Defended inference",
        "",
        f"Victim `{inference['model']}` (untrained, K = {inference['num_classes']}, inputs "
        f"{'x'.join(str(v) for v in inference['input_shape'])}), under `torch.inference_mode` on the CPU. "
        f"Latency is the time of one call at batch {latency_batch}; throughput is inputs per second "
        f"at batch {throughput_batch}. Each cell is the median with the interquartile range in "
        "brackets. The ratio columns divide the median by the baseline's median from the same run: "
        "a latency ratio above 1 and a throughput ratio below 1 mean slower than the undefended network.",
        "",
        f"PDB: flip form `{pdb['flip_form']}`, threshold {pdb['threshold']:.4f}, calibrated on uniform-noise "
        f"inputs to a benign flip rate of {pdb['target_flip_rate']}; the exported module's network was "
        f"compiled by {pdb['network_export']}.",
        "",
    ]

    rows = []
    for row in inference["rows"]:
        latency, throughput = row["latency"], row["throughput"]
        flips = [f"{stats['flip_fraction']:.2f}" for stats in (latency, throughput) if "flip_fraction" in stats]
        rows.append([
            f"`{row['method']}`",
            _INFERENCE_DESCRIPTIONS.get(row["method"], "registered defense, `answer` with default knobs"),
            _spread(latency, 3), f"{latency['ratio']:.2f}",
            _spread(throughput, 0), f"{throughput['ratio']:.2f}",
            " / ".join(flips) if flips else "",
        ])
    header = ["method", "what is timed", f"latency, batch {latency_batch} (ms)", "latency ratio",
              f"throughput, batch {throughput_batch} (inputs/s)", "throughput ratio",
              "flipped fraction (latency / throughput batch)"]
    lines += _table(header, rows) + [""]

    repeats = inference["rows"][0]["latency"]["repeats"]
    lines += [f"Timed calls per cell: {repeats}, after the warm-up calls given in the command.", ""]
    if inference.get("skipped"):
        lines += ["Defenses the benchmark factory could not build, so not measured:", ""]
        lines += [f"- `{item['defense']}`: {item['reason']}" for item in inference["skipped"]]
        lines.append("")
    return lines


def _training_section(training: dict) -> list[str]:
    lines = [
        "## Training",
        "",
        f"Seconds per epoch of `pdblib.training.train_model` (Adam, lr {training['lr']}) on "
        f"{training['benign_batches_per_epoch']} benign batches of uniform-noise inputs, plus the "
        f"transition samples of PDB retraining (lambda_gp = {training['lambda_gp']}). The ratio divides "
        "the median by plain training's median at the same batch size, from the same run. Transition "
        "synthesis, a one-time cost before retraining, is not included.",
        "",
    ]
    rows = []
    for row in training["rows"]:
        ratio = "" if row["transition_ratio"] is None else f"{row['transition_ratio']:g}"
        fraction = "" if row.get("penalty_fraction") is None else f"{row['penalty_fraction']:g}"
        rows.append([f"`{row['method']}`", str(row["batch_size"]), ratio, fraction, str(row["batches_per_epoch"]),
                     _spread(row["seconds_per_epoch"], 3), f"{row['ratio']:.2f}"])
    header = ["method", "batch size", "transition ratio", "penalty fraction", "batches per epoch",
              "seconds per epoch", "ratio to plain"]
    repeats = training["rows"][0]["seconds_per_epoch"]["repeats"]
    return lines + _table(header, rows) + ["", f"Timed epochs per row: {repeats}.", ""]


def _quality_section(quality: dict) -> list[str]:
    """Exact penalty versus its cheaper estimates: utility and clone accuracy, mean and spread over seeds."""
    lines = [
        "## Exact versus cheaper penalties: what PDB delivers",
        "",
        f"PDB retrained from the victim of run `{quality['run']}` on {quality['train_size']:,} training images, "
        f"once per penalty and seed (seeds {', '.join(map(str, quality['seeds']))}), then attacked with "
        f"Knockoff (random, Fashion-MNIST pool) and JBDA at {quality['budget']:,} queries. Mean and sample "
        "standard deviation over seeds, on the 10,000 test images. `finite_difference` is the Finlay & Oberman "
        "estimate; `@0.25` computes the penalty on a quarter of each batch. Produced by:",
        "",
        "```",
        quality["command"],
        "```",
        "",
    ]
    labels = {"seconds_per_epoch": "retraining s/epoch (synthesis included)", "defended_acc": "defended test acc",
              "acc_drop": "drop vs victim", "flip_rate": "benign flip rate",
              "clone_acc_knockoff_random": "Knockoff clone acc", "clone_acc_jbda": "JBDA clone acc"}
    rows = []
    for penalty, per_metric in quality["per_method"].items():
        cells = []
        for metric in labels:
            stats = per_metric.get(metric)
            cells.append("" if stats is None else f"{stats['mean']:.4f} ± {stats['sd']:.4f}")
        n = max((stats["n"] for stats in per_metric.values()), default=0)
        rows.append([f"`{penalty}`", str(n)] + cells)
    lines += _table(["penalty", "seeds"] + list(labels.values()), rows) + [""]
    verdicts = quality.get("within_spread", {})
    if verdicts:
        checked = {"defended_acc": "defended test acc", "clone_acc_knockoff_random": "Knockoff clone acc",
                   "clone_acc_jbda": "JBDA clone acc"}
        lines += ["Is the mean within the seed spread of `exact` (difference at most the larger standard "
                  "deviation)?", ""]
        verdict_rows = [[f"`{penalty}`"] + [{True: "yes", False: "no"}.get(within.get(metric), "")
                                            for metric in checked]
                        for penalty, within in verdicts.items()]
        lines += _table(["penalty"] + list(checked.values()), verdict_rows) + [""]
    return lines


def _chain_section(chain: dict) -> list[str]:
    """Wall time and peak memory of one timed run of the main job."""
    machine = chain["machine"]
    return [
        "## The main job",
        "",
        f"`{chain['command']}` from a fresh clone (virtual environment, data preparation and the whole "
        f"notebook chain), timed by `python3 -m benchmarks.chain`, started {chain['started']}, exit status "
        f"{chain['returncode']}, on {machine['usable_cores']} usable cores ({machine['platform']}).",
        "",
    ] + _table(["wall time", "peak memory (largest process, max RSS)", "report"],
               [[f"{chain['wall_seconds'] / 60:.1f} min", f"{chain['peak_rss_gib']:.2f} GiB",
                 f"`{chain['report']}`"]]) + [""]


def render_markdown(results: dict, source: str | Path | None = None, chain: dict | None = None) -> str:
    """Return the Markdown page for one results dict of ``benchmarks.run``.

    Parameters
    ----------
    results : dict
        The parsed JSON that ``python -m benchmarks.run`` writes.
    source : path, optional
        The JSON file's path, named on the page.
    chain : dict, optional
        The record of ``python3 -m benchmarks.chain`` for the main job.
    """
    missing = [key for key in ("command", "machine") if key not in results]
    if missing:
        raise KeyError(f"benchmark results lack {missing}; pass the JSON written by python -m benchmarks.run")
    lines = [
        "# Benchmarks",
        "",
        "Cost of PDB and the baseline defenses, measured side by side in one run. Produced by:",
        "",
        "```",
        results["command"],
        "```",
        "",
    ]
    if source is not None:
        lines += [f"Rendered from `{source}` by `python -m benchmarks.render`.", ""]
    lines += _machine_section(results)
    if "inference" in results:
        lines += _inference_section(results["inference"])
    if "training" in results:
        lines += _training_section(results["training"])
    if "penalty_quality" in results:
        lines += _quality_section(results["penalty_quality"])
    if chain is not None:
        lines += _chain_section(chain)
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(results: dict, path: str | Path, source: str | Path | None = None,
                   chain: dict | None = None) -> Path:
    """Render ``results`` with :func:`render_markdown` and write the page atomically to ``path``."""
    return atomic_write_text(path, render_markdown(results, source=source, chain=chain))


def main(argv: list[str] | None = None) -> Path:
    """Read a results JSON and write its Markdown page."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.render", description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="JSON file written by python -m benchmarks.run")
    parser.add_argument("--out", type=Path, default=Path("docs/benchmarks.md"),
                        help="Markdown page to write (default: docs/benchmarks.md)")
    parser.add_argument("--chain", type=Path, default=None,
                        help="JSON of python3 -m benchmarks.chain for the main job, shown on the page")
    args = parser.parse_args(argv)
    try:
        results = read_json(args.results)
        chain = read_json(args.chain) if args.chain is not None else None
    except json.JSONDecodeError as error:
        parser.error(f"invalid JSON ({error}); rerun the benchmark that wrote it")
    return write_markdown(results, args.out, source=args.results, chain=chain)


if __name__ == "__main__":
    main()
