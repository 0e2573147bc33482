"""Fitting prepared data with Lightning, and what the fit needs (:func:`plan_fit`).

A fit killed at any moment continues from its last checkpoint (``resume=True``) and ends as an
uninterrupted fit would have: the same seed, data and draws (see :mod:`medsight.data.dataset`).
"""

from __future__ import annotations

import io
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from medsight.bundle import BundleSpec, InputPipeline
from medsight.config import Recipe
from medsight.data.augment import BatchTransform
from medsight.data.dataset import ArrayDataset, EpochLoader
from medsight.data.multilabel import MultiLabelRule
from medsight.data.store import StoreDecode
from medsight.errors import ConfigError
from medsight.fsutil import atomic_write_bytes
from medsight.training.device import Device, resolve_device
from medsight.training.model import build_model
from medsight.training.module import Classifier, FreezeSchedule, HistoryAndProgress
from medsight.training.outputs import write_run_outputs
from medsight.training.prepare import Prepared, settle, train_sampler
from medsight.training.tracking import Tracking

log = logging.getLogger(__name__)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no GPU/TPU/tips chatter
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


class FirstEpochStopped(Exception):
    """The first epoch, trained while its images were decoded, met one that cannot be read (or
    decoding failed): nothing of it may be kept, since a run never trains on such a file."""


class DecodeWatch(L.Callback):
    """Watches the decoding that goes on while the first epoch trains: stops the fit as soon as
    a file turns out unreadable, and keeps the first checkpoint waiting until every image is in."""

    def __init__(self, decoding: StoreDecode):
        self.decoding = decoding

    def _check(self) -> None:
        if self.decoding.error is not None:
            raise FirstEpochStopped(f"decoding stopped: {self.decoding.error}")
        if failures := list(self.decoding.failures):
            path, reason = failures[0]
            raise FirstEpochStopped(f"{path}: {reason}")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._check()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.decoding.wait()  # checkpoints are written after this hook
        self._check()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, FirstEpochStopped):  # the run stops: so does decoding
            self.decoding.cancel()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints are written to a temporary file and renamed: a kill never leaves half."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(Path(path), buffer.getvalue())


def num_nodes(devices: int) -> int:
    """Nodes of a multi-node run, from SLURM or torchrun's environment (1 on one machine)."""
    if "SLURM_NNODES" in os.environ and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_NNODES"])
    if "WORLD_SIZE" in os.environ and "LOCAL_WORLD_SIZE" in os.environ:  # torchrun
        return max(1, int(os.environ["WORLD_SIZE"]) // int(os.environ["LOCAL_WORLD_SIZE"]))
    return 1


@dataclass
class FitPlan:
    """What fitting a recipe on prepared data takes: the LightningModule (model and input
    pipeline), the data loaders, the schedule's callbacks, and the spec of the bundle the model
    becomes, and the device it runs on. The benchmarks time training through it too."""

    module: Classifier
    train: EpochLoader
    val: DataLoader
    callbacks: list[L.Callback]
    spec: BundleSpec
    device: Device


def class_weights(recipe: Recipe, data: Prepared) -> torch.Tensor | None:
    """Loss weights inversely proportional to the training split's class counts
    (``train.class_balance=weights``), else None."""
    if recipe.train.class_balance != "weights":
        return None
    if data.table.multi_label:  # BCE's pos_weight: each label's negatives per positive
        targets = data.table.targets[data.split == "train"]
        positives, negatives = (targets == 1).sum(axis=0), (targets == 0).sum(axis=0)
        return torch.tensor(negatives / np.maximum(positives, 1), dtype=torch.float32)
    counts = np.bincount(
        data.table.labels[data.split == "train"], minlength=len(data.table.class_names)
    )
    weights = counts.sum() / np.maximum(counts, 1) / len(counts)
    return torch.tensor(weights, dtype=torch.float32)


def plan_fit(recipe: Recipe, data: Prepared) -> FitPlan:
    """The model, loaders and callbacks for fitting ``recipe`` on ``data``."""
    tcfg = recipe.train
    device = resolve_device(tcfg)
    lungs = data.lungs.spec if data.lungs else None
    multi = data.table.multi_label
    if multi and tcfg.class_balance == "sampler":
        raise ConfigError(
            "train.class_balance=sampler draws images by class, and a multi-label image has "
            "several: use train.class_balance=weights (a positive weight per label) or none"
        )
    rule = (MultiLabelRule.of(recipe.data) or MultiLabelRule()) if multi else None
    if rule is not None:
        rule = rule.model_copy(update={"labels": list(data.table.class_names)})
    model, spec = build_model(recipe, data.table.class_names, data.positive_class, lungs, rule)
    # the pixels are cropped already: the rest of the bundle's pipeline normalises batches;
    # on a GPU augmentation runs there too, on the uint8 batch the loader copied
    on_gpu = device.on_gpu
    pipeline = InputPipeline.from_spec(spec)
    augment = recipe.augment if on_gpu else None
    labels = data.table.targets if multi else data.table.labels
    split = data.split
    module = Classifier(
        model,
        tcfg,
        class_weights(recipe, data),
        pipeline,
        augment,
        train_images=int((split == "train").sum()),
        multi_label=multi,
    )
    workers = {
        "num_workers": device.workers,
        "persistent_workers": device.workers > 0,
        "pin_memory": on_gpu,
    }
    is_train, is_val = split == "train", split == "val"
    train = EpochLoader(
        ArrayDataset(data.pixels.rows(is_train), labels[is_train], tcfg.seed),
        batch_size=tcfg.batch_size,
        sampler=train_sampler(recipe, data.table),
        collate_fn=BatchTransform(recipe.augment, on_device=on_gpu),
        **workers,
    )
    # validation batches are only read and stacked (no augmentation): the main process does
    # that at disk speed, and two more worker processes alive beside the training's cost memory
    val = DataLoader(
        ArrayDataset(data.pixels.rows(is_val), labels[is_val]),
        batch_size=tcfg.batch_size,
        collate_fn=BatchTransform(),
        pin_memory=on_gpu,
    )
    callbacks: list[L.Callback] = []
    if tcfg.freeze_epochs:
        callbacks.append(FreezeSchedule(tcfg.freeze_epochs, tcfg.unfreeze))
    if tcfg.ema:
        callbacks.append(L.pytorch.callbacks.EMAWeightAveraging(decay=tcfg.ema))
    return FitPlan(module, train, val, callbacks, spec, device)


def fit(recipe: Recipe, data: Prepared, out: Path, devices: int = 1, resume: bool = False) -> Path:
    """Fit on prepared data and write the run outputs (rank 0 only)."""
    tcfg = recipe.train
    plan = plan_fit(recipe, data)
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor=tcfg.monitor,
        mode="min" if tcfg.monitor == "val_loss" else "max",
        enable_version_counter=False,
    )
    # its own callback: with save_last, Lightning rewrites last.ckpt only in epochs that improve
    # the best one, and a resumed run would redo the epochs after it
    last = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", filename="last", enable_version_counter=False
    )
    tracking = Tracking(recipe, out, resume)
    history = HistoryAndProgress(out / "history.csv")
    callbacks = [checkpoint, last, history, tracking, *plan.callbacks]
    if data.decoding is not None:  # the first epoch trains while its images are decoded
        callbacks.insert(0, DecodeWatch(data.decoding))
    if tcfg.early_stopping:
        callbacks.append(
            L.pytorch.callbacks.EarlyStopping(
                tcfg.monitor, patience=tcfg.early_stopping, mode=checkpoint.mode
            )
        )
    nodes = num_nodes(devices)
    trainer = L.Trainer(
        max_epochs=tcfg.epochs,
        accelerator=plan.device.accelerator,
        devices=devices,
        num_nodes=nodes,
        strategy="ddp" if devices > 1 or nodes > 1 else "auto",
        use_distributed_sampler=False,
        precision=plan.device.precision,
        plugins=[AtomicCheckpointIO()],
        logger=tracking.loggers or False,
        log_every_n_steps=1,  # no step metrics; silences Lightning's small-epoch warning
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=out,
    )
    # the epoch Lightning itself gives the sampler, known before the first iterator is made
    plan.train.epoch_of = lambda: trainer.fit_loop.epoch_progress.current.processed
    started = time.monotonic()
    try:
        trainer.fit(
            plan.module,
            plan.train,
            plan.val,
            ckpt_path=out / "checkpoints" / "last.ckpt" if resume else None,
        )
    except FirstEpochStopped:
        tracking.discard()  # the fit starts again: nothing of this one is kept
        raise
    overlapped, data = data.decoding is not None, settle(data)
    if not trainer.is_global_zero:
        return out
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    plan.module.load_state_dict(best["state_dict"])
    facts = {
        "best_epoch": int(best.get("epoch", 0)) + 1,
        "epochs_run": trainer.current_epoch,
        "train_seconds": round(time.monotonic() - started, 1),
        "resumed": resume,
        "decoded_during_first_epoch": overlapped,
        "pretrained": recipe.model.pretrained,
        "allocator": os.environ.get("MEDSIGHT_ALLOCATOR_ACTIVE", "system malloc"),
        "world_size": trainer.world_size,
        **plan.device.facts(),
    }
    write_run_outputs(out, recipe, data, plan.module.model, plan.spec, facts)
    tracking.finish(trainer.global_step)
    log.info("run written to %s", out)
    return out
