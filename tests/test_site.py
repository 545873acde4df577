import json

import pytest

from pdblib.site import build_site


def _fake_run(root, name, profile):
    run = root / name
    run.mkdir()
    (run / "index.html").write_text("<html></html>")
    (run / "params.json").write_text(json.dumps({"profile": profile}))
    (run / "environment.json").write_text(json.dumps({"git_commit": "abc123", "created": "2026-01-01"}))


def test_site_links_every_finished_run(tmp_path):
    _fake_run(tmp_path, "quick-1", "quick")
    _fake_run(tmp_path, "smoke-1", "smoke")
    (tmp_path / "unfinished").mkdir()
    page = build_site(tmp_path).read_text()
    assert 'href="quick-1/index.html"' in page
    assert 'href="smoke-1/index.html"' in page
    assert "unfinished" not in page
    assert "http" not in page


def test_site_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        build_site(tmp_path / "absent")
