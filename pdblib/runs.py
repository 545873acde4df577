"""Run folders: where each step of the notebook chain reads and writes its artifacts.

Layout of ``reports/<run-id>/``::

    params.json           resolved parameters of every step, the profile name
    environment.json      git commit, Python and package versions, torch threads, device
    artifacts/<step>/     JSON, CSV and checkpoints written by each step
    notebooks/            executed notebooks, one per step
    html/                 the executed notebooks rendered to HTML
    index.html            the run's landing page

Each step writes a ``done.json`` marker last, so a resumed run can skip finished steps.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
import sys
from pathlib import Path

import pandas as pd

from pdblib.utils import atomic_write_json, atomic_write_text, read_json

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("torch", "torchvision", "numpy", "pandas", "seaborn", "matplotlib", "papermill",
            "nbconvert", "mlxtend", "tqdm")


class RunDir:
    """Paths and artifact helpers of one run folder."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def step(self, name: str) -> Path:
        """Return the artifact folder of step ``name``, creating it if missing."""
        folder = self.path / "artifacts" / name
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def artifact(self, step: str, filename: str) -> Path:
        """Return the path of one artifact of a step."""
        return self.step(step) / filename

    def write_json(self, step: str, filename: str, obj) -> Path:
        """Write a JSON artifact atomically."""
        return atomic_write_json(self.artifact(step, filename), obj)

    def read_json(self, step: str, filename: str):
        """Read a JSON artifact; a missing one raises an error naming the step to run."""
        path = self.path / "artifacts" / step / filename
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; run the notebook of step {step!r} for this run first")
        return read_json(path)

    def write_csv(self, step: str, filename: str, frame: pd.DataFrame) -> Path:
        """Write a CSV artifact atomically."""
        return atomic_write_text(self.artifact(step, filename), frame.to_csv(index=False))

    def read_csv(self, step: str, filename: str) -> pd.DataFrame:
        """Read a CSV artifact."""
        path = self.path / "artifacts" / step / filename
        if not path.exists():
            raise FileNotFoundError(f"{path} not found; run the notebook of step {step!r} for this run first")
        return pd.read_csv(path)

    def mark_done(self, step: str, summary: dict | None = None) -> None:
        """Write the step's completion marker (last, after every other artifact)."""
        record = {"finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        record.update(summary or {})
        self.write_json(step, "done.json", record)

    def is_done(self, step: str) -> bool:
        """Return whether step ``name`` finished in this run folder."""
        return (self.path / "artifacts" / step / "done.json").exists()


def git_commit(repo: Path = REPO_ROOT) -> str:
    """Return the checked-out commit, with ``-dirty`` when the tree has changes, or ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_record() -> dict:
    """Versions and machine facts saved next to each report."""
    from importlib import metadata

    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "packages": versions,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_environment(run: RunDir) -> Path:
    """Write ``environment.json`` into the run folder, keeping earlier invocations' records.

    A resumed run may execute later steps with another commit; ``environment.json`` describes
    the latest invocation and lists the earlier ones under ``previous``.
    """
    path = run.path / "environment.json"
    record = environment_record()
    if path.exists():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        record["previous"] = earlier.pop("previous", []) + [earlier]
    return atomic_write_json(path, record)


def load_params(run: RunDir) -> dict:
    """Read the run's ``params.json``."""
    return json.loads((run.path / "params.json").read_text(encoding="utf-8"))
