"""Repeated timing with warm-up, and summary statistics (median, quartiles, interquartile range)."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from pdblib.utils import InputError


def summarize(samples: list[float]) -> dict:
    """Return the median, quartiles, interquartile range, min, max and count of ``samples``.

    Quartiles use NumPy's default linear interpolation.
    """
    if len(samples) == 0:
        raise InputError("cannot summarize an empty list of timings; use at least one repeat")
    values = np.asarray(samples, dtype=float)
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "iqr": float(q3 - q1),
            "min": float(values.min()), "max": float(values.max()), "repeats": int(len(values))}


def time_interleaved(calls: dict[str, Callable[[], object]], *, warmup: int,
                     repeats: int) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times after ``warmup`` untimed calls, in interleaved order.

    Each round calls every callable once, and the starting callable rotates from round to
    round. A slow drift of the machine (frequency scaling, other load) then spreads over all
    callables instead of biasing the ones measured last.

    Returns
    -------
    dict
        Seconds of each timed call, per name, in call order.
    """
    if warmup < 0:
        raise InputError(f"warmup must be >= 0, got {warmup}")
    if repeats < 1:
        raise InputError(f"repeats must be at least 1, got {repeats}")
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - start)
    return seconds
