"""The notebook chain: structure of the committed notebooks, profiles, and a smoke run."""

import importlib.util
import json
import os
import subprocess
import sys

import nbformat
import pandas as pd
import pytest
import torch

from pdblib.browser import check_page, find_chromium
from pdblib.pipeline import NOTEBOOK_DIR, main, run_chain
from pdblib.profiles import PROFILES, STEPS, resolve_profile
from pdblib.sweep import cell_id, expand_grid, run_sweep, strength_cells
from pdblib.utils import InputError


@pytest.mark.parametrize("step", STEPS)
def test_notebook_is_thin_and_clean(step):
    notebook = nbformat.read(NOTEBOOK_DIR / f"{step}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    tagged = [cell for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "assert" in code[-1].source
    assert "def " not in "".join(cell.source for cell in code)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_profile_parameters_exist_in_notebooks(profile):
    resolved = resolve_profile(profile)
    for step, params in resolved.items():
        notebook = nbformat.read(NOTEBOOK_DIR / f"{step}.ipynb", as_version=4)
        source = next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
        for name in params:
            assert f"\n{name} = " in "\n" + source, f"{step} has no parameter {name}"


def test_unknown_profile_rejected():
    with pytest.raises(InputError, match="unknown profile 'fast'"):
        resolve_profile("fast")


def test_unknown_override_rejected():
    with pytest.raises(InputError, match="unknown parameter '02_victim.epoch'"):
        resolve_profile("smoke", {"02_victim.epoch": 3})
    with pytest.raises(InputError, match="unknown step"):
        resolve_profile("smoke", {"06_extra.epochs": 3})


def test_override_applies():
    resolved = resolve_profile("smoke", {"02_victim.epochs": 3, "seed": 7})
    assert resolved["02_victim"]["epochs"] == 3
    assert all(params["seed"] == 7 for params in resolved.values())


def test_cli_reports_unknown_profile(tmp_path, caplog):
    assert main(["--profile", "nightly", "--reports-dir", str(tmp_path)]) == 1
    assert "unknown profile 'nightly'" in caplog.text


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One smoke-profile run of the whole chain, shared by the slow tests of this module."""
    reports = tmp_path_factory.mktemp("reports")
    return run_chain("smoke", run_id="smoke-test", reports_dir=reports, progress=False)


@pytest.mark.slow
def test_smoke_chain_end_to_end(smoke_run):
    run = smoke_run
    tmp_path = run.parent
    index = (run / "index.html").read_text(encoding="utf-8")
    for step in STEPS:
        assert (run / "html" / f"{step}.html").exists()
        assert f"html/{step}.html" in index
    assert "Clone test accuracy" in index
    results = pd.read_csv(run / "artifacts" / "attack" / "results.csv")
    assert len(results) == 2 * 2 * 2 * 2  # defenses x pools x outputs x budgets
    suite = pd.read_csv(run / "artifacts" / "attack" / "suite.csv")
    assert set(suite["attack"]) == set(resolve_profile("smoke")["06_attack_suite"]["attacks"])
    table = pd.read_csv(run / "artifacts" / "baselines" / "defense_table.csv")
    assert set(table["defense"]) >= {"undefended", "pdb", "mad", "adaptive_misinformation", "bdpl"}
    assert (results["queries_used"] <= results["budget"]).all()
    params = json.loads((run / "params.json").read_text())
    assert params["profile"] == "smoke"
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["torch"]
    for page in (run / "html").glob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "cdnjs" not in text
        assert "cdn.jsdelivr" not in text
        assert 'src="http' not in text

    # The strength sweep ran its cells and joined the chain's default-strength rows.
    tradeoff = pd.read_csv(run / "artifacts" / "tradeoff" / "tradeoff.csv")
    assert {"pdb", "reverse_sigmoid", "undefended"} <= set(tradeoff["defense"])
    assert {"target_flip_rate=0.2", "default"} <= set(tradeoff.loc[tradeoff["defense"] == "pdb", "strength"])
    pdb = tradeoff[tradeoff["defense"] == "pdb"].set_index("strength")
    assert pdb.loc["target_flip_rate=0.2", "defended_acc"] < pdb.loc["default", "defended_acc"]
    assert (run / "artifacts" / "report" / "08_tradeoff.png").exists()
    assert (run / "artifacts" / "report" / "08_pdb_knobs.png").exists()

    # The report opens offline in headless Chromium: no failed or remote request, no console error.
    if find_chromium() is not None and importlib.util.find_spec("playwright") is not None:
        for page in [run / "index.html", *sorted((run / "html").glob("*.html"))]:
            check = check_page(page)
            assert check.problems == [], f"{page.name}: {check.problems}"
        assert check_page(run / "index.html").images >= 8

    # A resumed run skips every finished step and leaves the results alone.
    stamp = (run / "artifacts" / "attack" / "results.csv").stat().st_mtime_ns
    executed = {step: (run / "notebooks" / f"{step}.ipynb").stat().st_mtime_ns for step in STEPS}
    run_chain("smoke", run_id="smoke-test", reports_dir=tmp_path, resume=True, progress=False)
    assert (run / "artifacts" / "attack" / "results.csv").stat().st_mtime_ns == stamp
    for step in STEPS:
        assert (run / "notebooks" / f"{step}.ipynb").stat().st_mtime_ns == executed[step], f"{step} re-ran"

    # The same folder without --resume is rejected instead of overwritten.
    with pytest.raises(InputError, match="already exists"):
        run_chain("smoke", run_id="smoke-test", reports_dir=tmp_path, progress=False)


@pytest.mark.slow
def test_cli_runs_a_step_subset_and_fails_clearly(tmp_path):
    # Step 02 alone in an empty folder fails in its validation cell, and the CLI error names the step.
    completed = subprocess.run(
        [sys.executable, "-m", "pdblib.pipeline", "--profile", "smoke", "--reports-dir", str(tmp_path),
         "--run-id", "partial", "--steps", "02_victim", "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    assert "step 02_victim failed" in completed.stderr
    assert "splits.json not found" in completed.stderr


@pytest.mark.slow
def test_sweep_resumes_only_missing_cells(smoke_run):
    base = {"defenses": ["reverse_sigmoid"], "pools": ["mnist"], "outputs": ["probs"], "budgets": [100],
            "clone_epochs": 1, "progress": False}
    cells = expand_grid(base, {"defense_knobs": [{"reverse_sigmoid": {"beta": 0.3}},
                                                 {"reverse_sigmoid": {"beta": 1.0}},
                                                 {"reverse_sigmoid": {"beta": -1.0}}]})
    first = run_sweep(smoke_run, cells, progress=False)
    assert len(first) == 2
    failed = json.loads((smoke_run / "sweep" / "failed.json").read_text())
    assert len(failed) == 1
    assert "beta" in failed[0]["error"]

    # Simulate a kill before the second cell finished: drop its record, keep the first one.
    kept, dropped = cell_id(cells[0]), cell_id(cells[1])
    kept_stamp = (smoke_run / "sweep" / "cells" / f"{kept}.json").stat().st_mtime_ns
    (smoke_run / "sweep" / "cells" / f"{dropped}.json").unlink()
    second = run_sweep(smoke_run, cells[:2], progress=False)
    assert len(second) == 2
    assert (smoke_run / "sweep" / "cells" / f"{kept}.json").stat().st_mtime_ns == kept_stamp
    assert (smoke_run / "sweep" / "cells" / f"{dropped}.json").exists()
    assert set(json.loads(k)["beta"] for k in second["defense_knobs"]) == {0.3, 1.0}


def test_expand_grid_and_cell_ids():
    cells = expand_grid({"budgets": [100]}, {"pools": [["mnist"], ["fashion_mnist"]], "seed": [0, 1]})
    assert len(cells) == 4
    assert all(cell["budgets"] == [100] for cell in cells)
    assert len({cell_id(cell) for cell in cells}) == 4
    assert cell_id(dict(reversed(list(cells[0].items())))) == cell_id(cells[0])


def test_expand_grid_rejects_empty_axis():
    with pytest.raises(InputError, match="non-empty list"):
        expand_grid({}, {"seed": []})


def test_every_step_has_a_done_marker():
    from pdblib.profiles import STEP_MARKERS

    assert set(STEP_MARKERS) == set(STEPS)
    for step, marker in STEP_MARKERS.items():
        notebook = nbformat.read(NOTEBOOK_DIR / f"{step}.ipynb", as_version=4)
        assert f'run.mark_done("{marker}"' in notebook.cells[-1].source


def test_committed_notebooks_match_generator(tmp_path):
    tool = NOTEBOOK_DIR.parent / "tools" / "make_notebooks.py"
    subprocess.run([sys.executable, str(tool), str(tmp_path)], check=True, timeout=120)
    for step in STEPS:
        generated = (tmp_path / f"{step}.ipynb").read_text(encoding="utf-8")
        committed = (NOTEBOOK_DIR / f"{step}.ipynb").read_text(encoding="utf-8")
        assert generated == committed, f"notebooks/{step}.ipynb differs from tools/make_notebooks.py; rerun it"


def test_strength_cells_cover_the_grid():
    cells = strength_cells({"mad": {"epsilon": [0.1, 1.0]}, "label_only": {}}, attacks=["knockoff_random", "jbda"],
                           pools=["mnist"], outputs=["probs"], budgets=[500, 1000], seeds=[0, 1], clone_epochs=2)
    assert len(cells) == (2 + 1) * 2 * 2
    assert {json.dumps(c["defense_knobs"], sort_keys=True) for c in cells} == {
        '{"mad": {"epsilon": 0.1}}', '{"mad": {"epsilon": 1.0}}', '{"label_only": {}}'}
    assert all(c["budgets"] == [500, 1000] and c["clone_epochs"] == 2 for c in cells)
    assert all(c["defenses"] == list(c["defense_knobs"]) for c in cells)
    assert len({cell_id(c) for c in cells}) == len(cells)


def test_strength_cells_reject_an_empty_knob_list():
    with pytest.raises(InputError, match="non-empty list"):
        strength_cells({"mad": {"epsilon": []}}, attacks=["jbda"], pools=["mnist"], outputs=["probs"],
                       budgets=[100], seeds=[0])


def test_reference_cache_recomputes_on_change(tmp_path):
    from pdblib.runs import RunDir
    from pdblib.stages import ReferenceCache

    cache, run = ReferenceCache(), RunDir(tmp_path)
    checkpoint = run.artifact("victim", "victim.pt")
    checkpoint.write_bytes(b"v1")
    x, calls = torch.zeros(3), []

    def compute():
        calls.append(1)
        return len(calls)

    assert cache.get(("r", "victim"), x, ReferenceCache.stamp(run), compute) == 1
    assert cache.get(("r", "victim"), x, ReferenceCache.stamp(run), compute) == 1
    os.utime(checkpoint, ns=(0, 12345))  # a re-trained victim
    assert cache.get(("r", "victim"), x, ReferenceCache.stamp(run), compute) == 2
    assert cache.get(("r", "victim"), x.clone(), ReferenceCache.stamp(run), compute) == 3  # another test tensor
    assert cache.get(("r", "pdb"), x, ReferenceCache.stamp(run), compute) == 4
