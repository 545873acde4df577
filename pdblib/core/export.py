"""Export a PDB-defended network, flip rule included, as one TorchScript module.

:class:`DeployedPDB` wraps the K+1-output network together with the flip threshold, the flip
form and the precomputed weights of the keyed flip hash. Its ``forward(x)`` returns the
``(N, K)`` answers that :meth:`pdblib.core.inference.PDBDefense.answer` returns, because both
call the same functions of :mod:`pdblib.core.flip`. A saved module loads with
``torch.jit.load`` alone, with no import of ``pdblib``.

How the module is built (:func:`export_torchscript`):

- the wrapper and its flip logic are always compiled with ``torch.jit.script``, because the
  flip branch depends on the data;
- the network inside is scripted when ``torch.jit.script`` accepts it, and traced with an
  example input otherwise. A traced network is correct only if its forward has no
  data-dependent control flow. The chosen method is stored in the module's
  ``network_export`` attribute ("script" or "trace"). With torch 2.14 the models of
  :mod:`pdblib.models` are scripted;
- before saving, the module's answers are compared with the defense's answers on a seeded
  random batch, and a mismatch raises an error. This check replaces ``torch.jit.trace``'s own
  ``check_trace``, which is turned off.

NOTE: torch 2.14 marks ``torch.jit.script`` and ``torch.jit.trace`` as deprecated (a
``FutureWarning``) in favour of ``torch.export``; they still work there.

ONNX (:func:`export_onnx`) needs the ``onnx`` package, which is not a dependency of pdblib. It
exports the scripted wrapper with the TorchScript-based exporter (``dynamo=False``, opset 17).
The flip rule exports: the flip branch becomes an ONNX ``If`` node, and with onnx 1.23.2 the
ONNX reference evaluator reproduces the defense's answers for all three flip forms (the
optional test in ``tests/test_export.py``). The input checks do not export: the exporter drops
their ``raise`` branches, so an ONNX runtime answers out-of-range queries instead of rejecting
them.
"""

import io
import logging
from pathlib import Path
from typing import List, Tuple, Union

import torch
from torch import nn

from pdblib.core.flip import defended_probs
from pdblib.core.inference import PDBDefense
from pdblib.utils import InputError, atomic_write_bytes

logger = logging.getLogger(__name__)

NETWORK_EXPORT_METHODS = ("script", "trace")


class DeployedPDB(nn.Module):
    """PDB's defended inference as one module: K+1-output network, threshold test and flip.

    Build it with :meth:`from_defense`. The network is a submodule. ``hash_weights`` and
    ``hash_affine`` are buffers, so they move with ``.to(device)``. ``threshold`` is a
    0-dim float64 buffer, so it can be changed in ``state_dict`` without re-exporting.
    ``flip_form`` and ``num_classes`` are plain attributes because a string cannot be a buffer.

    Parameters
    ----------
    model : nn.Module
        Network with ``num_classes + 1`` outputs, already in eval mode.
    num_classes : int
        ``K``.
    threshold : float
        Flip when the transition score exceeds it.
    flip_form : {"swap_top2", "onehot_second", "onehot_random"}
    hash_weights : (C*H*W,) int64
    hash_affine : (2,) int64
        Parameters of the keyed hash, from :meth:`PDBDefense.hash_parameters`.
    input_shape : tuple
        ``(C, H, W)`` of one query; other shapes raise an error in ``forward``.
    network_export : {"script", "trace"}
        How the network was compiled, for the record.
    """

    def __init__(self, model: nn.Module, num_classes: int, threshold: float, flip_form: str,
                 hash_weights: torch.Tensor, hash_affine: torch.Tensor, input_shape: Tuple[int, int, int],
                 network_export: str = "script"):
        super().__init__()
        self.model = model
        self.num_classes = int(num_classes)
        self.flip_form = str(flip_form)
        self.input_shape: List[int] = [int(v) for v in input_shape]
        self.network_export = str(network_export)
        self.register_buffer("threshold", torch.tensor(float(threshold), dtype=torch.float64))
        self.register_buffer("hash_weights", hash_weights.to(torch.int64).clone())
        self.register_buffer("hash_affine", hash_affine.to(torch.int64).clone())

    @classmethod
    def from_defense(cls, defense: PDBDefense, network: Union[nn.Module, None] = None,
                     network_export: str = "script") -> "DeployedPDB":
        """Build the module from a :class:`PDBDefense`, optionally with a compiled copy of its network."""
        if not isinstance(defense, PDBDefense):
            raise InputError(f"expected a PDBDefense, got {type(defense).__name__}; "
                             "build one with pdblib.core.PDBDefense(model, num_classes, ...)")
        num_features = 1
        for size in defense.input_shape:
            num_features *= int(size)
        weights, affine = defense.hash_parameters(num_features)
        return cls(network if network is not None else defense.model, defense.num_classes,
                   defense.threshold, defense.flip_form, weights, affine, defense.input_shape,
                   network_export)

    def _check_input(self, x: torch.Tensor) -> None:
        # The same checks as Defense.validate, in a form that TorchScript compiles.
        if x.dim() != 4 or x.shape[0] == 0:
            raise ValueError("query batch must have shape (N, C, H, W) with N >= 1")
        if x.shape[1] != self.input_shape[0] or x.shape[2] != self.input_shape[1] or x.shape[3] != self.input_shape[2]:
            raise ValueError("query batch has the wrong (C, H, W); expected the module's input_shape")
        if not x.is_floating_point():
            raise ValueError("query batch must be float with values in [0, 1]; convert uint8 with x.float() / 255")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("query batch contains NaN or infinite values")
        if bool(x.min() < 0.0) or bool(x.max() > 1.0):
            raise ValueError("query batch has values outside [0, 1]; pass pixel intensities scaled to [0, 1]")

    @torch.jit.export
    def answer(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Return ``(probs (N, K), flipped (N,) bool)`` for a query batch ``(N, C, H, W)`` in [0, 1]."""
        self._check_input(x)
        logits = self.model(x).float()
        threshold = float(self.threshold)
        return defended_probs(logits, x, self.num_classes, threshold, self.flip_form,
                              self.hash_weights, self.hash_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the defended answers ``(N, K)`` for a query batch ``(N, C, H, W)`` in [0, 1]."""
        probs, _ = self.answer(x)
        return probs


def _compile_network(model: nn.Module, example: torch.Tensor) -> Tuple[torch.jit.ScriptModule, str]:
    """Script ``model``, or trace it with ``example`` when scripting fails."""
    try:
        return torch.jit.script(model), "script"
    except (RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError,
            torch.jit.frontend.FrontendError) as error:
        logger.warning("torch.jit.script failed on %s (%s); tracing it instead, which is correct only "
                       "without data-dependent control flow in forward", type(model).__name__, error)
        with torch.no_grad():
            return torch.jit.trace(model, example, check_trace=False), "trace"


def check_input_batch(defense: PDBDefense, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Return a seeded uniform random batch ``(batch_size, C, H, W)`` in [0, 1] of the defense's input shape."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.rand(batch_size, *defense.input_shape, generator=generator)


def build_deployed_module(defense: PDBDefense, network_export: str = "auto",
                          check_batch: Union[torch.Tensor, None] = None) -> torch.jit.ScriptModule:
    """Compile a :class:`PDBDefense` into a scripted :class:`DeployedPDB` on the CPU.

    Parameters
    ----------
    defense : PDBDefense
    network_export : {"auto", "script", "trace"}
        ``"auto"`` scripts the network and falls back to tracing it.
    check_batch : (N, C, H, W) float in [0, 1], optional
        Queries on which the module must match ``defense.answer``; a seeded random batch when
        ``None``.

    Raises
    ------
    RuntimeError
        If the compiled module's answers or flips differ from the defense's on ``check_batch``.
    """
    if not isinstance(defense, PDBDefense):
        raise InputError(f"expected a PDBDefense, got {type(defense).__name__}; "
                         "build one with pdblib.core.PDBDefense(model, num_classes, ...)")
    if not defense.deterministic:
        raise InputError("only deterministic PDB defenses export; build the defense with deterministic_flips=True")
    if network_export not in ("auto",) + NETWORK_EXPORT_METHODS:
        raise InputError(f"unknown network_export {network_export!r}; choose 'auto', 'script' or 'trace'")
    if check_batch is None:
        check_batch = check_input_batch(defense)
    defense.validate(check_batch)
    network = defense.model.eval()
    example = check_batch[:1]
    if network_export == "auto":
        compiled, method = _compile_network(network, example)
    elif network_export == "script":
        compiled, method = torch.jit.script(network), "script"
    else:
        with torch.no_grad():
            compiled, method = torch.jit.trace(network, example, check_trace=False), "trace"
    module = torch.jit.script(DeployedPDB.from_defense(defense, compiled, method).eval())

    expected = defense.answer(check_batch)
    with torch.inference_mode():
        probs, flipped = module.answer(check_batch)
    if not torch.equal(flipped, expected.flipped) or not torch.allclose(probs, expected.probs, atol=1e-6, rtol=0):
        raise RuntimeError(
            f"the exported module (network {method}d) disagrees with PDBDefense on the check batch: "
            f"{int((flipped != expected.flipped).sum())} flip decisions differ, max answer difference "
            f"{float((probs - expected.probs).abs().max()):.3g}; export with network_export='script' "
            "or make the network scriptable"
        )
    logger.info("built DeployedPDB (network %sd, flip form %s, threshold %.4f); it matches PDBDefense "
                "on %d check inputs, %d of them flipped", method, defense.flip_form, defense.threshold,
                len(check_batch), int(flipped.sum()))
    return module


def export_torchscript(defense: PDBDefense, path: Union[str, Path], network_export: str = "auto",
                       check_batch: Union[torch.Tensor, None] = None) -> Path:
    """Compile ``defense`` with :func:`build_deployed_module` and save it atomically to ``path``.

    A crash during the write leaves any previous file at ``path`` intact. Load the file with
    :func:`load_torchscript` or plain ``torch.jit.load``.

    Returns
    -------
    Path
        ``path``.
    """
    module = build_deployed_module(defense, network_export=network_export, check_batch=check_batch)
    buffer = io.BytesIO()
    torch.jit.save(module, buffer)
    path = atomic_write_bytes(path, buffer.getvalue())
    logger.info("saved TorchScript PDB module to %s (%d bytes)", path, len(buffer.getvalue()))
    return path


def load_torchscript(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu") -> torch.jit.ScriptModule:
    """Load a module saved by :func:`export_torchscript`, in eval mode.

    Calling the module returns the answers ``(N, K)``; ``module.answer(x)`` also returns the
    ``(N,)`` flip flags.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"TorchScript module {path} not found; write it with export_torchscript first")
    return torch.jit.load(str(path), map_location=map_location).eval()


def export_onnx(defense: PDBDefense, path: Union[str, Path], opset_version: int = 17) -> Path:
    """Export the defended inference to ONNX, flip rule included, and save it atomically.

    Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) on the
    scripted :class:`DeployedPDB`, with a dynamic batch axis.

    Raises
    ------
    ImportError
        If the ``onnx`` package is not installed (``pip install onnx``).
    """
    try:
        import onnx  # noqa: F401  (torch.onnx.export needs it to serialize the graph)
    except ImportError as error:
        raise ImportError("ONNX export needs the onnx package; install it with pip install onnx") from error
    module = build_deployed_module(defense)
    example = check_input_batch(defense, batch_size=2)
    buffer = io.BytesIO()
    torch.onnx.export(module, (example,), buffer, input_names=["x"], output_names=["probs"],
                      dynamic_axes={"x": {0: "batch"}, "probs": {0: "batch"}},
                      opset_version=opset_version, dynamo=False)
    return atomic_write_bytes(path, buffer.getvalue())
