"""Execute the notebook chain with papermill and render the run's HTML report.

Command line::

    python -m pdblib.pipeline --profile quick                 # new run in reports/quick-<time>
    python -m pdblib.pipeline --profile quick --run-id r1 --resume
    python -m pdblib.pipeline --profile smoke --set 04_attack.budgets=[100,200]

Each notebook is executed into ``reports/<run-id>/notebooks`` and rendered into
``reports/<run-id>/html``; ``reports/<run-id>/index.html`` links them all. With ``--resume``,
steps whose ``done.json`` marker exists are skipped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import re
import sys
import time
from pathlib import Path

from pdblib.profiles import PROFILES, STEP_MARKERS, STEPS, resolve_profile
from pdblib.runs import REPO_ROOT, RunDir, write_environment
from pdblib.utils import InputError, atomic_write_json, atomic_write_text, check_choice

logger = logging.getLogger(__name__)

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
REPORTS_DIR = REPO_ROOT / "reports"
# A <script> element that loads or imports anything from http(s), with its body.
_REMOTE_SCRIPT = re.compile(r"<script\b[^>]*>(?:(?!</script>).)*?https?://(?:(?!</script>).)*?</script>"
                            r"|<script\b[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>",
                            re.IGNORECASE | re.DOTALL)


class StepFailedError(RuntimeError):
    """A notebook of the chain raised; the message names the step and its executed notebook."""


def render_html(notebook_path: Path, html_path: Path) -> Path:
    """Render an executed notebook to a standalone HTML page.

    Scripts that load code from a CDN (nbconvert's MathJax and mermaid loaders) are removed,
    so the page opens offline. The notebooks use no LaTeX or mermaid diagrams that need them.
    """
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    body, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    body = _REMOTE_SCRIPT.sub("", body)
    return atomic_write_text(html_path, body)


def execute_step(run: RunDir, step: str, parameters: dict, *, kernel_name: str = "python3",
                 progress: bool = True) -> Path:
    """Execute one notebook with papermill into the run folder and render its HTML."""
    import papermill as pm

    source = NOTEBOOK_DIR / f"{step}.ipynb"
    if not source.exists():
        raise FileNotFoundError(f"notebook {source} not found; is the repository checkout complete?")
    output = run.path / "notebooks" / f"{step}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    html = run.path / "html" / f"{step}.html"
    start = time.perf_counter()
    logger.info("step %s: executing %s", step, source.name)
    try:
        pm.execute_notebook(str(source), str(output), parameters={"run_dir": str(run.path), **parameters},
                            kernel_name=kernel_name, progress_bar=progress, log_output=progress,
                            cwd=str(NOTEBOOK_DIR))
    except pm.PapermillExecutionError as exc:
        render_html(output, html)
        raise StepFailedError(
            f"step {step} failed: {exc.ename}: {exc.evalue}. The executed notebook with the traceback is "
            f"{output} (HTML: {html}); fix the cause and re-run with --resume --run-id {run.path.name}"
        ) from None
    render_html(output, html)
    logger.info("step %s finished in %.1f s", step, time.perf_counter() - start)
    return output


def run_chain(profile: str = "quick", *, run_id: str | None = None, reports_dir: str | Path = REPORTS_DIR,
              overrides: dict | None = None, resume: bool = False, steps: list[str] | None = None,
              kernel_name: str = "python3", progress: bool = True) -> Path:
    """Run the notebook chain for a profile and return the run folder.

    Parameters
    ----------
    profile : {"smoke", "quick", "full"}
    run_id : str, optional
        Folder name under ``reports_dir``; defaults to ``<profile>-<UTC time>``.
    overrides : dict, optional
        ``{"step.param": value}`` changes to the profile.
    resume : bool
        Skip steps that already finished in this run folder. The parameters of every finished
        step must equal the ones recorded in the folder, so a resumed run cannot mix settings.
    steps : list of str, optional
        Subset of steps to execute, in chain order.
    """
    check_choice(profile, PROFILES, what="profile")
    steps = list(steps or STEPS)
    for step in steps:
        check_choice(step, STEPS, what="step")
    params = resolve_profile(profile, overrides)
    run_id = run_id or f"{profile}-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%d-%H%M%S')}"
    run = RunDir(Path(reports_dir) / run_id)
    record = {"profile": profile, "overrides": overrides or {}, "steps": params}
    params_path = run.path / "params.json"
    if params_path.exists():
        previous = json.loads(params_path.read_text(encoding="utf-8"))
        resolved = json.loads(json.dumps(params))
        # Only finished steps must keep their parameters; an unfinished one may be re-run with new ones.
        changed = sorted(step for step, values in previous.get("steps", {}).items()
                         if step in resolved and resolved[step] != values
                         and run.is_done(STEP_MARKERS.get(step, step)))
        if changed or previous.get("profile") != profile:
            raise InputError(
                f"run folder {run.path} was made with other parameters (profile {previous.get('profile')!r}, "
                f"differing steps {changed}); choose a new --run-id or repeat the original profile and --set values"
            )
        if not resume:
            raise InputError(f"run folder {run.path} already exists; pass --resume to continue it or pick a new --run-id")
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(params_path, record)
    write_environment(run)

    start = time.perf_counter()
    for step in steps:
        if resume and run.is_done(STEP_MARKERS[step]) and (run.path / "html" / f"{step}.html").exists():
            logger.info("step %s already finished in %s; skipping", step, run.path)
            continue
        execute_step(run, step, params[step], kernel_name=kernel_name, progress=progress)
    from pdblib.report import write_index

    index = write_index(run, steps=list(STEPS), wall_seconds=time.perf_counter() - start)
    logger.info("report written to %s", index)
    from pdblib.site import build_site

    build_site(reports_dir)
    return run.path


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m pdblib.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="quick", help=f"parameter profile, one of {sorted(PROFILES)}")
    parser.add_argument("--run-id", help="run folder name under --reports-dir (default: <profile>-<UTC time>)")
    parser.add_argument("--reports-dir", default=str(REPORTS_DIR), help="parent folder of run folders")
    parser.add_argument("--resume", action="store_true", help="skip steps that already finished in the run folder")
    parser.add_argument("--steps", nargs="+", help=f"steps to execute, a subset of {list(STEPS)}")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="STEP.PARAM=VALUE",
                        help="override one parameter; VALUE is parsed as JSON when it can be (repeatable)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name for papermill")
    parser.add_argument("--quiet", action="store_true",
                        help="hide papermill's per-cell progress bar and the notebooks' logs and progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = {}
    for item in args.overrides:
        if "=" not in item:
            parser.error(f"--set expects STEP.PARAM=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        overrides[key] = _parse_value(value)
    try:
        path = run_chain(args.profile, run_id=args.run_id, reports_dir=args.reports_dir, overrides=overrides,
                         resume=args.resume, steps=args.steps, kernel_name=args.kernel, progress=not args.quiet)
    except (InputError, StepFailedError, FileNotFoundError) as exc:
        logger.error("%s", exc)
        return 1
    print(f"Report: {path / 'index.html'}")  # noqa: T201 - the command's result for the user
    return 0


if __name__ == "__main__":
    sys.exit(main())
