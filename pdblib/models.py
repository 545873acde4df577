"""Model registry. Every classifier exposes ``features(x) -> (N, d)`` and a final ``head``.

The split into a feature extractor and one ``nn.Linear`` head is the contract that
:func:`pdblib.core.head.extend_head` relies on to add the transition class.

None of the models uses batch normalization: with batch statistics, the gradient of the
summed loss with respect to one input mixes in the other samples of the batch, so the
per-sample input gradient of the PDB penalty would no longer be exact.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from pdblib.utils import InputError, check_choice


class Classifier(nn.Module):
    """Base class: ``forward(x) = head(features(x))``; subclasses define both.

    ``head`` is an ``nn.Linear`` attribute set by each subclass. It is not declared as a class
    annotation because TorchScript cannot resolve string annotations, and the deployed PDB
    module scripts the network.
    """

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def num_outputs(self) -> int:
        """Number of logits, ``K`` or ``K+1`` after :func:`extend_head`."""
        return self.head.out_features


class SmallCNN(Classifier):
    """Two 5x5 convolutions with max pooling and a 128-unit hidden layer, for 1x28x28 inputs.

    About 0.42M parameters with ``width=32``. Trained with Adam for 8 epochs on 50,000
    Fashion-MNIST images it reaches about 91% test accuracy (see the victim notebook's
    report for the measured value of a run).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32,
                 hidden: int = 128, dropout: float = 0.25):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MLP(Classifier):
    """Small multilayer perceptron; the tests use it on synthetic data."""

    def __init__(self, num_classes: int = 10, in_features: int = 784, hidden: int = 64,
                 activation: str = "relu"):
        super().__init__()
        act: nn.Module = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "softplus": nn.Softplus()}[activation]
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), act)
        self.head = nn.Linear(hidden, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


MODELS: dict[str, Callable[..., Classifier]] = {
    "small_cnn": SmallCNN,
    "small_cnn_narrow": lambda num_classes=10, **kw: SmallCNN(num_classes, width=16, hidden=64, **kw),
    "mlp": MLP,
}


def build_model(name: str, num_classes: int = 10, **kwargs) -> Classifier:
    """Build a registered model by name.

    Raises
    ------
    InputError
        On an unknown name (the message lists the registered ones) or ``num_classes < 2``.
    """
    check_choice(name, MODELS, what="model")
    if num_classes < 2:
        raise InputError(f"num_classes must be at least 2, got {num_classes}")
    return MODELS[name](num_classes=num_classes, **kwargs)
