"""Scratch folders go when their process ends, and a killed process's go with the next run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from medsight.data.scratch import PREFIX, _place, remove_abandoned, remove_own, scratch_folder


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty temporary-files folder for this test alone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _folder(temp: Path, name: str) -> Path:
    (temp / name).mkdir()
    (temp / name / "pixels.u8").write_bytes(b"x")
    return temp / name


def test_own_folders_go_when_the_process_ends(temp: Path) -> None:
    folder = scratch_folder()
    assert folder.parent == temp and folder.name.startswith(f"{PREFIX}{_place()}-{os.getpid()}-")
    (folder / "pixels.u8").write_bytes(b"x")
    remove_own()
    assert not folder.exists()


def test_only_folders_of_processes_that_are_gone_are_removed(temp: Path) -> None:
    dead, place = _dead_pid(), _place()
    abandoned = _folder(temp, f"{PREFIX}{place}-{dead}-abc_12")
    kept = [
        _folder(temp, f"{PREFIX}{place}-{os.getpid()}-x1y2"),  # its owner runs
        _folder(temp, f"{PREFIX}{'0' * 12}-{dead}-x1y2"),  # another machine or container
        _folder(temp, f"{PREFIX}k3j_9x"),  # no owner in the name (an older medsight)
        _folder(temp, f"other-{place}-{dead}-x1y2"),  # not ours
    ]
    assert remove_abandoned() == [abandoned]
    assert not abandoned.exists()
    assert all((folder / "pixels.u8").exists() for folder in kept)


def test_a_killed_process_folder_goes_with_the_next_one(temp: Path) -> None:
    script = (
        "import sys, time\n"
        "from medsight.data.scratch import scratch_folder\n"
        "folder = scratch_folder(); (folder / 'states.u8').write_bytes(b'1')\n"
        "print(folder, flush=True); time.sleep(60)\n"
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE,
        text=True,
    )
    left = Path(victim.stdout.readline().strip())
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    assert left.parent == temp and (left / "states.u8").exists()  # SIGKILL: no clean-up

    mine = scratch_folder()
    assert not left.exists()
    assert [p.name for p in temp.iterdir()] == [mine.name]
