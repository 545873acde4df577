"""The headless-Chromium page check, on small local pages (skipped where no Chromium is installed)."""

import pytest

from pdblib.browser import check_page, find_chromium
from pdblib.utils import InputError

needs_browser = pytest.mark.skipif(find_chromium() is None, reason="no system Chromium installed")
pytest.importorskip("playwright")


def _write_png(path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(2, 2))
    plt.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)


@needs_browser
def test_clean_page_has_no_problems(tmp_path):
    _write_png(tmp_path / "figure.png")
    page = tmp_path / "index.html"
    page.write_text('<!DOCTYPE html><html><body><img src="figure.png"></body></html>', encoding="utf-8")
    result = check_page(page, screenshot=tmp_path / "shot.png")
    assert result.problems == []
    assert result.images == 1
    assert (tmp_path / "shot.png").stat().st_size > 0


@needs_browser
def test_missing_image_and_console_error_are_reported(tmp_path):
    page = tmp_path / "index.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.png">'
                    '<script>console.error("figure failed")</script></body></html>', encoding="utf-8")
    result = check_page(page)
    assert result.broken_images == ["missing.png"]
    assert any("missing.png" in r for r in result.failed_requests)
    assert any("figure failed" in m for m in result.console_errors)
    assert result.remote_requests == []


def test_missing_page_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        check_page(tmp_path / "nope.html")
