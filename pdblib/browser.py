"""Open a report page in headless Chromium and list what failed to load.

A published report must open offline: every request it makes is a local file, no script logs
an error, and every figure decodes. :func:`check_page` loads a page through Playwright driving
the system Chromium (Debian package ``chromium``; Playwright's own browser downloads are not
used) and returns the failed requests, requests that left the machine, console errors and
broken images.

Command line::

    python -m pdblib.browser reports/<run-id>/index.html --screenshot index.png

exits with status 1 when the page has any problem and prints the list.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pdblib.utils import InputError

logger = logging.getLogger(__name__)

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


@dataclass
class PageCheck:
    """Result of loading one page: its requests, failures, console errors and broken images.

    Attributes
    ----------
    requests : list of str
        Every URL the page requested.
    failed_requests : list of str
        ``"<url>: <error>"`` for each request that failed.
    remote_requests : list of str
        Requests to anything but a ``file:`` or ``data:`` URL.
    console_errors : list of str
        Console messages of type ``error`` and uncaught page errors.
    broken_images : list of str
        ``src`` of each ``<img>`` that did not decode to a non-empty picture.
    images : int
        Number of ``<img>`` elements.
    """

    requests: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    broken_images: list[str] = field(default_factory=list)
    images: int = 0

    @property
    def problems(self) -> list[str]:
        """Return every problem found, one line each; empty when the page is clean."""
        return ([f"failed request {r}" for r in self.failed_requests]
                + [f"remote request {r}" for r in self.remote_requests]
                + [f"console error {m}" for m in self.console_errors]
                + [f"broken image {s}" for s in self.broken_images])


def find_chromium() -> str | None:
    """Return the path of a system Chromium, or None when none is installed."""
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def check_page(page_path: str | Path, *, screenshot: str | Path | None = None, chromium: str | None = None,
               timeout_ms: int = 30000) -> PageCheck:
    """Load ``page_path`` in headless Chromium and record failures.

    Parameters
    ----------
    page_path : path
        A local HTML file.
    screenshot : path, optional
        Where to save a full-page PNG screenshot.
    chromium : str, optional
        Browser executable; defaults to :func:`find_chromium`.
    timeout_ms : int
        Load timeout.

    Raises
    ------
    InputError
        If the page does not exist, or no Chromium or Playwright is installed.
    """
    path = Path(page_path).resolve()
    if not path.is_file():
        raise InputError(f"page {path} not found; run the chain first (make report)")
    executable = chromium or find_chromium()
    if executable is None:
        raise InputError("no Chromium found; install it (Debian: apt-get install chromium) or pass chromium=")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise InputError("Playwright is not installed; pip install -e '.[dev]' installs it") from None

    result = PageCheck()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.on("request", lambda request: result.requests.append(request.url))
            page.on("requestfailed", lambda request: result.failed_requests.append(
                f"{request.url}: {request.failure}"))
            page.on("console", lambda message: result.console_errors.append(message.text)
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: result.console_errors.append(str(error)))
            page.goto(path.as_uri(), wait_until="load", timeout=timeout_ms)
            images = page.evaluate(
                "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
            result.images = len(images)
            result.broken_images = [src for src, ok in images if not ok]
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    result.remote_requests = [url for url in result.requests if not url.startswith(("file:", "data:"))]
    return result


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns 1 when the page has a problem."""
    parser = argparse.ArgumentParser(prog="python -m pdblib.browser", description=__doc__.split("\n\n")[0])
    parser.add_argument("page", help="local HTML file, e.g. reports/<run-id>/index.html")
    parser.add_argument("--screenshot", help="save a full-page PNG screenshot here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = check_page(args.page, screenshot=args.screenshot)
    except InputError as exc:
        logger.error("%s", exc)
        return 1
    summary = {"requests": len(result.requests), "images": result.images, "problems": result.problems}
    print(json.dumps(summary, indent=2))  # noqa: T201 - the command's result for the user
    return 1 if result.problems else 0


__all__ = ["PageCheck", "check_page", "find_chromium"]

if __name__ == "__main__":
    sys.exit(main())
