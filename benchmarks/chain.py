"""Time a whole command, such as the README's main job, and record its wall time and peak memory.

Usage, from a fresh clone (standard library only, so it runs before ``.venv`` exists)::

    python3 -m benchmarks.chain --results benchmarks/chain.json -- make report

The command runs as a child process with its output passed through. Peak memory is the
largest maximum resident set size of any single process the command started and waited for
(``getrusage(RUSAGE_CHILDREN)``). On Linux it covers grandchildren such as the Jupyter kernels,
but it is not the sum over processes running at once. The JSON holds the command, its exit status, wall
seconds, peak memory, the run folder printed on the ``Report:`` line and the machine; pass it
to ``python -m benchmarks.render --chain`` to put it on the benchmark page.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path


def run_and_measure(command: list[str]) -> dict:
    """Run ``command``, echoing its output, and return its exit status, wall time and peak memory."""
    start = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    report = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as child:
        for line in child.stdout:
            sys.stdout.write(line)
            if line.startswith("Report: "):
                report = line[len("Report: "):].strip()
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"command": " ".join(command), "returncode": child.returncode, "started": started,
            "wall_seconds": round(seconds, 1), "peak_rss_gib": round(peak_kib / 2 ** 20, 3),
            "report": report,
            "machine": {"cpu_count": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
                        "platform": platform.platform(), "python": platform.python_version()}}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the measured command's exit status."""
    parser = argparse.ArgumentParser(prog="python3 -m benchmarks.chain", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("benchmarks/chain.json"),
                        help="JSON file to write (default: benchmarks/chain.json)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command to time, after --")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to time after --, e.g. -- make report")
    record = run_and_measure(command)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    partial = args.results.with_name(args.results.name + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, args.results)
    sys.stderr.write(f"{record['command']}: exit {record['returncode']}, {record['wall_seconds'] / 60:.1f} min, "
                     f"peak RSS {record['peak_rss_gib']:.2f} GiB; written to {args.results}\n")
    return record["returncode"]


if __name__ == "__main__":
    sys.exit(main())
