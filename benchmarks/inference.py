"""Defended inference cost: latency at a small batch and throughput at a large batch.

Rows measured side by side in one run, on the CPU, under ``torch.inference_mode``:

``network``
    The undefended victim network in eager mode, ``softmax(victim(x))``: the baseline of
    every ratio.
``network_torchscript``
    The same network traced with ``torch.jit.trace``, to separate the gain of TorchScript
    itself from the cost of PDB's flip rule.
``pdb_torchscript``
    PDB exported with :func:`pdblib.core.export.export_torchscript` and loaded back.
one row per registered defense
    ``Defense.answer(x)`` of every name in :data:`pdblib.defenses.DEFENSES`, plus ``pdb``
    (the Python :class:`pdblib.core.PDBDefense`). ``answer`` also validates the batch, so
    the ``undefended`` row shows what the Defense API adds to the bare network.

The victim is an untrained ``small_cnn``: timing does not depend on the weights. PDB's
network is the victim with its head extended to K+1 outputs, and its threshold is calibrated
on seeded uniform-noise inputs to ``target_flip_rate``. The flip fraction of each timed batch
is recorded, because flipped rows take an extra path.
"""

from __future__ import annotations

import copy

import logging
import tempfile
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from benchmarks.timing import summarize, time_interleaved
from pdblib.core.export import export_torchscript, load_torchscript
from pdblib.core.head import extend_head
from pdblib.core.inference import FLIP_FORMS, PDBDefense
from pdblib.defenses import DEFENSES, Defense, build_defense
from pdblib.models import build_model
from pdblib.utils import InputError, check_choice, make_generator

logger = logging.getLogger(__name__)

BASELINE = "network"
INPUT_SHAPE = (1, 28, 28)


def build_victims(model_name: str, num_classes: int, seed: int) -> tuple[nn.Module, nn.Module]:
    """Return an untrained victim ``(K outputs)`` and its PDB network ``(K+1 outputs)``, both in eval mode.

    The victim's initialization draws from torch's global generator, seeded here with ``seed``
    inside ``torch.random.fork_rng`` so that the caller's global state is unchanged.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        victim = build_model(model_name, num_classes).eval()
    pdb_network = extend_head(victim, generator=make_generator(seed)).eval()
    return victim, pdb_network


def build_benchmark_defense(name: str, victim: nn.Module, pdb_network: nn.Module, num_classes: int, *,
                            threshold: float, flip_form: str, secret_seed: int) -> Defense:
    """Build the registered defense ``name`` around ``victim`` with its default knobs.

    ``"pdb"`` is built around ``pdb_network`` with the given threshold and flip form.

    Raises
    ------
    TypeError, ValueError
        When the defense needs arguments that this factory does not supply (for example a
        surrogate model); the caller skips such a defense with a note.
    """
    if name == PDBDefense.name:
        return PDBDefense(pdb_network, num_classes, threshold=threshold, flip_form=flip_form,
                          secret_seed=secret_seed, input_shape=INPUT_SHAPE)
    if name == "adaptive_misinformation":
        # A second network of the victim's architecture; its weights do not change the timing.
        misinformation = copy.deepcopy(victim).eval()
        return build_defense(name, victim, num_classes, misinformation_model=misinformation)
    return build_defense(name, victim, num_classes)


def registered_defense_names() -> list[str]:
    """Names of every registered defense, with ``"pdb"`` included even before it registers itself."""
    return sorted(set(DEFENSES) | {PDBDefense.name})


def _defense_call(defense: Defense, x: torch.Tensor) -> Callable[[], object]:
    return lambda: defense.answer(x)


def _network_call(network: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], object]:
    return lambda: torch.softmax(network(x), dim=1)


def _module_call(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], object]:
    return lambda: module(x)


def _flip_fraction(defense: PDBDefense, x: torch.Tensor) -> float:
    return float(defense.answer(x).flipped.float().mean())


def run_inference_benchmark(*, model_name: str = "small_cnn", num_classes: int = 10,
                            latency_batch: int = 1, throughput_batch: int = 256, warmup: int = 10,
                            repeats: int = 100, flip_form: str = "onehot_random",
                            target_flip_rate: float = 0.01, seed: int = 0) -> dict:
    """Measure latency and throughput of the undefended network, PDB and every registered defense.

    Parameters
    ----------
    latency_batch : int
        Batch size of the latency measurement (1 for per-query latency).
    throughput_batch : int
        Batch size of the throughput measurement.
    warmup, repeats : int
        Untimed calls, then timed calls, of every row at each batch size.
    flip_form, target_flip_rate
        PDB's flipped-answer form and the benign flip rate its threshold is calibrated to.

    Returns
    -------
    dict
        ``rows`` (one per measured method, each with ``latency`` in ms and ``throughput`` in
        inputs per second, both summarized and as a ratio to ``network``), ``skipped``
        (defenses the factory could not build, with the reason) and the PDB settings.
    """
    for value, name in ((latency_batch, "latency_batch"), (throughput_batch, "throughput_batch")):
        if value < 1:
            raise InputError(f"{name} must be at least 1, got {value}")
    check_choice(flip_form, FLIP_FORMS, what="flip form")
    generator = make_generator(seed)
    victim, pdb_network = build_victims(model_name, num_classes, seed)

    pdb = PDBDefense(pdb_network, num_classes, flip_form=flip_form, secret_seed=seed, input_shape=INPUT_SHAPE)
    pdb.calibrate(torch.rand(1024, *INPUT_SHAPE, generator=generator), target_flip_rate)

    calls_for_batch: dict[str, Callable[[torch.Tensor], Callable[[], object]]] = {
        BASELINE: partial(_network_call, victim),
    }
    with torch.no_grad():
        traced_victim = torch.jit.trace(victim, torch.rand(1, *INPUT_SHAPE, generator=generator), check_trace=False)
    calls_for_batch["network_torchscript"] = partial(_network_call, traced_victim)

    with tempfile.TemporaryDirectory() as folder:
        path = export_torchscript(pdb, Path(folder) / "pdb.pt")
        deployed = load_torchscript(path)
    calls_for_batch["pdb_torchscript"] = partial(_module_call, deployed)

    skipped = []
    for name in registered_defense_names():
        try:
            defense = build_benchmark_defense(name, victim, pdb_network, num_classes,
                                              threshold=pdb.threshold, flip_form=flip_form, secret_seed=seed)
        except (TypeError, ValueError) as error:
            logger.warning("skipping defense %r: the benchmark factory cannot build it (%s)", name, error)
            skipped.append({"defense": name, "reason": f"{type(error).__name__}: {error}"})
            continue
        calls_for_batch[name] = partial(_defense_call, defense)

    measurements = {}
    for metric, batch_size in (("latency", latency_batch), ("throughput", throughput_batch)):
        x = torch.rand(batch_size, *INPUT_SHAPE, generator=generator)
        calls = {name: make(x) for name, make in calls_for_batch.items()}
        logger.info("timing %d methods at batch %d: %d warm-up and %d timed calls each",
                    len(calls), batch_size, warmup, repeats)
        with torch.inference_mode():
            seconds = time_interleaved(calls, warmup=warmup, repeats=repeats)
        measurements[metric] = (batch_size, seconds, _flip_fraction(pdb, x))

    rows = []
    for name in calls_for_batch:
        row: dict = {"method": name}
        for metric, (batch_size, seconds, flip_fraction) in measurements.items():
            if metric == "latency":
                values, unit = [1e3 * s for s in seconds[name]], "ms"
            else:
                values, unit = [batch_size / s for s in seconds[name]], "inputs/s"
            row[metric] = {"batch_size": batch_size, "unit": unit, **summarize(values)}
            if name in ("pdb", "pdb_torchscript"):
                row[metric]["flip_fraction"] = flip_fraction
        rows.append(row)
    for metric in measurements:
        base = next(row for row in rows if row["method"] == BASELINE)[metric]["median"]
        for row in rows:
            row[metric]["ratio"] = row[metric]["median"] / base

    return {
        "baseline": BASELINE,
        "model": model_name,
        "num_classes": num_classes,
        "input_shape": list(INPUT_SHAPE),
        "pdb": {"flip_form": flip_form, "target_flip_rate": target_flip_rate, "threshold": pdb.threshold,
                "network_export": str(deployed.network_export)},
        "rows": rows,
        "skipped": skipped,
    }
