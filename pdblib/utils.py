"""Seeding, atomic artifact writes, checkpoint loading and input validation."""

from __future__ import annotations

import json
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """Invalid input given to a pdblib function; the message names the value and the fix."""


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch global state and return a torch generator seeded alike.

    Only notebooks and tests call this; library functions take an explicit generator.
    """
    if not isinstance(seed, int) or seed < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return make_generator(seed)


def make_generator(seed: int) -> torch.Generator:
    """Return a CPU ``torch.Generator`` seeded with ``seed``."""
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return generator


def _atomic_replace(path: Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates the file as 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_current_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``.

    A crash mid-write leaves the previous file intact instead of a truncated one.
    """
    return _atomic_replace(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serializable")


def read_json(path: str | Path) -> Any:
    """Read a JSON file, raising ``FileNotFoundError`` that names the missing artifact."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"artifact {path} not found; run the step that writes it first")
    return json.loads(path.read_text(encoding="utf-8"))


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Save a checkpoint dict of tensors and plain values atomically with ``torch.save``."""
    return _atomic_replace(Path(path), lambda handle: torch.save(state, handle))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint saved by :func:`save_checkpoint` with ``weights_only=True``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} not found; run the step that trains it first")
    return torch.load(path, map_location="cpu", weights_only=True)


def validate_images(x: Any, *, name: str = "x", channels: int | None = None,
                    image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Check that ``x`` is a float image batch of shape ``(N, C, H, W)`` with values in [0, 1].

    Parameters
    ----------
    x : torch.Tensor
        Candidate batch.
    name : str
        Name used in error messages.
    channels, image_size : optional
        Expected ``C`` and ``(H, W)``; ``None`` accepts any.

    Returns
    -------
    torch.Tensor
        ``x`` unchanged.

    Raises
    ------
    InputError
        On a non-tensor, wrong rank or size, non-float dtype, NaN or infinite values, or values
        outside [0, 1]. The message names the value and how to fix it.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(
            f"{name} must have shape (N, C, H, W), got shape {tuple(x.shape)}; "
            "add a batch dimension with x.unsqueeze(0) or a channel dimension with x.unsqueeze(1)"
        )
    if x.numel() == 0:
        raise InputError(f"{name} is an empty batch (shape {tuple(x.shape)}); send at least one input")
    if channels is not None and x.shape[1] != channels:
        raise InputError(f"{name} has {x.shape[1]} channels, expected {channels} (shape {tuple(x.shape)})")
    if image_size is not None and tuple(x.shape[2:]) != tuple(image_size):
        raise InputError(f"{name} has image size {tuple(x.shape[2:])}, expected {tuple(image_size)}")
    if not torch.is_floating_point(x):
        raise InputError(
            f"{name} has dtype {x.dtype}, expected a float dtype with values in [0, 1]; "
            "convert uint8 images with x.float() / 255"
        )
    # One pass over the batch: a NaN makes both extremes NaN, an infinity puts one outside [0, 1].
    low, high = (float(v) for v in torch.aminmax(x))
    if 0.0 <= low and high <= 1.0:
        return x
    if not torch.isfinite(x).all():
        bad = int((~torch.isfinite(x)).sum())
        raise InputError(f"{name} contains {bad} NaN or infinite values; remove or repair those inputs")
    if low < 0.0 or high > 1.0:
        raise InputError(
            f"{name} has values in [{low:.4g}, {high:.4g}], expected [0, 1]; "
            "pass unnormalized pixel intensities scaled to [0, 1]"
        )
    return x


def check_choice(value: str, choices, *, what: str) -> str:
    """Return ``value`` if it is one of ``choices``, else raise an error that lists them."""
    if value not in choices:
        raise InputError(f"unknown {what} {value!r}; choose one of {sorted(choices)}")
    return value


def check_range(value: float, low: float, high: float, *, name: str,
                low_inclusive: bool = True, high_inclusive: bool = True) -> float:
    """Return ``value`` if it lies in the given interval, else raise an error naming it."""
    ok_low = value >= low if low_inclusive else value > low
    ok_high = value <= high if high_inclusive else value < high
    if not (ok_low and ok_high) or value != value:
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        raise InputError(f"{name} must be in {left}{low}, {high}{right}, got {value!r}")
    return value


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """Return ``device``, or CUDA when it is available and ``device`` is ``None`` or ``"auto"``."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
