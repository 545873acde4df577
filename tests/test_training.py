import pytest
import torch

from pdblib.models import MODELS, build_model
from pdblib.training import TrainConfig, accuracy, train_model
from pdblib.utils import InputError, load_checkpoint, save_checkpoint
from tests.conftest import make_mlp


def test_training_learns_blobs(blobs):
    x, y, x_test, y_test = blobs
    model = make_mlp()
    history = train_model(model, x, y, TrainConfig(epochs=10, batch_size=32, lr=1e-2), x_val=x_test,
                          y_val=y_test, progress=False)
    assert len(history.records) == 10
    assert history.records[-1]["val_acc"] > 0.9
    assert accuracy(model, x_test, y_test) > 0.9


def test_training_accepts_soft_labels(blobs):
    x, y, x_test, y_test = blobs
    soft = torch.nn.functional.one_hot(y, 4).float() * 0.9 + 0.025
    model = make_mlp()
    train_model(model, x, soft, TrainConfig(epochs=10, batch_size=32, lr=1e-2), progress=False)
    assert accuracy(model, x_test, y_test) > 0.9


def test_same_seed_same_weights(blobs):
    x, y, _, _ = blobs
    states = []
    for _ in range(2):
        model = make_mlp(seed=1)
        train_model(model, x, y, TrainConfig(epochs=2, batch_size=32, seed=5), progress=False)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key])


def test_checkpoint_round_trip(tmp_path):
    model = make_mlp()
    path = save_checkpoint(tmp_path / "m.pt", {"state_dict": model.state_dict(), "model": "mlp"})
    assert not list(tmp_path.glob(".*tmp"))
    loaded = load_checkpoint(path)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded["state_dict"][key], value)


def test_missing_checkpoint_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_registered_models_output_k_logits(name):
    kwargs = {"in_features": 784} if name == "mlp" else {}
    model = build_model(name, 10, **kwargs)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    assert model.features(torch.rand(2, 1, 28, 28)).shape[1] == model.head.in_features


def test_unknown_model_rejected():
    with pytest.raises(InputError, match="unknown model 'resnet9'"):
        build_model("resnet9")


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"optimizer": "lbfgs"}])
def test_train_config_rejects_bad_values(kwargs):
    with pytest.raises(InputError):
        TrainConfig(**kwargs)


def test_mismatched_lengths_rejected(blobs):
    x, y, _, _ = blobs
    with pytest.raises(InputError, match="must match"):
        train_model(make_mlp(), x, y[:-1], TrainConfig(epochs=1), progress=False)


def test_atomic_writes_use_default_permissions(tmp_path):
    import os
    import stat

    from pdblib.utils import atomic_write_text

    mask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "page.html", "<html></html>")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
