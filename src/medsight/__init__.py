"""medsight: medical image classification from curated data to a served model.

The Python API mirrors the ``medsight`` command: each sub-command is one function of
:mod:`medsight.api`, re-exported here lazily so ``import medsight`` stays fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = [
    "audit",
    "compare",
    "download",
    "evaluate",
    "explain",
    "export",
    "inspect",
    "list_recipes",
    "load",
    "predict",
    "resume",
    "serve",
    "show_recipe",
    "train",
    "__version__",
]
# No subpackage may share a name with a function above: importing ``medsight.X`` would replace
# the function ``medsight.X`` (hence ``training``, ``evaluation``, ``explanation``, ``serving``).


def __getattr__(name: str):  # PEP 562: import the heavy API (torch) only when used
    if name in __all__:
        from medsight import api

        return getattr(api, name)
    raise AttributeError(f"module 'medsight' has no attribute {name!r}")
