"""Training and evaluation loops on in-memory tensors.

Datasets are tensors, not DataLoaders: per-item Python transforms would cost a large share of
an epoch on a 2-core CPU. Shuffling uses an explicit seeded generator, so the same seed gives
the same run on the same hardware and torch build.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from pdblib.utils import InputError, make_generator, resolve_device

logger = logging.getLogger(__name__)

# loss_fn(model, x_batch, y_batch) -> (loss, logits, {"name": float, ...})
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, dict]]


def cross_entropy_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    """Cross-entropy with hard labels ``(B,)`` or soft labels ``(B, K)``."""
    logits = model(x)
    if y.dim() == 2:
        loss = -(y * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    else:
        loss = F.cross_entropy(logits, y)
    return loss, logits, {}


@dataclass
class TrainConfig:
    """Optimizer settings of one training run.

    Defaults: Adam with lr 1e-3 and batch 128, a common choice for small CNNs on
    Fashion-MNIST; they are knobs of every notebook that trains.
    """

    epochs: int = 8
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    seed: int = 0
    lr_schedule: str = "cosine"

    def __post_init__(self):
        if self.epochs < 1:
            raise InputError(f"epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}")
        if not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose 'adam' or 'sgd'")
        if self.lr_schedule not in ("cosine", "constant"):
            raise InputError(f"unknown lr_schedule {self.lr_schedule!r}; choose 'cosine' or 'constant'")


@dataclass
class History:
    """Per-epoch records of a training run: loss parts, accuracies and seconds."""

    records: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        """Total training time in seconds."""
        return float(sum(r["seconds"] for r in self.records))


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
                loss_fn: LossFn = cross_entropy_loss,
                x_val: torch.Tensor | None = None, y_val: torch.Tensor | None = None,
                device: str | torch.device | None = "cpu", progress: bool = True,
                desc: str = "train") -> History:
    """Train ``model`` in place on tensors ``x`` ``(N, C, H, W)`` and targets ``y``.

    Parameters
    ----------
    y : torch.Tensor
        ``(N,)`` int64 labels, or ``(N, K)`` float soft labels (clone training on posteriors).
    loss_fn : callable
        ``loss_fn(model, xb, yb) -> (loss, logits, parts)``; the PDB retraining passes its
        penalized loss here. ``parts`` values are averaged per epoch into the history.
    x_val, y_val : optional
        Evaluated after each epoch (accuracy over ``model``'s argmax).

    Returns
    -------
    History
        One record per epoch.
    """
    if len(x) != len(y):
        raise InputError(f"x has {len(x)} samples but y has {len(y)}; they must match")
    device = resolve_device(device)
    model.to(device)
    optimizer = _make_optimizer(model, config)
    steps_per_epoch = (len(x) + config.batch_size - 1) // config.batch_size
    scheduler = None
    if config.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    generator = make_generator(config.seed)
    history = History()

    for epoch in range(config.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        totals: dict[str, float] = {"loss": 0.0}
        correct = 0
        seen = 0
        bar = tqdm(range(steps_per_epoch), desc=f"{desc} epoch {epoch + 1}/{config.epochs}",
                   disable=not progress, leave=False, mininterval=5.0)
        for step in bar:
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            xb = x[idx].to(device, non_blocking=True)
            yb = y[idx].to(device, non_blocking=True)
            loss, logits, parts = loss_fn(model, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            batch = len(idx)
            totals["loss"] += float(loss.detach()) * batch
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + float(value) * batch
            hard = yb.argmax(dim=1) if yb.dim() == 2 else yb
            correct += int((logits.detach().argmax(dim=1) == hard).sum())
            seen += batch
            if step % 20 == 0:
                bar.set_postfix(loss=f"{totals['loss'] / seen:.4f}")
        record = {"epoch": epoch + 1, "seconds": time.perf_counter() - start,
                  "train_acc": correct / max(seen, 1)}
        record.update({f"train_{k}": v / max(seen, 1) for k, v in totals.items()})
        if x_val is not None and y_val is not None:
            record["val_acc"] = accuracy(model, x_val, y_val, device=device)
        history.records.append(record)
        logger.info("%s epoch %d/%d: %s", desc, epoch + 1, config.epochs,
                    ", ".join(f"{k}={v:.4f}" for k, v in record.items() if k != "epoch"))
    model.eval()
    return history


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024,
                   device: str | torch.device | None = "cpu") -> torch.Tensor:
    """Return ``model``'s logits for ``x`` as a CPU tensor ``(N, outputs)``, in eval mode."""
    device = resolve_device(device)
    was_training = model.training
    if was_training:
        model.eval()
    if len(x) <= batch_size:  # one chunk: no list and no copy by torch.cat (the per-query latency path)
        logits = model(x.to(device)).float().cpu()
    else:
        logits = torch.cat([model(x[i:i + batch_size].to(device)).float().cpu()
                            for i in range(0, len(x), batch_size)])
    if was_training:
        model.train()
    return logits


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
             device: str | torch.device | None = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in [0, 1]."""
    return float((predict_logits(model, x, device=device).argmax(dim=1) == y).float().mean())
