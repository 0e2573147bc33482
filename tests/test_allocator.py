"""The medsight command re-executes itself once with the fast allocator and OpenMP setting."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from medsight import allocator


@pytest.fixture
def execve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple]:
    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    calls: list[tuple] = []
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    monkeypatch.setenv("MEDSIGHT_ALLOCATOR", str(library))
    monkeypatch.delenv("MEDSIGHT_ALLOCATOR_ACTIVE", raising=False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    return calls


@pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD re-execution is Linux only")
def test_reexec_preloads_the_allocator_and_passive_openmp(execve: list[tuple]) -> None:
    allocator.reexec_with_fast_allocator(["train", "--recipe", "malaria"])
    ((executable, argv, env),) = execve
    assert argv[1:] == ["-m", "medsight", "train", "--recipe", "malaria"]
    assert env["LD_PRELOAD"].startswith(os.environ["MEDSIGHT_ALLOCATOR"])
    assert env["MEDSIGHT_ALLOCATOR_ACTIVE"] == os.environ["MEDSIGHT_ALLOCATOR"]
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


def test_a_users_openmp_setting_and_system_choice_are_kept(
    execve: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("MEDSIGHT_ALLOCATOR", "system")
    allocator.reexec_with_fast_allocator(["predict"])
    assert execve == [] and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
