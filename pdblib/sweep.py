"""Sweep runner: a grid of attack-notebook executions, resumable cell by cell.

A sweep runs ``notebooks/04_attack.ipynb`` once per cell of a grid (defense and its strength
knobs, attack, pool, output, budget, seed) inside an existing run folder whose data, victim
and PDB steps have finished. Each cell writes its rows to ``artifacts/attack/sweep/<cell>.csv``
and a record ``sweep/cells/<cell>.json`` with its status. A re-run skips cells whose record
says ``ok``, so an interrupted sweep resumes where it stopped; a failed cell is recorded with
its error and does not stop the others (it is tried again on the next run).

Command line::

    python -m pdblib.sweep --run-dir reports/quick-... --grid grid.json

where ``grid.json`` holds ``{"base": {...notebook parameters...}, "axes": {"param": [values]}}``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import logging
import sys
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from pdblib.pipeline import NOTEBOOK_DIR
from pdblib.runs import RunDir
from pdblib.utils import InputError, atomic_write_json, read_json

logger = logging.getLogger(__name__)

SWEEP_NOTEBOOK = "04_attack"


def expand_grid(base: dict, axes: dict[str, list]) -> list[dict]:
    """Return one parameter dict per point of the Cartesian product of ``axes``, on top of ``base``.

    Raises
    ------
    InputError
        If an axis is not a non-empty list.
    """
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise InputError(f"sweep axis {name!r} must be a non-empty list, got {values!r}")
    names = list(axes)
    return [{**base, **dict(zip(names, combo))} for combo in itertools.product(*(axes[n] for n in names))]


def strength_cells(strengths: dict[str, dict[str, list]], *, attacks: list[str], pools: list[str],
                   outputs: list[str], budgets: list[int], seeds: list[int], **base) -> list[dict]:
    """Return the cells of a defense-strength sweep: each knob value x attack x pool x output x seed.

    Parameters
    ----------
    strengths : dict
        ``{defense: {knob: [values]}}``, for example ``{"mad": {"epsilon": [0.1, 1.0]}}`` or
        ``{"pdb": {"target_flip_rate": [0.05, 0.2]}}``; several knobs of one defense form
        their Cartesian product.
    attacks, pools, outputs : list of str
        One cell per combination.
    budgets : list of int
        Every cell trains one clone per budget from a single query run.
    seeds : list of int
        The attack seeds; the spread over them is the error bar of the trade-off curves.
    **base
        Further attack-notebook parameters shared by every cell (``clone_epochs`` and so on).

    Raises
    ------
    InputError
        If a knob's values are not a non-empty list.
    """
    cells = []
    for defense, knobs in strengths.items():
        for point in expand_grid({}, knobs):
            common = {**base, "defenses": [defense], "defense_knobs": {defense: point}, "budgets": list(budgets)}
            cells.extend(expand_grid(common, {"attack": list(attacks), "pools": [[p] for p in pools],
                                              "outputs": [[o] for o in outputs], "seed": list(seeds)}))
    return cells


def cell_id(params: dict) -> str:
    """Stable 12-character id of a cell, from its parameters."""
    return hashlib.sha1(json.dumps(params, sort_keys=True).encode("utf-8")).hexdigest()[:12]


def _cell_parameters(params: dict, cid: str) -> dict:
    return {**params, "results_file": f"sweep/{cid}.csv", "mark_step_done": False,
            "flip_form_defenses": [], "flip_form_budgets": []}


def run_sweep(run_dir: str | Path, cells: list[dict], *, kernel_name: str = "python3",
              progress: bool = True) -> pd.DataFrame:
    """Execute every cell not yet finished and return all finished rows.

    Parameters
    ----------
    run_dir : path
        A run folder whose steps ``data``, ``victim`` and ``pdb`` are done (and ``baselines``
        when a cell attacks a baseline).
    cells : list of dict
        Parameters of the attack notebook per cell (see :func:`expand_grid`).

    Returns
    -------
    pandas.DataFrame
        The rows of every finished cell, with a ``cell`` column; also written to
        ``sweep/results.csv``. Failed cells are listed in ``sweep/failed.json``.
    """
    import papermill as pm

    run = RunDir(run_dir)
    for step in ("data", "victim", "pdb"):
        if not run.is_done(step):
            raise InputError(f"step {step!r} has not finished in {run.path}; run the chain up to 03_pdb first")
    records = run.path / "sweep" / "cells"
    records.mkdir(parents=True, exist_ok=True)
    (run.path / "sweep" / "notebooks").mkdir(parents=True, exist_ok=True)
    done = failed = 0
    bar = tqdm(cells, desc="sweep cells", disable=not progress)
    for params in bar:
        cid = cell_id(params)
        record_path = records / f"{cid}.json"
        if record_path.exists() and read_json(record_path).get("status") == "ok":
            done += 1
            bar.set_postfix(done=done, failed=failed, left=len(cells) - done - failed)
            continue
        start = time.perf_counter()
        record = {"cell": cid, "params": params}
        try:
            pm.execute_notebook(str(NOTEBOOK_DIR / f"{SWEEP_NOTEBOOK}.ipynb"),
                                str(run.path / "sweep" / "notebooks" / f"{cid}.ipynb"),
                                parameters={"run_dir": str(run.path), **_cell_parameters(params, cid)},
                                kernel_name=kernel_name, progress_bar=False, cwd=str(NOTEBOOK_DIR))
            record.update(status="ok")
            done += 1
        except pm.PapermillExecutionError as exc:
            record.update(status="failed", error=f"{exc.ename}: {exc.evalue}")
            logger.error("sweep cell %s failed: %s: %s", cid, exc.ename, exc.evalue)
            failed += 1
        record["seconds"] = time.perf_counter() - start
        atomic_write_json(record_path, record)
        bar.set_postfix(done=done, failed=failed, left=len(cells) - done - failed)
    return collect_sweep(run, cells)


def collect_sweep(run: RunDir, cells: list[dict]) -> pd.DataFrame:
    """Concatenate the rows of the finished cells into ``sweep/results.csv``."""
    frames, failures = [], []
    for params in cells:
        cid = cell_id(params)
        record_path = run.path / "sweep" / "cells" / f"{cid}.json"
        if not record_path.exists():
            continue
        record = read_json(record_path)
        if record["status"] != "ok":
            failures.append(record)
            continue
        frames.append(pd.read_csv(run.path / "artifacts" / "attack" / "sweep" / f"{cid}.csv").assign(cell=cid))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    atomic_write_json(run.path / "sweep" / "failed.json", failures)
    if len(frame):
        from pdblib.utils import atomic_write_text

        atomic_write_text(run.path / "sweep" / "results.csv", frame.to_csv(index=False))
    return frame


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m pdblib.sweep", description="Run a resumable sweep of attack cells.")
    parser.add_argument("--run-dir", required=True, help="run folder whose steps up to 03_pdb have finished")
    parser.add_argument("--grid", required=True, help='JSON file {"base": {...}, "axes": {"param": [values]}}')
    parser.add_argument("--quiet", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = read_json(args.grid)
        cells = expand_grid(spec.get("base", {}), spec.get("axes", {}))
        frame = run_sweep(args.run_dir, cells, progress=not args.quiet)
    except (InputError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    logger.info("sweep finished: %d rows in %s", len(frame), Path(args.run_dir) / "sweep" / "results.csv")
    if len(frame) and "defended_acc" in frame:
        from pdblib.report import plot_tradeoff_curves, save_figure, set_style

        set_style()
        figure = save_figure(plot_tradeoff_curves(frame), Path(args.run_dir) / "sweep" / "tradeoff.png")
        logger.info("trade-off curves written to %s", figure)
    return 0


if __name__ == "__main__":
    sys.exit(main())
