import pytest
import torch
from torch import nn

from pdblib.core.head import extend_head
from pdblib.models import build_model
from pdblib.utils import InputError, make_generator
from tests.conftest import K, make_blobs, make_mlp


def test_extended_head_reproduces_logits():
    model = make_mlp().eval()
    x, _ = make_blobs(20)
    extended = extend_head(model, generator=make_generator(0)).eval()
    with torch.no_grad():
        original = model(x)
        new = extended(x)
    assert new.shape == (20, K + 1)
    assert torch.equal(new[:, :K], original)


def test_extension_leaves_original_untouched():
    model = make_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    extended = extend_head(model, generator=make_generator(0))
    assert model.head.out_features == K
    assert extended.head.out_features == K + 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_small_cnn_extends():
    model = build_model("small_cnn_narrow", 10).eval()
    x = torch.rand(3, 1, 28, 28)
    extended = extend_head(model, generator=make_generator(1)).eval()
    with torch.no_grad():
        assert torch.equal(extended(x)[:, :10], model(x))


def test_model_without_head_rejected():
    with pytest.raises(InputError, match="head"):
        extend_head(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)))
