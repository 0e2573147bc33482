"""Where a model looks: class activation maps and their faithfulness (see :mod:`.cam`).

The names are imported when first used (PEP 562), so that :data:`METHOD_NAMES` comes without
PyTorch (see :mod:`.methods`)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from medsight.explanation.methods import METHOD_NAMES

_HOMES = {"METHODS": "cam", "Explanation": "cam", "explain": "cam", "explain_files": "files"}

if TYPE_CHECKING:
    from medsight.explanation.cam import METHODS, Explanation, explain
    from medsight.explanation.files import explain_files


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "METHOD_NAMES", "Explanation", "explain", "explain_files"]
