"""Use a fast memory allocator when one is installed (measured: 1.4-2x faster CPU training).

glibc's malloc returns freed memory to the kernel and page-faults it back at every step of a
PyTorch training loop; tcmalloc or jemalloc keep it. They must be loaded before Python starts,
so the ``medsight`` command re-executes itself once with ``LD_PRELOAD`` set. Set
``MEDSIGHT_ALLOCATOR=system`` to keep the default allocator, or a library path to choose one.

The same goes for ``OMP_WAIT_POLICY=PASSIVE`` (unless already set): by default OpenMP threads
spin for a while after each parallel region, taking a core from the batch augmentation and the
DataLoader; on 2 cores this alone took malaria-lenet training from 347 to 497 images/s.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

CANDIDATES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libjemalloc.so.2", "libmimalloc.so")
LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
)


def find_allocator() -> str | None:
    """The first fast allocator library on this machine (or the one MEDSIGHT_ALLOCATOR names)."""
    choice = os.environ.get("MEDSIGHT_ALLOCATOR", "auto")
    if choice == "system":
        return None
    if choice != "auto":
        return choice if Path(choice).is_file() else None
    for folder in LIBRARY_DIRS:
        for name in CANDIDATES:
            if (Path(folder) / name).is_file():
                return str(Path(folder) / name)
    return None


def fast_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with the fast allocator preloaded (when installed and not yet active) and
    ``OMP_WAIT_POLICY=PASSIVE``; settings the user made are kept."""
    env = {"OMP_WAIT_POLICY": "PASSIVE", **environ}
    library = find_allocator()
    if sys.platform != "linux" or env.get("MEDSIGHT_ALLOCATOR_ACTIVE") or library is None:
        return env
    if library not in env.get("LD_PRELOAD", ""):
        env["LD_PRELOAD"] = " ".join(filter(None, [library, env.get("LD_PRELOAD")]))
    env["MEDSIGHT_ALLOCATOR_ACTIVE"] = library
    return env


def reexec_with_fast_allocator(argv: list[str]) -> None:
    """Replace this process by itself in :func:`fast_environment` (no-op if that changes
    nothing a running process could not set itself)."""
    env = fast_environment(os.environ)
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        os.environ.update(env)  # OpenMP reads its setting when torch starts it, later
        return
    os.execve(sys.executable, [sys.executable, "-m", "medsight", *argv], env)
