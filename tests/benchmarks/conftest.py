"""The benchmark harness lives in ``benchmarks/`` at the repository root, outside the installed
package: make it importable, and share a tiny real workload between the tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

KERAS_PYTHON = REPO_ROOT / "benchmarks" / ".venv-keras" / "bin" / "python"
FASTAI_PYTHON = REPO_ROOT / "benchmarks" / ".venv-fastai" / "bin" / "python"


@pytest.fixture(scope="session")
def malaria_tree(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 real malaria cells (12 per class, many patients) as a benchmark tree of links."""
    from benchmarks.workloads import build_tree

    return build_tree("malaria", datasets_dir, tmp_path_factory.mktemp("bench") / "malaria", 24)


def side_python(side: str, python: Path, setup: str) -> Path:
    """A side's own interpreter, or a skip that says how to create it."""
    if not python.is_file():
        pytest.skip(
            f"the {side} side needs {python.relative_to(REPO_ROOT)} (create it with {setup})"
        )
    return python


@pytest.fixture(scope="session")
def keras_python() -> Path:
    return side_python("Keras", KERAS_PYTHON, "benchmarks/setup_keras.sh")


@pytest.fixture(scope="session")
def fastai_python() -> Path:
    return side_python("fastai", FASTAI_PYTHON, "benchmarks/setup_fastai.sh")
