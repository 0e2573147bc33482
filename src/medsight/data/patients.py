"""Patient ids, and the rule each came from, so splits group a patient's images only when an id
exists and every output can say how many images had none.

Rules, in the order tried by default: a patient column of a CSV sheet (``column``), the DICOM
``PatientID`` tag of ``.dcm`` files (``dicom``, stored only as a salted hash), then the file-name
conventions of known datasets (``filename``). A recipe can name its own rule instead
(``data.patient_pattern``: ``pattern``; ``data.patient_from=parent``: ``parent``); then that rule
alone decides. Images that no rule identifies keep ``patient = None`` and are split by image.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePath

import pandas as pd

from medsight.config import DataConfig
from medsight.data.io import DICOM_SUFFIXES
from medsight.errors import ConfigError, DataError

# (dataset, pattern, key template). Order matters: the first match wins.
PATIENT_PATTERNS: list[tuple[str, re.Pattern[str], str]] = [
    # NIH malaria: C<slide>[letters]P<patient>_... ; healthy slides have no P part: group by slide.
    ("nih-malaria", re.compile(r"^C\d+[A-Za-z]*P(?P<id>\d+)"), "P{id}"),
    ("nih-malaria", re.compile(r"^C(?P<id>\d+)[A-Za-z_]*thin", re.IGNORECASE), "C{id}"),
    # Kermany pediatric chest X-rays.
    ("kermany", re.compile(r"^person(?P<id>\d+)_"), "person{id}"),
    ("kermany", re.compile(r"^NORMAL2-IM-(?P<id>\d+)-"), "NORMAL2-IM-{id}"),
    ("kermany", re.compile(r"^IM-(?P<id>\d+)-"), "IM-{id}"),
]
# The salt of the DICOM PatientID hash. It comes from the environment, not the recipe, so it is
# never written into a run (config.yaml travels with the run); the fixed default keeps a patient's
# hash the same in training and in a later evaluation. With the public default a short id can be
# recovered by trying candidates: set a secret salt when the ids themselves are sensitive.
SALT_ENV = "MEDSIGHT_PATIENT_SALT"
DEFAULT_SALT = "medsight-patient-v1"
RULE_NAMES = {
    "column": "patient column",
    "dicom": "DICOM PatientID",
    "filename": "file name",
    "pattern": "data.patient_pattern",
    "parent": "parent folder",
    "given": "given",
}


def patient_from_filename(path: str | PurePath) -> str | None:
    """The patient key encoded in a known dataset's file name, or None when there is none."""
    name = PurePath(str(path).split("::")[0]).name
    for _dataset, pattern, template in PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return template.format(**match.groupdict())
    return None


def hash_patient_id(raw: str, salt: str | None = None) -> str:
    """``dcm-`` + 16 hex digits of sha256(salt, id): deterministic, so one patient keeps one key
    across runs and evaluations, and the raw id is never stored."""
    salt = os.environ.get(SALT_ENV, DEFAULT_SALT) if salt is None else salt
    return "dcm-" + hashlib.sha256(f"{salt}\0{raw}".encode()).hexdigest()[:16]


def dicom_patient(path: str | Path) -> str | None:
    """The hashed ``PatientID`` of a DICOM file (None when absent, empty or unreadable: a file
    that cannot be read is reported when it is decoded, not here)."""
    import pydicom  # deferred: only DICOM datasets pay for the import

    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True, specific_tags=["PatientID"])
        raw = str(ds.get("PatientID", "") or "").strip()
    except Exception:  # pydicom raises many types for malformed files
        return None
    return hash_patient_id(raw) if raw else None


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled ``data.patient_pattern``, or a ConfigError saying what is wrong with it."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"data.patient_pattern '{pattern}' is not a regular expression: {exc}"
        ) from exc


@dataclass(frozen=True)
class PatientRule:
    """The recipe's own rule, if any: a regex on the file path or the parent folder's name."""

    pattern: str | None = None
    from_parent: bool = False

    def __post_init__(self) -> None:
        if self.pattern and self.from_parent:
            raise ConfigError("set data.patient_pattern or data.patient_from, not both")

    @classmethod
    def of(cls, cfg: DataConfig) -> PatientRule:
        return cls(cfg.patient_pattern, cfg.patient_from == "parent")


DEFAULT_RULE = PatientRule()  # the built-in rules: column, DICOM PatientID, file name


def _matched(regex: re.Pattern[str], text: str) -> str | None:
    match = regex.search(text)
    if not match:
        return None
    if "patient" in regex.groupindex:
        found = match.group("patient")
    else:
        found = match.group(1) if regex.groups else match.group(0)
    return found or None


def _relative(path: str, root: Path | None) -> str:
    """The path the pattern sees: relative to the data folder (so the user's own folder names
    above it cannot match), with forward slashes."""
    file = PurePath(path.split("::")[0])
    if root is not None and file.is_relative_to(root):
        file = file.relative_to(root)
    return file.as_posix()


def _parent(path: str, label: str, root: Path | None) -> str | None:
    """The parent folder's name, unless that folder is the data root or the class folder."""
    folder = Path(path.split("::")[0]).parent
    if (root is not None and folder == root) or folder.name == str(label):
        return None
    return folder.name or None


def _default(path: str, given: object) -> tuple[str | None, str | None]:
    if isinstance(given, str) and given.strip():
        return given.strip(), "column"
    if Path(path).suffix.lower() in DICOM_SUFFIXES:
        found = dicom_patient(path)
        if found:
            return found, "dicom"
    found = patient_from_filename(path)
    return found, "filename" if found else None


def identify_patients(
    frame: pd.DataFrame, rule: PatientRule = DEFAULT_RULE, root: Path | None = None
) -> pd.DataFrame:
    """``frame`` with ``patient`` and ``patient_source`` filled by ``rule`` (``patient`` on
    entry holds the ids a sheet gave, if any); ``root`` is the data folder."""
    pairs: list[tuple[str | None, str | None]]
    given = frame["patient"] if "patient" in frame else [None] * len(frame)
    if rule.pattern:
        regex = compile_pattern(rule.pattern)
        relative = [_relative(p, root) for p in frame["path"]]
        pairs = [(_matched(regex, r), "pattern") for r in relative]
        if len(frame) and not any(p for p, _ in pairs):
            raise DataError(
                f"data.patient_pattern '{rule.pattern}' matches none of the {len(frame)} "
                f"files (e.g. {relative[0]!r}; it is searched in each path relative to the data "
                "folder)"
            )
    elif rule.from_parent:
        pairs = [
            (_parent(p, label, root), "parent")
            for p, label in zip(frame["path"], frame["label"], strict=True)
        ]
        if len(frame) and not any(p for p, _ in pairs):
            raise DataError(
                f"data.patient_from=parent: every image lies directly in its class folder or the "
                f"data folder (e.g. {frame['path'].iloc[0]}); expected CLASS/PATIENT/image"
            )
    else:
        pairs = [_default(p, g) for p, g in zip(frame["path"], given, strict=True)]
    patients = [p for p, _ in pairs]
    sources = [s if p else None for p, s in pairs]
    return frame.assign(patient=patients, patient_source=sources)


def _has_id(value: object) -> bool:
    return isinstance(value, str) and value != ""


@dataclass(frozen=True)
class PatientCoverage:
    """How many images have a patient id, and from which rule: what a split by patient means."""

    n_images: int
    by_rule: dict[str, int]  # rule -> images with an id from it

    @property
    def without(self) -> int:
        return self.n_images - sum(self.by_rule.values())

    def split_by(self, wish: str) -> str:
        """The unit a split really used: ``patient``, ``image`` or ``mixed`` (some of each)."""
        if wish == "image" or self.without == self.n_images:
            return "image"
        return "patient" if self.without == 0 else "mixed"

    def note(self) -> str | None:
        """``split by image for N of M images (no patient id)``, when any image has none."""
        if not self.without:
            return None
        return f"split by image for {self.without} of {self.n_images} images (no patient id)"

    def text(self) -> str:
        rules = ", ".join(f"{RULE_NAMES.get(r, r)} {n}" for r, n in self.by_rule.items())
        have = self.n_images - self.without
        return f"patient ids: {have} of {self.n_images} images" + (f" ({rules})" if rules else "")


def patient_coverage(frame: pd.DataFrame) -> PatientCoverage:
    """Count the images with a patient id per rule (a table without ``patient_source``, such as
    a curated one, counts its ids as ``given``)."""
    has = [_has_id(p) for p in frame["patient"]] if "patient" in frame else [False] * len(frame)
    if "patient_source" in frame:
        rules = [s if isinstance(s, str) and s else "given" for s in frame["patient_source"]]
    else:
        rules = ["given"] * len(frame)
    counts = Counter(r for r, h in zip(rules, has, strict=True) if h)
    return PatientCoverage(len(frame), dict(sorted(counts.items())))


def require_patients(frame: pd.DataFrame) -> None:
    """Refuse images without a patient id (``data.require_patients=true``)."""
    missing = [
        p for p, pat in zip(frame["path"], frame["patient"], strict=True) if not _has_id(pat)
    ]
    if missing:
        raise DataError(
            f"{len(missing)} of {len(frame)} images have no patient id (e.g. {missing[0]}) and "
            "data.require_patients=true: give ids with a patient column, data.patient_pattern, "
            "data.patient_from=parent or the DICOM PatientID tag"
        )
