"""Patient ids from file names, for datasets that encode them (so splits can group by patient).

Each pattern is data: a regular expression and how to turn its match into a patient key.
"""

from __future__ import annotations

import re
from pathlib import PurePath

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


def patient_from_filename(path: str | PurePath) -> str | None:
    """The patient key encoded in a known dataset's file name, or None when there is none."""
    name = PurePath(str(path).split("::")[0]).name
    for _dataset, pattern, template in PATIENT_PATTERNS:
        match = pattern.match(name)
        if match:
            return template.format(**match.groupdict())
    return None
