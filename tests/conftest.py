"""Shared fixtures: the real public datasets (../shared/datasets) and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDSIGHT_PROGRESS", "json")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The folder of real datasets; tests that need it skip with a reason when it is absent."""
    path = Path(os.environ.get("MEDSIGHT_TEST_DATA", REPO_ROOT / ".." / "shared" / "datasets"))
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path}; set MEDSIGHT_TEST_DATA to their folder")
    return path.resolve()


@pytest.fixture(scope="session")
def malaria_dir(datasets_dir: Path) -> Path:
    path = datasets_dir / "malaria"
    if not path.is_dir():
        pytest.skip(f"malaria dataset not found at {path}")
    return path
