"""Data sources: a folder per class, a CSV sheet or a MedMNIST ``.npz``, all giving one contract.

Every source returns an :class:`ImageTable`: one row per image with its ``path``, ``label``
(class name), ``patient`` (or None), ``patient_source`` (the rule that gave that id, see
:mod:`medsight.data.patients`) and ``split`` (or None), plus the ordered class names.
Everything downstream (splits, training, evaluation) only ever sees that table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.data.io import is_image_file, npz_entry
from medsight.data.multilabel import (
    MultiLabelRule,
    is_multi_label,
    strata,
    summary_labels,
    targets_of,
)
from medsight.data.patients import DEFAULT_RULE, PatientRule, identify_patients
from medsight.errors import DataError

log = logging.getLogger(__name__)
COLUMNS = ["path", "label", "patient", "split"]
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}  # fmt: skip
PATH_COLUMNS = ("path", "filename", "file", "image", "image_path")
LABEL_COLUMNS = ("label", "class", "finding", "finding labels", "finding_labels", "target")
PATIENT_COLUMNS = ("patient", "patientid", "patient_id", "subject")
SOURCE_COLUMNS = ("source", "site", "dataset", "hospital")


@dataclass
class ImageTable:
    """Images with their labels, patients and splits: the one contract every source gives."""

    frame: pd.DataFrame
    class_names: list[str]
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def labels(self) -> np.ndarray:
        """Class indices aligned with ``frame`` rows (single-label tasks)."""
        index = {name: i for i, name in enumerate(self.class_names)}
        return self.frame["label"].map(index).to_numpy(dtype=np.int64)

    @property
    def multi_label(self) -> bool:
        """Several labels per image (:mod:`medsight.data.multilabel`): ``class_names`` are the
        labels, ``targets`` their values."""
        return is_multi_label(self.frame, self.class_names)

    @property
    def targets(self) -> np.ndarray:
        """(N, L) float32 of a multi-label task: 1 present, 0 absent, NaN not recorded."""
        return targets_of(self.frame, self.class_names)

    @property
    def strata(self) -> np.ndarray:
        """What stratified splits balance: the class, or a multi-label row's rarest finding."""
        return strata(self.targets) if self.multi_label else self.labels

    @property
    def has_splits(self) -> bool:
        return bool(self.frame["split"].notna().any())

    def keep_labels(self, names: list[str]) -> ImageTable:
        """A multi-label table with only ``names`` of its labels (``data.labels``)."""
        unknown = [n for n in names if n not in self.class_names]
        if unknown or not self.multi_label:
            raise DataError(
                f"{self.source}: data.labels names {unknown or names}, which are not among its "
                f"labels {self.class_names}"
            )
        frame = self.frame.assign(label=summary_labels(targets_of(self.frame, names), names))
        return ImageTable(frame, list(names), self.source, self.skipped)

    def subset(self, split: str) -> ImageTable:
        """The rows of one split, with the same class names."""
        rows = self.frame[self.frame["split"] == split].reset_index(drop=True)
        return ImageTable(rows, self.class_names, self.source, self.skipped)

    def select(self, mask: np.ndarray | pd.Series) -> ImageTable:
        rows = self.frame[np.asarray(mask, dtype=bool)].reset_index(drop=True)
        return ImageTable(rows, self.class_names, self.source, self.skipped)


def load_table(
    path: str | Path,
    class_names: list[str] | None = None,
    patients: PatientRule = DEFAULT_RULE,
    multi: MultiLabelRule | None = None,
) -> ImageTable:
    """Open any supported source: a folder, a ``.csv`` sheet or a MedMNIST ``.npz`` file.

    ``patients`` is the recipe's own patient-id rule, if any (:mod:`medsight.data.patients`);
    every row records in ``patient_source`` which rule gave its id. ``multi`` reads a CSV's
    rows as several labels each (:mod:`medsight.data.multilabel`).

    A public dataset's name (``malaria``, ``kermany``) that is not a local path is downloaded
    into the cache (``MEDSIGHT_DATA``) on first use. ``medmnist:<flag>`` (e.g.
    ``medmnist:pneumoniamnist``) downloads that MedMNIST file, through the ``medmnist``
    package's URLs and checksums.
    """
    if str(path).startswith("medmnist:"):
        from medsight.data.download import download_medmnist

        flag = str(path).split(":", 1)[1]
        return from_npz(download_medmnist(flag), class_names or medmnist_class_names(flag))
    from medsight.data.download import resolve_data

    path = resolve_data(path)  # absolute paths in every table and splits.csv
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder (expected a class-folder tree, a CSV "
            "with path,label[,patient,split] columns, or a MedMNIST .npz)"
        )
    if multi is not None and path.suffix.lower() != ".csv":
        raise DataError(
            f"{path}: a multi-label task reads a CSV sheet (a label column of '|'-separated "
            "findings, or one column per finding); folders and .npz files hold one label each"
        )
    if path.is_dir():
        table = from_folder(path, patients)
    elif path.suffix.lower() == ".csv":
        table = from_csv(path, patients, multi)
    elif path.suffix.lower() == ".npz":
        table = from_npz(path, class_names)
    else:
        raise DataError(f"{path}: unsupported data source (use a folder, a .csv or a .npz)")
    if not len(table):
        raise DataError(f"{path}: no images found")
    return table


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def from_folder(root: Path, patients: PatientRule = DEFAULT_RULE) -> ImageTable:
    """A folder per class, optionally under ``train/``, ``val/``, ``test/`` split folders."""
    subdirs = _class_dirs(root)
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    if split_dirs and len(split_dirs) == len(subdirs):
        layout = [(SPLIT_ALIASES[d.name.lower()], c) for d in split_dirs for c in _class_dirs(d)]
    else:
        layout = [(None, c) for c in subdirs]
    if not layout:
        raise DataError(
            f"{root}: expected one sub-folder per class (e.g. {root}/NORMAL/, "
            f"{root}/PNEUMONIA/), optionally under train/, val/, test/"
        )
    rows = []
    for split, class_dir in layout:
        for file in sorted(class_dir.rglob("*")):
            if file.is_file() and is_image_file(file) and not file.name.startswith("."):
                rows.append((str(file), class_dir.name, None, split))
    frame = identify_patients(pd.DataFrame(rows, columns=COLUMNS), patients, root)
    class_names = sorted({c.name for _, c in layout})
    return ImageTable(frame, class_names, f"folder {root}")


def _pick(columns: list[str], candidates: tuple[str, ...], csv: Path, required: bool) -> str | None:
    lowered = {c.lower(): c for c in columns}
    for name in candidates:
        if name in lowered:
            return lowered[name]
    if required:
        raise DataError(
            f"{csv}: no column named any of {', '.join(candidates)} "
            f"(columns are: {', '.join(columns)})"
        )
    return None


def from_csv(
    csv: Path, patients: PatientRule = DEFAULT_RULE, multi: MultiLabelRule | None = None
) -> ImageTable:
    """A sheet with path and label columns (patient and split optional).

    Relative paths are resolved against the CSV's folder. Rows whose image file is missing are
    skipped and listed in ``skipped`` rather than failing the whole sheet. With ``multi`` each
    row gives several labels: one column per finding, or ``|``-separated findings in the label
    column (:mod:`medsight.data.multilabel`).
    """
    try:
        sheet = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{csv}: not a readable CSV file ({exc})") from exc
    columns = list(sheet.columns)
    by_column = multi is not None and multi.columns_layout(columns)
    path_col = _pick(columns, PATH_COLUMNS, csv, required=True)
    label_col = _pick(columns, LABEL_COLUMNS, csv, required=not by_column)
    patient_col = _pick(columns, PATIENT_COLUMNS, csv, required=False)
    split_col = _pick(columns, ("split", "fold_split", "subset"), csv, required=False)
    source_col = _pick(columns, SOURCE_COLUMNS, csv, required=False)
    folder_col = "folder" if "folder" in columns and path_col == "filename" else None
    rows, kept, skipped = [], [], []
    for number, record in enumerate(sheet.to_dict("records"), start=2):
        raw = record[path_col].strip()
        label = record[label_col].strip() if label_col and not by_column else "-"
        if not raw or not label:
            skipped.append((f"{csv}:{number}", "row has an empty path or label"))
            continue
        is_entry = "::" in raw  # an npz array entry, e.g. data.npz::test_images/5
        folder = record[folder_col].strip() if folder_col else ""  # ieee8023: folder + filename
        file = raw if Path(raw).is_absolute() else str(csv.parent / folder / raw)
        if not is_entry and not Path(file).is_file():
            skipped.append((file, f"listed in {csv} line {number} but the file does not exist"))
            continue
        patient = record[patient_col].strip() if patient_col else ""
        split = record[split_col].strip().lower() if split_col else ""
        if split and split not in SPLIT_ALIASES:
            raise DataError(
                f"{csv} line {number}: unknown split {split!r} (use train, val or test)"
            )
        source = record[source_col].strip() if source_col else None
        rows.append((file, label, patient, SPLIT_ALIASES.get(split), source or None))
        kept.append(number - 2)
    if skipped:
        log.warning("%s: %d row(s) skipped, e.g. %s: %s", csv, len(skipped), *skipped[0])
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "source"])
    if not source_col:
        frame = frame.drop(columns="source")
    frame = identify_patients(frame, patients, csv.parent)
    if multi is None:
        joined = frame.loc[frame["label"].str.contains("|", regex=False), "label"]
        if len(joined):
            raise DataError(
                f"{csv}: label {joined.iloc[0]!r} lists several findings; for a multi-label "
                "task set data.multi_label=true (or data.labels=[...], docs/data.md)"
            )
        return ImageTable(frame, sorted(frame["label"].unique()), f"csv {csv}", skipped)
    return _multi_label(
        frame, sheet.iloc[kept].reset_index(drop=True), multi, label_col, csv, skipped
    )


def _multi_label(
    frame: pd.DataFrame,
    sheet: pd.DataFrame,
    multi: MultiLabelRule,
    label_col: str | None,
    csv: Path,
    skipped: list[tuple[str, str]],
) -> ImageTable:
    """The table of a multi-label sheet: one ``label:<name>`` column per label, and ``label``
    the row's present findings joined by ``|``."""
    if multi.columns_layout(list(sheet.columns)):
        names, values = list(multi.labels), multi.from_columns(sheet, str(csv))
    elif label_col is None:
        raise DataError(f"{csv}: no label column and no column per label {multi.labels}")
    else:
        present = [n for n in multi.labels if n in sheet.columns]
        if present:
            absent = [n for n in multi.labels if n not in sheet.columns]
            raise DataError(
                f"{csv}: has columns for {present} but not for {absent}; give a column per "
                "label in data.labels, or '|'-separated findings in one label column"
            )
        names, values = multi.from_lists(sheet[label_col], str(csv))
    frame = frame.assign(**values)
    frame["label"] = summary_labels(targets_of(frame, names), names)
    return ImageTable(frame, names, f"csv {csv}", skipped)


def medmnist_class_names(flag: str) -> list[str] | None:
    """Class names from the ``medmnist`` package's INFO table, when it is installed."""
    try:
        from medmnist import INFO
    except ImportError:
        return None
    info = INFO.get(flag)
    if not info:
        return None
    return [info["label"][str(i)] for i in range(len(info["label"]))]


def from_npz(npz: Path, class_names: list[str] | None = None) -> ImageTable:
    """A MedMNIST file: arrays ``{split}_images`` and ``{split}_labels`` for each split."""
    try:
        with np.load(npz) as arrays:
            shapes = {key: arrays[key].shape for key in arrays.files}
            labels = {
                key: arrays[key].reshape(len(arrays[key]), -1)[:, 0]
                for key in arrays.files
                if key.endswith("_labels")
            }
    except (OSError, ValueError) as exc:
        raise DataError(f"{npz}: not a readable .npz file ({exc})") from exc
    if class_names is None:
        class_names = medmnist_class_names(npz.stem.split("_")[0])
    rows = []
    for split in ("train", "val", "test"):
        if f"{split}_images" not in shapes or f"{split}_labels" not in labels:
            continue
        for i, value in enumerate(labels[f"{split}_labels"]):
            rows.append((npz_entry(npz, f"{split}_images", i), int(value), None, split))
    if not rows:
        raise DataError(
            f"{npz}: no '<split>_images' / '<split>_labels' arrays "
            f"(found: {', '.join(shapes)}); is it a MedMNIST file?"
        )
    frame = pd.DataFrame(rows, columns=COLUMNS).assign(patient_source=None)
    n_classes = int(frame["label"].max()) + 1
    names = class_names or [str(i) for i in range(n_classes)]
    frame["label"] = [names[i] for i in frame["label"]]
    return ImageTable(frame, list(names), f"medmnist {npz}")
