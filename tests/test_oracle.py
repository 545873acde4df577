import pytest
import torch

from pdblib.attacks.oracle import BudgetExhaustedError, QueryOracle
from pdblib.core.head import extend_head
from pdblib.core.inference import PDBDefense
from pdblib.defenses import Undefended
from pdblib.utils import InputError, make_generator
from tests.conftest import IMAGE_SHAPE, K, make_blobs, make_mlp


def _oracle(budget=100, output="probs"):
    return QueryOracle(Undefended(make_mlp(), K, input_shape=IMAGE_SHAPE), budget, output=output)


def test_oracle_counts_every_query():
    oracle = _oracle(100)
    x, _ = make_blobs(30)
    oracle.query(x[:10])
    oracle.query(x[10:30])
    assert oracle.used == 30
    assert oracle.remaining == 70
    assert sum(len(a) for a in oracle.log.answers) == 30


def test_oracle_stops_at_budget():
    oracle = _oracle(25)
    x, _ = make_blobs(40)
    oracle.query(x[:20])
    with pytest.raises(BudgetExhaustedError, match="budget exhausted: 20 of 25"):
        oracle.query(x[20:30])
    assert oracle.used == 20
    oracle.query(x[20:25])
    assert oracle.remaining == 0
    with pytest.raises(BudgetExhaustedError):
        oracle.query(x[25:26])


def test_oracle_output_forms():
    x, _ = make_blobs(12)
    probs = _oracle(output="probs").query(x)
    labels = _oracle(output="labels").query(x)
    assert probs.shape == (12, K)
    assert labels.shape == (12,)
    assert labels.dtype == torch.int64
    assert torch.equal(probs.argmax(dim=1), labels)


@pytest.mark.parametrize("bad, message", [
    (torch.rand(5, 8, 8), "shape"),
    (torch.rand(5, 3, 8, 8), "channels"),
    (torch.rand(5, 1, 9, 9), "image size"),
    ((torch.rand(5, 1, 8, 8) * 255).to(torch.uint8), "dtype"),
    (torch.full((5, 1, 8, 8), float("nan")), "NaN"),
    (torch.rand(5, 1, 8, 8) * 2, r"\[0, 1\]"),
    (torch.rand(0, 1, 8, 8), "empty"),
])
def test_oracle_rejects_bad_batches(bad, message):
    oracle = _oracle()
    with pytest.raises(InputError, match=message):
        oracle.query(bad)
    assert oracle.used == 0


def test_oracle_logs_flips_without_returning_them():
    model = extend_head(make_mlp(), generator=make_generator(0), weight_std=1.0, transition_bias=100.0).eval()
    oracle = QueryOracle(PDBDefense(model, K, input_shape=IMAGE_SHAPE), 50)
    x, _ = make_blobs(20)
    answer = oracle.query(x)
    assert answer.shape == (20, K)
    assert oracle.log.flip_fraction() == 1.0


@pytest.mark.parametrize("budget", [0, -5, 2.5])
def test_oracle_rejects_bad_budget(budget):
    with pytest.raises(InputError, match="budget"):
        _oracle(budget)


def test_oracle_rejects_unknown_output():
    with pytest.raises(InputError, match="unknown oracle output"):
        _oracle(output="logits")
