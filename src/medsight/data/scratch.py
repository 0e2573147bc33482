"""Temporary folders for stores that are not worth keeping.

A folder goes when its process ends normally. A process killed with SIGKILL (by the OOM killer,
a cluster's preemption, ``kill -9``) gets no chance to clean up, and its store can be as large
as the data set: so each folder's name carries its owner's process id, and the next process that
makes one removes the folders whose owner is gone. The name also carries the machine and the
process-id namespace, so a process never judges another machine's or container's folders by
its own process table.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

PREFIX = "medsight-pixels-"

_made: list[Path] = []


@atexit.register
def remove_own() -> None:
    """Remove the folders this process made (at exit)."""
    for folder in _made:
        shutil.rmtree(folder, ignore_errors=True)


def scratch_folder() -> Path:
    """A new temporary folder, removed when the process ends; dead processes' folders go first."""
    remove_abandoned()
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{_place()}-{os.getpid()}-"))
    _made.append(folder)
    return folder


def remove_abandoned() -> list[Path]:
    """Remove the scratch folders of processes of this machine and namespace that no longer run."""
    place, removed = _place(), []
    for folder in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        owner = _OWNER.fullmatch(folder.name)
        if owner and owner["place"] == place and not _running(int(owner["pid"])):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


# mkdtemp's random suffix has no "-"; names without an owner (older versions) are left alone
_OWNER = re.compile(rf"{PREFIX}(?P<place>[0-9a-f]{{12}})-(?P<pid>\d+)-[^-]+")


def _place() -> str:
    """The machine and process-id namespace (12 hex digits): where a process id means something."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:  # not Linux
        namespace = ""
    return hashlib.sha256(f"{socket.gethostname()}|{namespace}".encode()).hexdigest()[:12]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
