"""The LightningModule that trains any zoo model as a classifier, and its callbacks.

Lightning is the training engine: it brings checkpoints, multi-process training and
precision options, so medsight only describes what is specific to classification.
"""

from __future__ import annotations

import time

import lightning as L
import torch
from torch import nn

from medsight.config import TrainConfig
from medsight.fsutil import atomic_write_text
from medsight.progress import Progress, interactive, log_event


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The recipe's optimiser, with Keras' epsilon so the tutorials' settings carry over."""
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-7)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, eps=1e-7)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.9)


class Classifier(L.LightningModule):
    """Cross-entropy on logits (the tutorials' binary cross-entropy on a softmax is not used)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        super().__init__()
        self.model, self.cfg = model.to(memory_format=torch.channels_last), cfg
        self.loss = nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images.contiguous(memory_format=torch.channels_last))
        loss = self.loss(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        size = len(labels)
        self.log(f"{stage}_loss", loss, on_step=False, on_epoch=True, batch_size=size)
        self.log(f"{stage}_accuracy", accuracy, on_step=False, on_epoch=True, batch_size=size)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.model.parameters(), self.cfg)


HISTORY_COLUMNS = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds"]


class HistoryAndProgress(L.Callback):
    """Writes ``history.csv`` after every epoch and reports progress (bar or JSON lines)."""

    def __init__(self, history_file):
        self.history_file = history_file
        self.rows: list[dict[str, float]] = []
        self._bar: Progress | None = None
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        if interactive():
            total = trainer.num_training_batches
            self._bar = Progress(total, f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._bar is not None:
            self._bar.update(1, loss=f"{float(outputs['loss']):.4f}")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch + 1}
        for key in HISTORY_COLUMNS[1:-1]:
            row[key] = round(float(metrics[key]), 6) if key in metrics else float("nan")
        row["seconds"] = round(time.monotonic() - self._start, 2)
        self.rows.append(row)
        lines = [",".join(HISTORY_COLUMNS)]
        lines += [",".join(str(r[c]) for c in HISTORY_COLUMNS) for r in self.rows]
        atomic_write_text(self.history_file, "\n".join(lines) + "\n")
        if interactive():
            print(" ".join(f"{k}={v}" for k, v in row.items()), flush=True)
        else:
            log_event("epoch", **row)
