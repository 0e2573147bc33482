"""What a bundle saw in training: the content hashes and (salted, hashed) patients of its
training and validation images, so that scoring it on them can be flagged.

Patient ids are never stored in clear: each is hashed with a random salt kept beside the
hashes, so the file tells whether a patient was seen without naming any. A bundle written
before this file existed records nothing; :meth:`TrainingImages.load` then gives None, and
callers must say "unknown", not "none".
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medsight.errors import MedsightError
from medsight.fsutil import atomic_write_text

SEEN_FILE = "training_images.json"
SEEN_SPLITS = ("train", "val")  # trained on, and tuned on (threshold, temperature, best epoch)
SEEN_FORMAT = 1


def _present(value: object) -> bool:
    """A patient id that says something (not None, NaN or blank)."""
    return isinstance(value, str) and bool(value.strip())


@dataclass(frozen=True)
class TrainingImages:
    """The SHA-256 of each image the model was trained or tuned on, and its patients' salted
    hashes (``sha256(salt:patient)``)."""

    hashes: frozenset[str]
    patients: frozenset[str]
    salt: str

    @classmethod
    def record(
        cls, hashes: Iterable[str], patients: Iterable[str | None], salt: str | None = None
    ) -> TrainingImages:
        """From the files' content hashes and their patient ids (None where unknown); a new
        random salt unless one is given."""
        salt = salt or secrets.token_hex(16)
        salted = frozenset(_salted(salt, p) for p in patients if _present(p))
        return cls(frozenset(hashes), salted, salt)

    def same_content(self, hashes: Iterable[str | None]) -> np.ndarray:
        """Per image: are its bytes those of an image the model saw?"""
        return np.array([h in self.hashes for h in hashes], dtype=bool)

    def same_patient(self, patients: Iterable[str | None]) -> np.ndarray:
        """Per image: is its patient one whose images the model saw?"""
        return np.array(
            [_present(p) and _salted(self.salt, p) in self.patients for p in patients],
            dtype=bool,
        )

    def seen(self, hashes: Iterable[str | None], patients: Iterable[str | None]) -> np.ndarray:
        """Per image: did the model see it, or another image of its patient?"""
        return self.same_content(hashes) | self.same_patient(patients)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / SEEN_FILE
        content = {
            "format_version": SEEN_FORMAT,
            "splits": list(SEEN_SPLITS),
            "sha256": sorted(self.hashes),
            "patient_salt": self.salt,
            "patients": sorted(self.patients),
        }
        atomic_write_text(path, json.dumps(content, indent=1))
        return path

    @classmethod
    def load(cls, folder: Path) -> TrainingImages | None:
        """The record in a bundle folder, or None when the bundle predates it."""
        path = Path(folder) / SEEN_FILE
        if not path.is_file():
            return None
        try:
            content = json.loads(path.read_text())
            return cls(
                frozenset(content["sha256"]),
                frozenset(content["patients"]),
                str(content["patient_salt"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MedsightError(f"{path}: unreadable record of the training images: {exc}") from exc


def _salted(salt: str, patient: str) -> str:
    return hashlib.sha256(f"{salt}:{patient.strip()}".encode()).hexdigest()
