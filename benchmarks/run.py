"""Run the inference and training benchmarks and write one JSON file (and optionally Markdown).

Usage::

    python -m benchmarks.run --out benchmarks/results.json --markdown docs/benchmarks.md

Run it from the repository root on an otherwise idle machine: other load inflates both the
medians and the interquartile ranges.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
import time
from pathlib import Path

import torch

from benchmarks.inference import run_inference_benchmark
from benchmarks.machine import git_commit, machine_facts
from benchmarks.render import render_markdown, write_markdown
from benchmarks.training import run_training_benchmark
from pdblib.core.inference import FLIP_FORMS
from pdblib.models import MODELS
from pdblib.utils import atomic_write_json, read_json

logger = logging.getLogger("benchmarks.run")

SCHEMA_VERSION = 1
# Results of other benchmark commands, kept when this one rewrites the file.
KEPT_SECTIONS = ("penalty_quality",)


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser; every default is the full benchmark's setting."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results.json"),
                        help="JSON file to write (default: benchmarks/results.json)")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also render the results as a Markdown page at this path")
    parser.add_argument("--model", choices=sorted(MODELS), default="small_cnn",
                        help="victim architecture for 1x28x28 inputs (default: small_cnn)")
    parser.add_argument("--num-classes", type=int, default=10, help="K, the number of real classes (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs (default: 0)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice, recorded in the JSON)")
    parser.add_argument("--skip-inference", action="store_true", help="do not run the inference benchmark")
    parser.add_argument("--skip-training", action="store_true", help="do not run the training benchmark")

    group = parser.add_argument_group("inference")
    group.add_argument("--latency-batch", type=int, default=1, help="batch size of the latency timing (default: 1)")
    group.add_argument("--throughput-batch", type=int, default=256,
                       help="batch size of the throughput timing (default: 256)")
    group.add_argument("--warmup", type=int, default=10, help="untimed calls per method and batch (default: 10)")
    group.add_argument("--repeats", type=int, default=100, help="timed calls per method and batch (default: 100)")
    group.add_argument("--flip-form", choices=FLIP_FORMS, default="onehot_random",
                       help="PDB's flipped-answer form (default: onehot_random)")
    group.add_argument("--target-flip-rate", type=float, default=0.01,
                       help="benign flip rate that PDB's threshold is calibrated to, in [0, 1) (default: 0.01)")

    group = parser.add_argument_group("training")
    group.add_argument("--train-batch-sizes", type=int, nargs="+", default=[64, 128, 256],
                       help="training batch sizes (default: 64 128 256)")
    group.add_argument("--transition-ratios", type=float, nargs="+", default=[0.0, 0.1, 0.3],
                       help="transition samples per benign sample (default: 0 0.1 0.3)")
    group.add_argument("--penalty-fractions", type=float, nargs="+", default=[1.0, 0.25],
                       help="shares of each batch the penalty is computed on, in (0, 1] (default: 1 0.25)")
    group.add_argument("--train-batches", type=int, default=50,
                       help="benign batches per timed epoch (default: 50)")
    group.add_argument("--train-warmup", type=int, default=1, help="untimed epochs per configuration (default: 1)")
    group.add_argument("--train-repeats", type=int, default=3, help="timed epochs per configuration (default: 3)")
    return parser


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    """Run the benchmarks that ``args`` select and return the results dict."""
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    started = time.time()
    results: dict = {
        "schema_version": SCHEMA_VERSION,
        "command": shlex.join(["python", "-m", "benchmarks.run", *argv]),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "git_commit": git_commit(Path(__file__).resolve().parent.parent),
        "device": "cpu",
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "machine": machine_facts(),
    }
    if not args.skip_inference:
        results["inference"] = run_inference_benchmark(
            model_name=args.model, num_classes=args.num_classes, latency_batch=args.latency_batch,
            throughput_batch=args.throughput_batch, warmup=args.warmup, repeats=args.repeats,
            flip_form=args.flip_form, target_flip_rate=args.target_flip_rate, seed=args.seed)
    if not args.skip_training:
        results["training"] = run_training_benchmark(
            model_name=args.model, num_classes=args.num_classes, batch_sizes=tuple(args.train_batch_sizes),
            transition_ratios=tuple(args.transition_ratios), batches=args.train_batches,
            warmup=args.train_warmup, repeats=args.train_repeats, penalty_fractions=tuple(args.penalty_fractions),
            seed=args.seed)
    results["seconds_total"] = time.time() - started
    return results


def main(argv: list[str] | None = None) -> dict:
    """Parse ``argv``, run the benchmarks, write the JSON (and Markdown), and return the results."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    results = run(args, argv)
    if args.out.exists():
        # Sections that other commands measured (benchmarks.penalty_quality) stay in the file.
        previous = read_json(args.out)
        results.update({key: previous[key] for key in KEPT_SECTIONS if key in previous})
    atomic_write_json(args.out, results)
    logger.info("wrote %s after %.0f s", args.out, results["seconds_total"])
    if args.markdown is not None:
        write_markdown(results, args.markdown, source=args.out)
        logger.info("wrote %s", args.markdown)
    return results


if __name__ == "__main__":
    print(render_markdown(main()))
