"""Where a model looks: class activation maps and their faithfulness (see :mod:`.cam`)."""

from medsight.explanation.cam import METHODS, Explanation, explain
from medsight.explanation.files import explain_files

__all__ = ["METHODS", "Explanation", "explain", "explain_files"]
