"""Compare the exact input-gradient penalty with its cheaper estimates on what PDB delivers.

Time per epoch is only half of the question. A cheaper penalty is worth having only if the
defended accuracy and the clone accuracy it yields stay within the seed-to-seed spread of the
exact penalty's. This benchmark retrains PDB from a finished run's victim once per penalty and
retraining seed (through :func:`pdblib.stages_ablation.stage_ablations`, on the same training
subset), attacks each with Knockoff (random) and JBDA, and summarizes mean and standard
deviation per penalty.

A penalty is named ``<method>`` or ``<method>@<fraction>``: ``exact`` is double backprop on
every sample, ``finite_difference`` the Finlay & Oberman (2019) estimate, and ``@0.25`` computes
either on a quarter of each batch (``PDBConfig.penalty_fraction``).

Usage::

    python -m benchmarks.penalty_quality --run-dir reports/<run-id> --seeds 0 1 2 \\
        --results benchmarks/results.json --markdown docs/benchmarks.md

The run folder needs steps 01 to 03 finished. The summary is merged into the results JSON under
``penalty_quality`` and the Markdown page is rendered again, so the page shows both cost and
quality. Rows go to ``artifacts/ablation/penalty_quality.csv`` in the run folder; a re-run
skips the variants already measured there.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import pandas as pd

from pdblib.runs import RunDir
from pdblib.utils import InputError, atomic_write_json, read_json

logger = logging.getLogger("benchmarks.penalty_quality")

REFERENCE = "exact"
DEFAULT_PENALTIES = ("exact", "finite_difference", "exact@0.25", "finite_difference@0.25")
METRICS = ("defended_acc", "acc_drop", "flip_rate", "seconds_per_epoch", "clone_acc_knockoff_random",
           "clone_acc_jbda")


def parse_penalty(label: str) -> tuple[str, float]:
    """Split a penalty name ``<method>`` or ``<method>@<fraction>`` into method and fraction.

    Raises
    ------
    InputError
        On an unknown method or a fraction outside (0, 1].
    """
    from pdblib.core.penalty import PENALTY_METHODS

    method, sep, text = label.partition("@")
    if method not in PENALTY_METHODS:
        raise InputError(f"unknown penalty {label!r}; use <method> or <method>@<fraction> with a method "
                         f"from {list(PENALTY_METHODS)}, e.g. 'finite_difference@0.25'")
    try:
        fraction = float(text) if sep else 1.0
    except ValueError:
        raise InputError(f"penalty {label!r}: {text!r} is not a fraction; write e.g. 'exact@0.25'") from None
    if not 0 < fraction <= 1:
        raise InputError(f"penalty {label!r}: the fraction must be in (0, 1], got {fraction}")
    return method, fraction


def penalty_label(method: str, fraction: float) -> str:
    """Return the penalty name of ``method`` at ``fraction`` (inverse of :func:`parse_penalty`)."""
    return method if fraction == 1 else f"{method}@{fraction:g}"


def variant_names(seeds: list[int], penalties: tuple[str, ...] = DEFAULT_PENALTIES) -> list[str]:
    """Return the ablation variant names, one per penalty and seed."""
    names = []
    for label in penalties:
        method, fraction = parse_penalty(label)
        knobs = f"penalty_method={method}" + ("" if fraction == 1 else f",penalty_fraction={fraction:g}")
        names += [f"{knobs},seed={seed}" for seed in seeds]
    return names


def summarize(rows: pd.DataFrame) -> dict:
    """Mean and standard deviation of each metric per penalty, and whether each is close to exact.

    Returns
    -------
    dict
        ``per_method``: ``{penalty: {metric: {"mean", "sd", "n"}}}``; ``within_spread``:
        ``{penalty: {metric: bool}}`` for each penalty other than ``exact``, true where its mean
        differs from the exact penalty's by at most the larger of the two standard deviations
        (seed-to-seed spread).
    """
    fractions = rows["penalty_fraction"] if "penalty_fraction" in rows else pd.Series(1.0, index=rows.index)
    labels = [penalty_label(method, float(fraction)) for method, fraction in zip(rows["penalty_method"], fractions)]
    per_method = {}
    for label, group in rows.groupby(pd.Series(labels, index=rows.index), sort=False):
        per_method[label] = {metric: {"mean": float(group[metric].mean()),
                                      "sd": float(group[metric].std(ddof=1)) if len(group) > 1 else 0.0,
                                      "n": int(group[metric].count())}
                             for metric in METRICS if metric in group}
    within = {}
    reference = per_method.get(REFERENCE, {})
    for label, stats in per_method.items():
        if label == REFERENCE or not reference:
            continue
        within[label] = {}
        for metric in ("defended_acc", "clone_acc_knockoff_random", "clone_acc_jbda"):
            if metric in reference and metric in stats:
                spread = max(reference[metric]["sd"], stats[metric]["sd"])
                within[label][metric] = abs(reference[metric]["mean"] - stats[metric]["mean"]) <= spread
    return {"per_method": per_method, "within_spread": within}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.penalty_quality",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="run folder with steps 01 to 03 finished")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="retraining seeds (default: 0 1 2)")
    parser.add_argument("--penalties", nargs="+", default=list(DEFAULT_PENALTIES),
                        help="penalties to compare, '<method>' or '<method>@<fraction>' "
                             f"(default: {' '.join(DEFAULT_PENALTIES)})")
    parser.add_argument("--train-size", type=int, default=10000,
                        help="training images each variant retrains on (default: 10000)")
    parser.add_argument("--budget", type=int, default=5000, help="query budget of both attacks (default: 5000)")
    parser.add_argument("--results", type=Path, default=Path("benchmarks/results.json"),
                        help="results JSON to merge the summary into (default: benchmarks/results.json)")
    parser.add_argument("--markdown", type=Path, default=None, help="render the Markdown page again here")
    parser.add_argument("--quiet", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from pdblib.stages import load_run_data
    from pdblib.stages_ablation import stage_ablations

    run = RunDir(args.run_dir)
    try:
        for step in ("data", "victim", "pdb"):
            if not run.is_done(step):
                raise InputError(f"step {step!r} has not finished in {run.path}; run the chain up to 03_pdb first")
        names = variant_names(args.seeds, tuple(args.penalties))
        rows = stage_ablations(run, load_run_data(run), variants=names,
                               train_size=args.train_size, budget=args.budget, attacks=("knockoff_random", "jbda"),
                               filename="penalty_quality.csv", progress=not args.quiet)
    except InputError as exc:
        logger.error("%s", exc)
        return 1
    rows = rows[rows["variant"].isin(names)]
    summary = {"command": "python -m benchmarks.penalty_quality " + shlex.join(argv if argv is not None
                                                                               else sys.argv[1:]),
               "run": run.path.name, "train_size": args.train_size, "budget": args.budget, "seeds": args.seeds,
               **summarize(rows)}
    results = read_json(args.results) if args.results.exists() else {}
    results["penalty_quality"] = summary
    atomic_write_json(args.results, results)
    logger.info("penalty quality merged into %s", args.results)
    if args.markdown is not None:
        from benchmarks.render import write_markdown

        write_markdown(results, args.markdown, source=args.results)
        logger.info("page written to %s", args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
