"""One training run, start to finish: data -> splits -> decode -> fit -> evaluate -> bundle.

Everything about the run lands in its run directory (see README § Run directory).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from medsight.config import Recipe, save_recipe
from medsight.data.dataset import ArrayDataset, decode_images
from medsight.data.io import content_sha256
from medsight.data.sources import ImageTable, load_table
from medsight.data.splits import assign_splits, check_leakage
from medsight.data.transforms import eval_transform, train_transform
from medsight.errors import ConfigError, DataError, MedsightError
from medsight.evaluate.metrics import classification_metrics
from medsight.evaluate.plots import plot_confusion, plot_curves, plot_prediction_grid
from medsight.evaluate.report import write_run_report
from medsight.fsutil import atomic_write_text
from medsight.models.zoo import create_model
from medsight.progress import progress
from medsight.serve.bundle import Bundle, BundleSpec, save_bundle
from medsight.train.module import Classifier, HistoryAndProgress

log = logging.getLogger(__name__)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no GPU/TPU/tips chatter
warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=Warning)
NEGATIVE_NAMES = {"normal", "uninfected", "healthy", "negative", "no finding", "benign", "0"}


def positive_class(class_names: list[str], configured: str | None) -> str | None:
    """The disease class of a binary task: the recipe's, else the one that is not 'normal'."""
    if configured is not None:
        if configured in class_names:
            return configured
        if len(class_names) == 2:
            raise ConfigError(
                f"positive class {configured!r} is not among the data's classes "
                f"{class_names}; set data.positive_class=<one of them>"
            )
        return None
    if len(class_names) != 2:
        return None
    negatives = [c for c in class_names if c.lower() in NEGATIVE_NAMES]
    return (
        next(c for c in class_names if c not in negatives)
        if len(negatives) == 1
        else class_names[1]
    )


def prepare_run_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write into a folder that already holds something, unless asked to."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MedsightError(
                f"{out} is not empty; choose a new --out folder or pass "
                "--overwrite to replace a previous run there"
            )
        if not (out / "config.yaml").is_file():
            raise MedsightError(
                f"{out} is not empty and is not a medsight run directory; refusing to overwrite it"
            )
    out.mkdir(parents=True, exist_ok=True)


def prepare_table(recipe: Recipe, data: str | Path) -> tuple[ImageTable, str | None]:
    """Load, subsample (data.limit), hash and split the data; check for leakage."""
    table = load_table(data)
    cfg = recipe.data
    if cfg.limit and cfg.limit < len(table):
        rows = table.frame.sample(n=cfg.limit, random_state=recipe.train.seed)
        table = ImageTable(
            rows.sort_index().reset_index(drop=True), table.class_names, table.source, table.skipped
        )
    table.frame["sha256"] = [
        content_sha256(p) for p in progress(list(table.frame["path"]), "hash", unit="img")
    ]
    given = table.has_splits
    table = assign_splits(
        table, cfg.val_fraction, cfg.test_fraction, recipe.train.seed, by=cfg.split_by
    )
    warning = None
    if cfg.split_by == "image":
        warning = (
            "split by IMAGE, as the tutorial did: one patient's images can be in train "
            "and test, so held-out figures are optimistic"
        )
    report = check_leakage(table.frame, strict=not given and cfg.split_by == "patient")
    table.frame.attrs["leakage"] = report.summary()
    return table, warning


def train(recipe: Recipe, data: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Train ``recipe`` on ``data`` and write the complete run directory ``out``."""
    out = Path(out)
    prepare_run_dir(out, overwrite)
    cfg, tcfg = recipe.data, recipe.train
    L.seed_everything(tcfg.seed, workers=True, verbose=False)
    save_recipe(recipe, out / "config.yaml")
    table, split_warning = prepare_table(recipe, data)
    pos_name = positive_class(table.class_names, cfg.positive_class)

    pixels, failures = decode_images(list(table.frame["path"]), cfg.image_size, cfg.channels)
    skipped = table.skipped + failures
    bad = {p for p, _ in failures}
    keep = ~table.frame["path"].isin(bad).to_numpy()
    table, pixels = table.select(keep), pixels[keep]
    pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(out / "skipped.csv", index=False)
    table.frame[["path", "label", "patient", "split", "sha256"]].to_csv(
        out / "splits.csv", index=False
    )
    labels, split = table.labels, table.frame["split"].to_numpy()
    if not (split == "train").any() or not (split == "val").any():
        raise DataError(
            "need images in both the train and val splits; add data or adjust "
            "data.val_fraction / data.test_fraction"
        )

    mean, std = recipe.preprocess.mean, recipe.preprocess.std
    train_tf = train_transform(recipe.augment, cfg.image_size, cfg.channels, mean, std)
    eval_tf = eval_transform(cfg.channels, mean, std)
    loaders = {
        name: DataLoader(
            ArrayDataset(pixels[split == name], labels[split == name], tf),
            batch_size=tcfg.batch_size,
            shuffle=name == "train",
            num_workers=tcfg.num_workers,
            persistent_workers=tcfg.num_workers > 0,
        )
        for name, tf in (("train", train_tf), ("val", eval_tf))
    }
    model = create_model(
        recipe.model.name,
        len(table.class_names),
        cfg.channels,
        cfg.image_size,
        **recipe.model.kwargs,
    )
    module = Classifier(model, tcfg)
    mode = "min" if tcfg.monitor == "val_loss" else "max"
    checkpoint = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints",
        filename="best",
        monitor=tcfg.monitor,
        mode=mode,
        save_last=True,
        enable_version_counter=False,
    )
    history = HistoryAndProgress(out / "history.csv")
    trainer = L.Trainer(
        max_epochs=tcfg.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[checkpoint, history],
        default_root_dir=out,
    )
    started = time.monotonic()
    trainer.fit(module, loaders["train"], loaders["val"])
    seconds = time.monotonic() - started
    best = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)
    module.load_state_dict(best["state_dict"])

    spec = BundleSpec(
        model_name=recipe.model.name,
        model_kwargs=recipe.model.kwargs,
        class_names=table.class_names,
        positive_class=pos_name,
        image_size=cfg.image_size,
        channels=cfg.channels,
        mean=mean,
        std=std,
        recipe=recipe.name,
    )
    bundle = Bundle(module.model.eval(), spec)
    results: dict[str, dict] = {}
    probs_by_split: dict[str, np.ndarray] = {}
    for name in ("val", "test"):
        if (split == name).any():
            probs_by_split[name] = bundle.predict_proba(pixels[split == name])
            results[name] = classification_metrics(
                labels[split == name], probs_by_split[name], table.class_names, spec.positive_index
            )
    held_out = "test" if "test" in results else "val"
    metrics = {
        **results[held_out],
        "split": held_out,
        "val": results["val"],
        "best_epoch": int(best.get("epoch", 0)) + 1,
        "train_seconds": round(seconds, 1),
        "split_by": cfg.split_by,
        "skipped": len(skipped),
        "published": recipe.published.model_dump() if recipe.published else None,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2))

    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    held = split == held_out
    plot_curves(pd.read_csv(out / "history.csv"), plots / "curves.png")
    plot_confusion(
        np.array(results[held_out]["confusion_matrix"]),
        table.class_names,
        plots / "confusion_matrix.png",
        title=f"{held_out} split",
    )
    plot_prediction_grid(
        pixels[held],
        labels[held],
        probs_by_split[held_out],
        table.class_names,
        spec.positive_index,
        spec.threshold,
        plots / "predictions.png",
    )
    spec = spec.model_copy(
        update={
            "metrics": {
                k: metrics.get(k)
                for k in ("split", "n", "accuracy", "sensitivity", "specificity", "roc_auc")
            }
        }
    )
    save_bundle(out / "bundle", module.model, spec)
    write_run_report(out, recipe, table, metrics, skipped, split_warning)
    log.info("run written to %s (pid %s)", out, os.getpid())
    return out
