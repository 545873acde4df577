"""Build a static site of every run under ``reports/``: one landing page linking each run's report.

The run pages are plain HTML with inline styles and images referenced by relative paths, and
the executed-notebook pages have their CDN scripts removed when they are rendered, so the whole
folder opens offline from disk or from any static file server.

Command line::

    python -m pdblib.site            # writes reports/index.html
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import sys
from pathlib import Path

from pdblib.pipeline import REPORTS_DIR
from pdblib.report import _INDEX_CSS
from pdblib.utils import atomic_write_text

logger = logging.getLogger(__name__)


def _run_row(run: Path) -> str:
    params = json.loads((run / "params.json").read_text(encoding="utf-8"))
    env_path = run / "environment.json"
    env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.exists() else {}
    return (f"<tr><td><a href=\"{html.escape(run.name)}/index.html\">{html.escape(run.name)}</a></td>"
            f"<td>{html.escape(params.get('profile', '?'))}</td>"
            f"<td><code>{html.escape(str(env.get('git_commit', 'unknown'))[:12])}</code></td>"
            f"<td>{html.escape(str(env.get('created', '')))}</td></tr>")


def build_site(reports_dir: str | Path = REPORTS_DIR) -> Path:
    """Write ``reports_dir/index.html`` linking every run folder that has an ``index.html``.

    Raises
    ------
    FileNotFoundError
        If ``reports_dir`` does not exist.
    """
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        raise FileNotFoundError(f"reports folder {reports_dir} not found; run the notebook chain first")
    runs = sorted((p for p in reports_dir.iterdir() if (p / "index.html").exists() and (p / "params.json").exists()),
                  key=lambda p: p.name)
    rows = "\n".join(_run_row(run) for run in runs) or "<tr><td colspan=\"4\">no finished runs yet</td></tr>"
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>PDB study: all runs</title>"
            f"<style>{_INDEX_CSS}</style></head><body><h1>PDB model-stealing study: all runs</h1>"
            "<table class=\"table\"><thead><tr><th>run</th><th>profile</th><th>commit</th><th>created (UTC)</th>"
            f"</tr></thead><tbody>{rows}</tbody></table></body></html>\n")
    logger.info("site index with %d runs written to %s", len(runs), reports_dir / "index.html")
    return atomic_write_text(reports_dir / "index.html", page)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m pdblib.site", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reports-dir", default=str(REPORTS_DIR), help="folder holding the run folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        path = build_site(args.reports_dir)
    except FileNotFoundError as exc:
        logger.error("%s", exc)
        return 1
    print(f"Site: {path}")  # noqa: T201 - the command's result for the user
    return 0


if __name__ == "__main__":
    sys.exit(main())
