import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from pdblib.core.export import build_deployed_module, export_onnx, export_torchscript, load_torchscript
from pdblib.core.head import extend_head
from pdblib.core.inference import FLIP_FORMS, PDBDefense
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.[a-z_]*` is deprecated:FutureWarning")

FLIP_RATE = 0.3  # calibrated so that both flipped and normal answers occur in every check


def _sequential_network(seed: int = 0) -> nn.Module:
    """A K+1-output network that torch.jit.script accepts."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh(), nn.Linear(16, K + 1)).eval()


def _classifier_network(seed: int = 0) -> nn.Module:
    """A pdblib Classifier with an extended head; the tests export it by tracing."""
    return extend_head(make_mlp(seed=seed), generator=make_generator(seed), weight_std=1.0).eval()


NETWORKS = {"script": _sequential_network, "trace": _classifier_network}


def _defense(network: str, flip_form: str, secret_seed: int = 3) -> tuple[PDBDefense, torch.Tensor]:
    x, _ = make_blobs(200, seed=21)
    defense = PDBDefense(NETWORKS[network](), K, flip_form=flip_form, secret_seed=secret_seed,
                         input_shape=IMAGE_SHAPE)
    defense.calibrate(x[:100], FLIP_RATE)
    return defense, x[100:]


@pytest.mark.parametrize("network", sorted(NETWORKS))
@pytest.mark.parametrize("flip_form", FLIP_FORMS)
def test_exported_module_matches_defense(tmp_path, network, flip_form):
    defense, x = _defense(network, flip_form)
    path = export_torchscript(defense, tmp_path / "pdb.pt", network_export=network)
    module = torch.jit.load(str(path))
    expected = defense.answer(x)
    probs, flipped = module.answer(x)

    assert expected.flipped.any()
    assert not expected.flipped.all()
    assert module.network_export == network
    assert torch.equal(flipped, expected.flipped)
    assert torch.equal(module(x), expected.probs)
    assert torch.equal(probs, expected.probs)


def test_exported_module_loads_without_pdblib(tmp_path):
    defense, x = _defense("trace", "onehot_random")
    export_torchscript(defense, tmp_path / "pdb.pt")
    torch.save({"x": x, "probs": defense.answer(x).probs}, tmp_path / "expected.pt")
    script = textwrap.dedent("""
        import importlib.abc, sys

        class BlockPdblib(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "pdblib" or name.startswith("pdblib."):
                    raise ImportError("pdblib must not be imported when loading the module")
                return None

        sys.meta_path.insert(0, BlockPdblib())
        import torch

        module = torch.jit.load("pdb.pt")
        expected = torch.load("expected.pt")
        assert torch.equal(module(expected["x"]), expected["probs"]), "answers differ"
        assert not any(name.startswith("pdblib") for name in sys.modules), "pdblib was imported"
        print("loaded without pdblib")
    """)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "loaded without pdblib" in result.stdout


def test_threshold_buffer_controls_flips():
    defense, x = _defense("script", "onehot_second")
    module = build_deployed_module(defense)
    module.threshold.fill_(1e9)
    _, flipped = module.answer(x)
    assert not flipped.any()


def test_module_rejects_out_of_range_queries():
    defense, x = _defense("script", "swap_top2")
    module = build_deployed_module(defense)
    bad = x.clone()
    bad[0, 0, 0, 0] = 2.0
    with pytest.raises(torch.jit.Error, match="outside"):
        module(bad)
    with pytest.raises(torch.jit.Error, match="wrong"):
        module(torch.rand(2, 1, 9, 9))


class _ShapeDependentNetwork(nn.Module):
    """Negates its logits for batches of more than one input; tracing with one input hides that."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(64, K + 1)

    def forward(self, x):
        z = self.linear(x.flatten(1))
        if x.shape[0] > 1:
            return -z
        return z


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_export_detects_wrong_trace():
    x, _ = make_blobs(64, seed=22)
    defense = PDBDefense(_ShapeDependentNetwork().eval(), K, threshold=0.0, input_shape=IMAGE_SHAPE)
    with pytest.raises(RuntimeError, match="disagrees with PDBDefense"):
        build_deployed_module(defense, network_export="trace", check_batch=x)


def test_export_rejects_bad_arguments(tmp_path):
    defense, _ = _defense("script", "swap_top2")
    with pytest.raises(InputError, match="network_export"):
        export_torchscript(defense, tmp_path / "pdb.pt", network_export="compile")
    with pytest.raises(InputError, match="PDBDefense"):
        export_torchscript(object(), tmp_path / "pdb.pt")
    assert not (tmp_path / "pdb.pt").exists()


def test_load_missing_module_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_torchscript(tmp_path / "missing.pt")


def test_load_torchscript_returns_eval_module(tmp_path):
    defense, x = _defense("script", "onehot_random")
    module = load_torchscript(export_torchscript(defense, tmp_path / "pdb.pt"))
    assert not module.training
    assert torch.equal(module(x), defense.answer(x).probs)


@pytest.mark.parametrize("flip_form", FLIP_FORMS)
def test_onnx_export_matches_defense(tmp_path, flip_form):
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    defense, x = _defense("script", flip_form)
    path = export_onnx(defense, tmp_path / "pdb.onnx")
    onnx.checker.check_model(str(path))
    (probs,) = ReferenceEvaluator(str(path)).run(None, {"x": x.numpy()})
    expected = defense.answer(x)
    assert expected.flipped.any()
    assert torch.allclose(torch.from_numpy(probs), expected.probs, atol=1e-6, rtol=0)


def test_export_rejects_unkeyed_flips(tmp_path):
    defense, _ = _defense("script", "onehot_random")
    defense.deterministic = False
    with pytest.raises(InputError, match="deterministic"):
        export_torchscript(defense, tmp_path / "pdb.pt")
