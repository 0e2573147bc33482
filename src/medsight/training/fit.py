"""One training run, start to finish: data -> splits -> decode -> fit -> evaluate -> bundle.

Everything about the run lands in its run directory (see README § Run directory). A run killed
at any moment continues with ``resume=True`` from its last checkpoint and ends as an
uninterrupted run would have (same seed, same data, same draws).
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
from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from medsight.config import Recipe, load_recipe, save_recipe
from medsight.data.augment import BatchTransform
from medsight.data.dataset import ArrayDataset, EpochSampler
from medsight.errors import MedsightError
from medsight.fsutil import atomic_write_bytes
from medsight.models.zoo import create_model
from medsight.serving.bundle import BundleSpec
from medsight.training.module import Classifier, FreezeSchedule, HistoryAndProgress
from medsight.training.outputs import write_run_outputs
from medsight.training.prepare import (
    Prepared,
    crop_to_lungs,
    prepare,
    prepare_run_dir,
    reload_prepared,
)

log = logging.getLogger(__name__)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no GPU/TPU/tips chatter
warnings.filterwarnings("ignore", message=".*LeafSpec.*")


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


@dataclass(frozen=True)
class InputPipeline:
    """How uint8 pixels become the model's input: what the starting weights expect, else the
    recipe's choice. It goes into the bundle, so serving prepares images the same way."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    exposure: str


def build_model(recipe: Recipe, num_classes: int) -> tuple[torch.nn.Module, InputPipeline]:
    """The recipe's model, with its pretrained weights, and the input pipeline that goes with
    them."""
    cfg, pre = recipe.data, recipe.preprocess
    model = create_model(
        recipe.model.name, num_classes, cfg.channels, cfg.image_size, **recipe.model.kwargs
    )
    pipeline = InputPipeline(tuple(pre.mean), tuple(pre.std), pre.exposure)
    if recipe.model.pretrained:
        from medsight.models.pretrained import load_pretrained

        info = load_pretrained(model, recipe.model.name, recipe.model.pretrained)
        exposure = info.exposure or pre.exposure
        if exposure != pre.exposure:
            log.warning(
                "model.pretrained=%s was trained with preprocess.exposure=%s: fine-tuning "
                "with the same (the recipe says %s)",
                recipe.model.pretrained,
                exposure,
                pre.exposure,
            )
        pipeline = InputPipeline(info.mean, info.std, exposure)  # the weights' own
    return model, pipeline


def _loaders(recipe: Recipe, data: Prepared, pipeline: InputPipeline) -> dict[str, DataLoader]:
    cfg, tcfg = recipe.data, recipe.train
    labels, split = data.table.labels, data.split
    inputs = (cfg.channels, pipeline.mean, pipeline.std, pipeline.exposure)
    augment = BatchTransform(*inputs, recipe.augment)
    normalize = BatchTransform(*inputs)
    workers = {"num_workers": tcfg.num_workers, "persistent_workers": tcfg.num_workers > 0}
    is_train = split == "train"
    sampler = EpochSampler(labels[is_train], tcfg.seed, tcfg.class_balance == "sampler")
    return {
        "train": DataLoader(
            ArrayDataset(data.pixels[is_train], labels[is_train], tcfg.seed),
            batch_size=tcfg.batch_size,
            sampler=sampler,
            collate_fn=augment,
            **workers,
        ),
        "val": DataLoader(
            ArrayDataset(data.pixels[split == "val"], labels[split == "val"]),
            batch_size=tcfg.batch_size,
            collate_fn=normalize,
            **workers,
        ),
    }


def _class_weights(recipe: Recipe, data: Prepared) -> torch.Tensor | None:
    if recipe.train.class_balance != "weights":
        return None
    counts = np.bincount(
        data.table.labels[data.split == "train"], minlength=len(data.table.class_names)
    )
    weights = counts.sum() / np.maximum(counts, 1) / len(counts)
    return torch.tensor(weights, dtype=torch.float32)


def train(
    recipe: Recipe, data: str | Path, out: str | Path, overwrite: bool = False, devices: int = 1
) -> Path:
    """Train ``recipe`` on ``data`` and write the complete run directory ``out``."""
    out = Path(out)
    is_zero = rank_zero_only.rank == 0
    if is_zero:
        prepare_run_dir(out, overwrite)
        save_recipe(recipe, out / "config.yaml")
    L.seed_everything(recipe.train.seed, workers=True, verbose=False)
    prepared = prepare(recipe, data, out, write=is_zero)
    prepared = crop_to_lungs(recipe, prepared, data, out, reuse=not is_zero)
    return fit_prepared(recipe, prepared, out, devices)


def resume(out: str | Path, devices: int = 1) -> Path:
    """Continue a killed or interrupted run from ``out/checkpoints/last.ckpt``."""
    out = Path(out)
    last = out / "checkpoints" / "last.ckpt"
    for needed in (out / "config.yaml", out / "run.json", out / "splits.csv", last):
        if not needed.is_file():
            raise MedsightError(
                f"cannot resume {out}: {needed.name} is missing (a run can be "
                "resumed once it has finished its first epoch)"
            )
    recipe = load_recipe(str(out / "config.yaml"))
    L.seed_everything(recipe.train.seed, workers=True, verbose=False)
    prepared = crop_to_lungs(recipe, reload_prepared(recipe, out), "", out, reuse=True)
    return fit_prepared(recipe, prepared, out, devices, resume=True)


def fit_prepared(
    recipe: Recipe, data: Prepared, out: Path, devices: int = 1, resume: bool = False
) -> Path:
    """Fit on prepared data and write the run outputs (rank 0 only)."""
    tcfg = recipe.train
    model, pipeline = build_model(recipe, len(data.table.class_names))
    module = Classifier(model, tcfg, _class_weights(recipe, data))
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
    callbacks: list[L.Callback] = [checkpoint, last, HistoryAndProgress(out / "history.csv")]
    if tcfg.freeze_epochs:
        callbacks.append(FreezeSchedule(tcfg.freeze_epochs, tcfg.unfreeze))
    if tcfg.ema:
        callbacks.append(L.pytorch.callbacks.EMAWeightAveraging(decay=tcfg.ema))
    if tcfg.early_stopping:
        callbacks.append(
            L.pytorch.callbacks.EarlyStopping(
                tcfg.monitor, patience=tcfg.early_stopping, mode=checkpoint.mode
            )
        )
    trainer = L.Trainer(
        max_epochs=tcfg.epochs,
        accelerator="cpu",
        devices=devices,
        num_nodes=num_nodes(devices),
        strategy="ddp" if devices > 1 or num_nodes(devices) > 1 else "auto",
        use_distributed_sampler=False,
        precision="bf16-mixed" if tcfg.precision == "bf16" else "32-true",
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=out,
    )
    loaders = _loaders(recipe, data, pipeline)
    started = time.monotonic()
    trainer.fit(
        module,
        loaders["train"],
        loaders["val"],
        ckpt_path=out / "checkpoints" / "last.ckpt" if resume else None,
    )
    if not trainer.is_global_zero:
        return out
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])
    cfg = recipe.data
    spec = BundleSpec(
        model_name=recipe.model.name,
        model_kwargs=recipe.model.kwargs,
        class_names=data.table.class_names,
        positive_class=data.positive_class,
        image_size=cfg.image_size,
        channels=cfg.channels,
        mean=pipeline.mean,
        std=pipeline.std,
        tta=recipe.preprocess.tta,
        exposure=pipeline.exposure,
        lung_crop=data.lungs.spec if data.lungs else None,
        recipe=recipe.name,
    )
    facts = {
        "best_epoch": int(best.get("epoch", 0)) + 1,
        "epochs_run": trainer.current_epoch,
        "train_seconds": round(time.monotonic() - started, 1),
        "resumed": resume,
        "pretrained": recipe.model.pretrained,
        "allocator": os.environ.get("MEDSIGHT_ALLOCATOR_ACTIVE", "system malloc"),
        "world_size": trainer.world_size,
    }
    write_run_outputs(out, recipe, data, module.model, spec, facts)
    log.info("run written to %s", out)
    return out
