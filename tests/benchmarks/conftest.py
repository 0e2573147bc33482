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


@pytest.fixture(scope="session")
def keras_python() -> Path:
    if not KERAS_PYTHON.is_file():
        pytest.skip(
            f"the Keras side needs {KERAS_PYTHON.relative_to(REPO_ROOT)} "
            "(create it with benchmarks/setup_keras.sh)"
        )
    return KERAS_PYTHON


@pytest.fixture(scope="session")
def fastai_python() -> Path:
    if not FASTAI_PYTHON.is_file():
        pytest.skip(
            f"the fastai side needs {FASTAI_PYTHON.relative_to(REPO_ROOT)} "
            "(create it with benchmarks/setup_fastai.sh)"
        )
    return FASTAI_PYTHON
