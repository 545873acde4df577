"""Facts about the machine that a timing depends on: CPU model, cores, torch build and threads."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, or ``platform.processor()`` without it."""
    path = Path(cpuinfo)
    if path.exists():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            # x86 kernels write "model name"; some ARM kernels write "Model" or "Hardware".
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    return platform.processor() or "unknown"


def memory_gib(meminfo: str | Path = "/proc/meminfo") -> float | None:
    """Return the total memory in GiB from ``/proc/meminfo``, or ``None`` where it is missing."""
    path = Path(meminfo)
    if not path.exists():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)  # the kernel reports kB
    return None


def git_commit(repo: str | Path = ".") -> str | None:
    """Return the checked-out commit of ``repo``, with ``+dirty`` for uncommitted changes, or ``None``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                capture_output=True, text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if status else "")


def machine_facts() -> dict:
    """Collect the facts recorded next to every benchmark result."""
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable_cores = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "memory_gib": memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": bool(torch.backends.mkldnn.is_available()),
        "cuda_available": bool(torch.cuda.is_available()),
    }
