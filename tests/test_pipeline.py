"""The notebook chain: structure of the committed notebooks, profiles, and a smoke run."""

import json
import subprocess
import sys

import nbformat
import pandas as pd
import pytest

from pdblib.pipeline import NOTEBOOK_DIR, main, run_chain
from pdblib.profiles import PROFILES, STEPS, resolve_profile
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


@pytest.mark.slow
def test_smoke_chain_end_to_end(tmp_path):
    run = run_chain("smoke", run_id="smoke-test", reports_dir=tmp_path, progress=False)
    index = (run / "index.html").read_text(encoding="utf-8")
    for step in STEPS:
        assert (run / "html" / f"{step}.html").exists()
        assert f"html/{step}.html" in index
    assert "Clone test accuracy" in index
    results = pd.read_csv(run / "artifacts" / "attack" / "results.csv")
    assert len(results) == 2 * 2 * 2 * 2  # defenses x pools x outputs x budgets
    assert (results["queries_used"] <= results["budget"]).all()
    params = json.loads((run / "params.json").read_text())
    assert params["profile"] == "smoke"
    env = json.loads((run / "environment.json").read_text())
    assert env["packages"]["torch"]
    for page in (run / "html").glob("*.html"):
        assert "https://cdn" not in page.read_text(encoding="utf-8")

    # A resumed run skips every finished step and leaves the results alone.
    stamp = (run / "artifacts" / "attack" / "results.csv").stat().st_mtime_ns
    run_chain("smoke", run_id="smoke-test", reports_dir=tmp_path, resume=True, progress=False)
    assert (run / "artifacts" / "attack" / "results.csv").stat().st_mtime_ns == stamp

    # The same folder without --resume is rejected instead of overwritten.
    with pytest.raises(InputError, match="already exists"):
        run_chain("smoke", run_id="smoke-test", reports_dir=tmp_path, progress=False)


@pytest.mark.slow
def test_cli_runs_a_step_subset_and_fails_clearly(tmp_path):
    # Step 02 alone in an empty folder fails in its validation cell, and the CLI says which step.
    completed = subprocess.run(
        [sys.executable, "-m", "pdblib.pipeline", "--profile", "smoke", "--reports-dir", str(tmp_path),
         "--run-id", "partial", "--steps", "02_victim", "--quiet"],
        capture_output=True, text=True, timeout=300)
    assert completed.returncode == 1
    assert "step 02_victim failed" in completed.stderr
    assert "splits.json not found" in completed.stderr
