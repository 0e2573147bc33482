"""Data for one run: load, subsample, hash, split, check leakage, decode; or reload on resume.

Everything here is deterministic given the recipe's seed, so every process of a multi-process
run prepares identical data without talking to the others.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.config import Recipe
from medsight.data.dataset import EpochSampler
from medsight.data.io import content_sha256
from medsight.data.labels import LabelRule
from medsight.data.multilabel import LABEL_PREFIX, MultiLabelRule
from medsight.data.patients import PatientRule, patient_coverage, require_patients
from medsight.data.sources import ImageTable
from medsight.data.splits import assign_splits, check_leakage
from medsight.data.store import PixelStore, StoreDecode
from medsight.data.trainable import check_classes, check_split_classes, load_trainable
from medsight.errors import ConfigError, DataError, MedsightError
from medsight.fsutil import atomic_write_text
from medsight.models.lungs import LungCrop
from medsight.progress import Progress
from medsight.threads import each_in_threads

log = logging.getLogger(__name__)
NEGATIVE_NAMES = {"normal", "uninfected", "healthy", "negative", "no finding", "benign", "0"}
SPLIT_COLUMNS = ["path", "label", "patient", "patient_source", "split", "sha256"]


@dataclass
class Prepared:
    """The split table and its decoded pixels (rows aligned; on disk, see
    :mod:`medsight.data.store`), plus what was left out.

    With ``decoding`` the pixels are still being decoded, in the order the first epoch reads
    them: :func:`settle` gives the data once it has ended, without the files found unreadable.
    """

    table: ImageTable
    pixels: PixelStore
    positive_class: str | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    split_warning: str | None = None
    lungs: LungCrop | None = None  # pixels already cropped by it (preprocess.lung_crop)
    decoding: StoreDecode | None = None

    @property
    def split(self) -> np.ndarray:
        return self.table.frame["split"].to_numpy()


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
    if len(negatives) == 1:
        return next(c for c in class_names if c not in negatives)
    return class_names[1]


# What a run writes before its first epoch ends; a folder holding only these (and no checkpoint)
# is a start that failed or was killed: nothing in it can be resumed or is the user's.
STARTED_ONLY = frozenset(
    {"config.yaml", "run.json", "splits.csv", "skipped.csv", "curation.csv", "lungs", "checkpoints"}
)


def unfinished_start(out: Path) -> bool:
    """Whether ``out`` holds only what a run that never finished an epoch wrote."""
    names = {p.name for p in out.iterdir()}
    checkpoints = out / "checkpoints"
    return (
        "config.yaml" in names
        and names <= STARTED_ONLY
        and not (checkpoints.is_dir() and any(checkpoints.iterdir()))
    )


def discard_unfinished_start(out: Path, created: bool) -> None:
    """Remove what a run wrote into ``out`` when it failed before finishing an epoch, so the
    corrected command just works (``created``: the folder itself was made by the run)."""
    if not out.is_dir() or not unfinished_start(out):
        return
    shutil.rmtree(out, ignore_errors=True)
    if not created:  # the user's (empty) folder stays
        out.mkdir(exist_ok=True)


def prepare_run_dir(out: Path, overwrite: bool, inputs: tuple[str | Path, ...] = ()) -> None:
    """Refuse to write into a folder that already holds something, unless asked to; replacing
    an earlier run deletes it, so none of the run's ``inputs`` may lie inside it. A start that
    never finished an epoch (killed, or failed) is replaced without asking."""
    if out.exists() and not out.is_dir():
        raise MedsightError(f"{out} is a file; --out names the folder the run is written to")
    if out.exists() and any(out.iterdir()):
        inside = _inside(inputs, out)
        if unfinished_start(out) and not inside:
            log.info("%s holds a run that never finished an epoch: starting afresh", out)
        elif not overwrite:
            raise MedsightError(
                f"{out} is not empty; choose a new --out folder, pass --resume to continue the "
                "run there, or --overwrite to replace it"
            )
        elif not (out / "config.yaml").is_file():
            raise MedsightError(
                f"{out} is not empty and is not a medsight run directory; refusing to overwrite it"
            )
        elif inside:
            raise MedsightError(
                f"{inside[0]} lies inside {out}, which --overwrite would delete; copy it out "
                "first or choose another --out"
            )
        # nothing of the earlier run may stay: a resume would take its checkpoints for ours
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _inside(inputs: tuple[str | Path, ...], out: Path) -> list[str | Path]:
    return [p for p in inputs if Path(p).expanduser().resolve().is_relative_to(out.resolve())]


def load_or_curate(recipe: Recipe, data: str | Path, out: Path | None) -> ImageTable:
    """The data source, or for ``data.curation`` the curated table (its manifest into ``out``)."""
    cfg = recipe.data
    if not cfg.curation:
        return load_trainable(data, PatientRule.of(cfg), LabelRule.of(cfg), MultiLabelRule.of(cfg))
    from medsight.data.curate import curate_covid, write_manifest
    from medsight.data.download import companion, resolve_data

    data = resolve_data(data)  # absolute paths in splits.csv; a dataset name downloads
    if cfg.curation == "covid-findings":
        from medsight.data.findings import curate_findings

        curation = curate_findings(data)
        if out is not None:
            write_manifest(curation, out / "curation.csv")
        return curation.table.keep_labels(cfg.labels) if cfg.labels else curation.table
    kermany = (
        Path(cfg.kermany).expanduser().resolve()
        if cfg.kermany
        else companion(data, "chest_xray", "kermany")
    )
    curation = curate_covid(
        data, kermany, cfg.curation, seed=recipe.train.seed, other_source=cfg.curation_other_source
    )
    if out is not None:
        write_manifest(curation, out / "curation.csv")
    return curation.table


def hashed_table(recipe: Recipe, data: str | Path, out: Path | None = None) -> ImageTable:
    """Load (or curate) the data, subsample it (data.limit), refuse it when a model cannot
    learn from what is left, and hash every file."""
    table = load_or_curate(recipe, data, out)
    limit = recipe.data.limit
    limited = limit is not None and limit < len(table)
    if limited:
        rows = table.frame.sample(n=limit, random_state=recipe.train.seed)
        table = ImageTable(
            rows.sort_index().reset_index(drop=True), table.class_names, table.source, table.skipped
        )
    check_classes(table, limit if limited else None)
    table.frame["sha256"] = hash_files(list(table.frame["path"]))
    return table


def hash_files(paths: list[str]) -> list[str]:
    """The SHA-256 of each file, read on several threads (hashing releases the GIL)."""
    hashes = [""] * len(paths)

    def one(i: int) -> None:
        hashes[i] = content_sha256(paths[i])

    with Progress(len(paths), "hash", "img") as bar:
        for _ in each_in_threads(one, len(paths), min(8, os.cpu_count() or 1)):
            bar.update()
    return hashes


def train_sampler(recipe: Recipe, table: ImageTable) -> EpochSampler:
    """The sampler of the training split's rows: shuffled, or class-balanced."""
    labels = table.targets if table.multi_label else table.labels
    train = table.frame["split"].to_numpy() == "train"
    return EpochSampler(labels[train], recipe.train.seed, recipe.train.class_balance == "sampler")


def first_epoch_order(recipe: Recipe, table: ImageTable) -> np.ndarray:
    """Every table row, in the order the first epoch needs them: the training rows as its
    sampler draws them, then validation, then the rest."""
    split = table.frame["split"].to_numpy()
    drawn = np.flatnonzero(split == "train")[train_sampler(recipe, table).first_rows()]
    rest = np.setdiff1d(np.arange(len(table)), drawn)
    return np.concatenate([drawn, rest[split[rest] == "val"], rest[split[rest] != "val"]])


def split_table(recipe: Recipe, table: ImageTable) -> tuple[ImageTable, str | None]:
    """Fill in train/val/test (keeping given splits), check that each holds every class, and
    check for leakage."""
    cfg = recipe.data
    if cfg.require_patients:
        require_patients(table.frame)
    given = frozenset(table.frame["split"].dropna())
    table = assign_splits(
        table, cfg.val_fraction, cfg.test_fraction, recipe.train.seed, by=cfg.split_by
    )
    limited = cfg.limit if cfg.limit == len(table) else None  # data.limit subsampled it
    check_split_classes(table, given, limited)
    warning = None
    if cfg.split_by == "image":
        warning = (
            "split by IMAGE, as the tutorial did: one patient's images can be in train "
            "and test, so held-out figures are optimistic"
        )
    elif note := patient_coverage(table.frame).note():
        warning = (
            f"{note}: those images' patients may be in more than one split, so held-out "
            "figures may be optimistic; give patient ids (docs/data.md) or set "
            "data.require_patients=true"
        )
        log.warning(warning)
    report = check_leakage(table.frame, strict=not given and cfg.split_by == "patient")
    table.frame.attrs["leakage"] = report.summary()
    return table, warning


def prepare(
    recipe: Recipe,
    data: str | Path,
    out: Path,
    write: bool,
    table: ImageTable | None = None,
    overlap: bool = False,
) -> Prepared:
    """Split and decode the data (or an already hashed ``table``); when ``write``, record
    ``splits.csv``, ``skipped.csv`` and ``run.json`` (what ``--resume`` reloads).

    With ``overlap``, unless the decoded store is cached, decoding goes on in the background
    in the first epoch's order and the data comes back at once, still ``decoding``."""
    if table is None:
        table = hashed_table(recipe, data, out if write else None)
    table, warning = split_table(recipe, table)
    decoding = StoreDecode(
        list(table.frame["path"]),
        recipe.data.image_size,
        recipe.data.channels,
        hashes=list(table.frame["sha256"]),
        order=first_epoch_order(recipe, table) if overlap else None,
    )
    positive = (
        None if table.multi_label else positive_class(table.class_names, recipe.data.positive_class)
    )
    prepared = Prepared(table, decoding.store, positive, table.skipped, warning, None, decoding)
    if not overlap or decoding.done:
        prepared = settle(prepared)
    if write:
        _record_run(prepared, data, out)
    return prepared


def settle(prepared: Prepared, out: Path | None = None) -> Prepared:
    """``prepared`` once its decoding has ended: the files found unreadable left out (and
    listed in ``skipped``), the splits checked again, and recorded in ``out`` when given."""
    if prepared.decoding is None:
        return prepared
    pixels, failures = prepared.decoding.result()
    table = prepared.table
    keep = ~table.frame["path"].isin({p for p, _ in failures}).to_numpy()
    table = table.select(keep)
    prepared = replace(
        prepared,
        table=table,
        pixels=pixels.rows(keep),
        skipped=table.skipped + failures,
        decoding=None,
    )
    if failures:  # unreadable files may have taken a split's last image of a class
        check_split_classes(table)
    if out is not None:
        _record_splits(prepared, out)
    return prepared


def _record_run(prepared: Prepared, data: str | Path, out: Path) -> None:
    table = prepared.table
    facts = {
        "data": str(data),
        "source": table.source,
        "class_names": table.class_names,
        "positive_class": prepared.positive_class,
        "split_warning": prepared.split_warning,
        "leakage": table.frame.attrs.get("leakage"),
    }
    atomic_write_text(out / "run.json", json.dumps(facts, indent=2))
    _record_splits(prepared, out)


def _record_splits(prepared: Prepared, out: Path) -> None:
    skipped = pd.DataFrame(prepared.skipped, columns=["path", "reason"])
    atomic_write_text(out / "skipped.csv", skipped.to_csv(index=False))
    frame = prepared.table.frame
    columns = [c for c in [*SPLIT_COLUMNS, "source"] if c in frame]
    columns += [c for c in frame if c.startswith(LABEL_PREFIX)]
    atomic_write_text(out / "splits.csv", frame[columns].to_csv(index=False))


def crop_to_lungs(
    recipe: Recipe, prepared: Prepared, data: str | Path, out: Path, reuse: bool
) -> Prepared:
    """Crop the decoded images to their lung fields when the recipe asks for it
    (``preprocess.lung_crop``; ``reuse``: take the lung model saved in ``out``)."""
    cfg = recipe.preprocess.lung_crop
    if cfg is None:
        return prepared
    from medsight.training.lungs import lungs_for_run

    lungs = lungs_for_run(cfg, data, out, recipe.train.seed, reuse)
    return replace(prepared, pixels=lungs.crop_store(prepared.pixels), lungs=lungs)


def reload_prepared(recipe: Recipe, out: Path) -> Prepared:
    """The data of an earlier run (``--resume``): its exact splits, decoded again."""
    facts = json.loads((out / "run.json").read_text())
    frame = pd.read_csv(out / "splits.csv", dtype=str, keep_default_na=False)
    frame["patient"] = frame["patient"].replace("", None)
    now = hash_files(list(frame["path"]))
    changed = [p for p, h, n in zip(frame["path"], frame["sha256"], now, strict=True) if n != h]
    if changed:
        raise DataError(
            f"{len(changed)} image(s) changed since the run started "
            f"(e.g. {changed[0]}); cannot resume on different data"
        )
    table = ImageTable(frame, facts["class_names"], facts["source"])
    table.frame.attrs["leakage"] = facts.get("leakage")
    pixels, failures = StoreDecode(
        list(frame["path"]),
        recipe.data.image_size,
        recipe.data.channels,
        hashes=list(frame["sha256"]),
    ).result()
    if failures:
        raise DataError(
            f"{failures[0][0]}: {failures[0][1]} (it was readable when the run "
            "started; cannot resume)"
        )
    skipped = pd.read_csv(out / "skipped.csv", dtype=str).itertuples(index=False)
    return Prepared(
        table,
        pixels,
        facts["positive_class"],
        [tuple(r) for r in skipped],
        facts.get("split_warning"),
    )
