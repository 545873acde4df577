"""Profile one chain step with pyinstrument, in-process, on a copy of a finished run folder.

The step's notebook code cells run in order in this process, after the profile's parameters
(and any ``--set`` overrides) for that step, exactly as papermill would inject them. The step
runs on a copy of the run folder, so the original stays unchanged. The folder must not hold
results of the step or a later one: the step would resume from them instead of working. The sampling
profiler's report names where the step spends its time.

Usage::

    python -m benchmarks.profile_step --run-dir reports/<run-id> --step 05_baselines \\
        --out benchmarks/profiles

It writes ``<out>/<step>.txt`` (the call tree with time per frame) and ``<out>/<step>.html``
(pyinstrument's interactive view). Requires the ``pyinstrument`` package (``dev`` extra).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

from pdblib.pipeline import NOTEBOOK_DIR, _parse_value
from pdblib.profiles import PROFILES, STEPS, resolve_profile
from pdblib.utils import InputError, check_choice

logger = logging.getLogger("benchmarks.profile_step")

def notebook_code(step: str) -> list[str]:
    """Return the source of every code cell of ``notebooks/<step>.ipynb`` after the parameters cell."""
    import nbformat

    notebook = nbformat.read(NOTEBOOK_DIR / f"{step}.ipynb", as_version=4)
    cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    return [cell.source for cell in cells if "parameters" not in cell.metadata.get("tags", [])]


# Files a step resumes from, besides its completion marker, relative to ``artifacts/``.
_RESUME_FILES = {"04_attack": ("attack/results.csv", "attack/flip_forms.csv"),
                 "05_baselines": ("attack/baselines_knockoff.csv", "attack/baselines_jbda.csv"),
                 "06_attack_suite": ("attack/suite.csv",), "07_ablations": ("ablation/ablations.csv",)}


def check_not_run(run_dir: Path, step: str) -> None:
    """Refuse a folder where ``step`` or a later step has started: its results would be skipped as done.

    Raises
    ------
    InputError
        Naming the file found and how to get a suitable folder.
    """
    from pdblib.profiles import STEP_MARKERS

    for name in STEPS[STEPS.index(step):]:
        candidates = [f"{STEP_MARKERS[name]}/done.json", *_RESUME_FILES.get(name, ())]
        found = [path for path in candidates if (run_dir / "artifacts" / path).exists()]
        if found:
            raise InputError(
                f"{run_dir} already contains results of step {name} (artifacts/{found[0]}), so the profiled step "
                "would resume instead of running. Profile on a folder that stops before the step, e.g. one made with "
                "`python -m pdblib.pipeline --profile quick --steps 01_data 02_victim 03_pdb`")


def profile_step(run_dir: Path, step: str, *, profile: str = "quick", overrides: dict | None = None,
                 out: Path = Path("benchmarks/profiles"), interval: float = 0.01) -> dict:
    """Run ``step`` under pyinstrument on a scratch copy of ``run_dir``; write the reports to ``out``.

    Returns
    -------
    dict
        ``step``, ``seconds`` (wall time of the profiled cells), and the paths written.
    """
    try:
        from pyinstrument import Profiler
    except ImportError:
        raise InputError("pyinstrument is not installed; run `pip install -e .[dev]` or `pip install pyinstrument`") from None
    check_choice(step, STEPS, what="step")
    check_choice(profile, PROFILES, what="profile")
    if not (run_dir / "params.json").exists():
        raise InputError(f"{run_dir} is not a run folder (no params.json); pass reports/<run-id>")
    check_not_run(run_dir, step)
    parameters = resolve_profile(profile, overrides)[step]
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pdb-profile-") as scratch:
        copy = Path(scratch) / run_dir.name
        shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("notebooks", "html"))
        namespace = {"__name__": "__main__", "run_dir": str(copy), **parameters}
        cells = notebook_code(step)
        profiler = Profiler(interval=interval)
        start = time.perf_counter()
        profiler.start()
        try:
            for source in cells:
                exec(compile(source, f"<{step}>", "exec"), namespace)  # noqa: S102 - the repository's own notebook
        finally:
            profiler.stop()
        seconds = time.perf_counter() - start
    text_path, html_path = out / f"{step}.txt", out / f"{step}.html"
    text_path.write_text(profiler.output_text(unicode=False, color=False, show_all=False), encoding="utf-8")
    html_path.write_text(profiler.output_html(), encoding="utf-8")
    logger.info("%s: %.1f s profiled; wrote %s and %s", step, seconds, text_path, html_path)
    return {"step": step, "seconds": seconds, "text": str(text_path), "html": str(html_path)}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=Path, help="run folder with the earlier steps finished")
    parser.add_argument("--step", required=True, help=f"step to profile, one of {list(STEPS)}")
    parser.add_argument("--profile", default="quick", help="parameter profile (default: quick)")
    parser.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                        help="override one of the step's parameters; VALUE is parsed as JSON when it can be")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/profiles"),
                        help="folder for the reports (default: benchmarks/profiles)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        overrides = {}
        for item in args.set:
            key, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--set {item!r} is not PARAM=VALUE, e.g. --set pools='[\"mnist\"]'")
            overrides[f"{args.step}.{key}"] = _parse_value(value)
        result = profile_step(args.run_dir, args.step, profile=args.profile, overrides=overrides, out=args.out)
    except InputError as exc:
        logger.error("%s", exc)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
