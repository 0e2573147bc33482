"""The medsight command re-executes itself once with the fast allocator and OpenMP setting:
a system library, else the one medsight's pip dependency carries, else glibc tuned."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from PIL import Image

from medsight import allocator
from medsight.errors import ConfigError

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="LD_PRELOAD is Linux only")


@pytest.fixture
def execve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple]:
    library = tmp_path / "libtcmalloc_minimal.so.4"
    library.write_bytes(b"")
    calls: list[tuple] = []
    monkeypatch.setattr(os, "execve", lambda *args: calls.append(args))
    monkeypatch.setenv("MEDSIGHT_ALLOCATOR", str(library))
    for name in ("MEDSIGHT_ALLOCATOR_ACTIVE", "OMP_WAIT_POLICY", "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    return calls


@linux_only
def test_reexec_preloads_the_allocator_and_passive_openmp(execve: list[tuple]) -> None:
    allocator.reexec_with_fast_allocator(["train", "--recipe", "malaria"])
    ((executable, argv, env),) = execve
    assert argv[1:] == ["-m", "medsight", "train", "--recipe", "malaria"]
    assert env["LD_PRELOAD"].startswith(os.environ["MEDSIGHT_ALLOCATOR"])
    assert env["MEDSIGHT_ALLOCATOR_ACTIVE"] == os.environ["MEDSIGHT_ALLOCATOR"]
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
    assert "GLIBC_TUNABLES" not in env


def test_a_users_openmp_setting_and_system_choice_are_kept(
    execve: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    monkeypatch.setenv("MEDSIGHT_ALLOCATOR", "system")
    allocator.reexec_with_fast_allocator(["predict"])
    assert execve == [] and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    assert "GLIBC_TUNABLES" not in os.environ and "MEDSIGHT_ALLOCATOR_ACTIVE" not in os.environ


@linux_only
def test_reexec_for_tuned_glibc_when_there_is_no_library(
    execve: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(allocator, "LIBRARY_DIRS", ())
    monkeypatch.setattr(allocator, "WHEELS", ())
    monkeypatch.setenv("MEDSIGHT_ALLOCATOR", "auto")
    allocator.reexec_with_fast_allocator(["train"])
    ((_, _, env),) = execve  # glibc reads its tunables only at start-up
    assert env["GLIBC_TUNABLES"] == allocator.GLIBC_TUNED
    assert "LD_PRELOAD" not in env


def test_a_missing_library_path_is_one_clear_error(
    execve: list[tuple], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MEDSIGHT_ALLOCATOR", "/nowhere/libmimalloc.so")
    with pytest.raises(ConfigError, match="/nowhere/libmimalloc.so"):
        allocator.find_allocator()
    with pytest.raises(SystemExit) as stop:
        allocator.reexec_with_fast_allocator(["train"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and execve == []
    assert err.count("\n") == 1 and "MEDSIGHT_ALLOCATOR=/nowhere/libmimalloc.so" in err


def _fake_wheel(site: Path, files: list[str], present: list[str]) -> None:
    """A distribution ``fake-alloc`` installed in ``site``, its RECORD listing ``files``."""
    info = site / "fake_alloc-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-alloc\nVersion: 1.0\n")
    (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
    for name in present:
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_bytes(b"")


@pytest.mark.parametrize(
    ("files", "present", "found"),
    [
        (["fake.prefix/lib/libfake.so", "x.py"], ["fake.prefix/lib/libfake.so"], True),
        (["fake.prefix/lib/libfake.so"], [], False),  # listed but removed
        (["fake.prefix/lib/libfake.so.3"], ["fake.prefix/lib/libfake.so.3"], False),
    ],
)
def test_the_wheels_library_is_found_through_its_file_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files, present, found
) -> None:
    _fake_wheel(tmp_path, files, present)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        allocator, "WHEELS", (("not-installed", "libx.so"), ("fake-alloc", "libfake.so"))
    )
    expected = str((tmp_path / "fake.prefix/lib/libfake.so").resolve()) if found else None
    assert allocator.wheel_allocator() == expected


@linux_only
def test_the_installed_dependency_carries_mimalloc() -> None:
    library = allocator.wheel_allocator()
    assert library is not None and Path(library).name == "libmimalloc.so"
    listed = {str(f.locate().resolve()) for f in metadata.files("cmeel-mimalloc")}
    assert library in listed and Path(library).stat().st_size > 100_000


@linux_only
@pytest.mark.parametrize(
    ("choice", "system_lib", "user", "preload", "tunables", "active"),
    [
        # auto: a system library first, else the wheel's, else tuned glibc
        ("auto", True, {}, "SYSTEM", None, "SYSTEM"),
        ("auto", False, {}, "WHEEL", None, "WHEEL"),
        ("auto", False, {"LD_PRELOAD": "/u/libx.so"}, "WHEEL /u/libx.so", None, "WHEEL"),
        ("glibc", True, {}, None, "TUNED", "GT"),
        ("glibc", False, {"GLIBC_TUNABLES": "glibc.cpu.x=1"}, None, "glibc.cpu.x=1:TUNED", "GT"),
        ("glibc", False, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, None, "USER", None),
        ("system", True, {}, None, None, None),
        ("MINE", True, {}, "MINE", None, "MINE"),  # a path
        ("auto", True, {"MEDSIGHT_ALLOCATOR_ACTIVE": "/a.so"}, None, None, "/a.so"),  # re-exec'd
    ],
)
def test_the_environment_a_reexec_gets(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    choice: str,
    system_lib: bool,
    user: dict,
    preload: str | None,
    tunables: str | None,
    active: str | None,
) -> None:
    system = tmp_path / "usr-lib" / "libjemalloc.so.2"
    system.parent.mkdir()
    if system_lib:
        system.write_bytes(b"")
    wheel = tmp_path / "wheel" / "libmimalloc.so"
    mine = tmp_path / "libmine.so"
    mine.write_bytes(b"")
    monkeypatch.setattr(allocator, "LIBRARY_DIRS", (str(system.parent),))
    monkeypatch.setattr(allocator, "wheel_allocator", lambda: str(wheel))

    def fill(text: str | None) -> str | None:
        if text is None:
            return None
        text = text.replace("GT", "glibc malloc (tuned: TUNED)")
        for key, value in (("SYSTEM", system), ("WHEEL", wheel), ("MINE", mine)):
            text = text.replace(key, str(value))
        text = text.replace("TUNED", allocator.GLIBC_TUNED)
        return text.replace("USER", user.get("GLIBC_TUNABLES", ""))

    env = allocator.fast_environment({"MEDSIGHT_ALLOCATOR": fill(choice), **user})
    assert env.get("LD_PRELOAD") == (fill(preload) if preload else user.get("LD_PRELOAD"))
    assert env.get("GLIBC_TUNABLES") == fill(tunables)
    assert env.get("MEDSIGHT_ALLOCATOR_ACTIVE") == fill(active)
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"


def _run_medsight(
    args: list[str], tmp_path: Path, **env: str
) -> tuple[subprocess.CompletedProcess, str, str]:
    """``python -m medsight ARGS`` (through its re-exec); the final process writes its memory
    map and allocator variables at exit, through a ``sitecustomize`` on PYTHONPATH."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(
        "import atexit, os, pathlib\n"
        "def _dump():\n"
        "    out = pathlib.Path(os.environ['ALLOC_TEST_OUT'])\n"
        "    (out / 'maps').write_text(pathlib.Path('/proc/self/maps').read_text())\n"
        "    keys = ('LD_PRELOAD', 'GLIBC_TUNABLES', 'MEDSIGHT_ALLOCATOR_ACTIVE')\n"
        "    (out / 'env').write_text(repr({k: os.environ.get(k) for k in keys}))\n"
        "atexit.register(_dump)\n"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("MEDSIGHT_ALLOCATOR")}
    for name in ("LD_PRELOAD", "GLIBC_TUNABLES", "PYTHONPATH"):
        base.pop(name, None)
    base.update(PYTHONPATH=str(hook), ALLOC_TEST_OUT=str(tmp_path), HF_HUB_OFFLINE="1", **env)
    done = subprocess.run(
        [sys.executable, "-m", "medsight", *args], env=base, capture_output=True, text=True
    )
    return done, (tmp_path / "maps").read_text(), (tmp_path / "env").read_text()


@linux_only
def test_the_command_runs_with_the_wheels_mimalloc_preloaded(
    xray_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if any((Path(d) / n).is_file() for d in allocator.LIBRARY_DIRS for n in allocator.CANDIDATES):
        pytest.skip("a system allocator is installed; it would be preloaded instead of the wheel's")
    image = tmp_path / "x.png"
    Image.new("RGB", (80, 80), (90, 90, 90)).save(image)
    out = tmp_path / "p.csv"
    done, maps, env = _run_medsight(
        ["predict", str(xray_bundle), str(image), "--out", str(out), "--no-onnx"], tmp_path
    )
    assert done.returncode == 0, done.stderr
    library = allocator.wheel_allocator()
    assert library in maps and library in env
    assert len(out.read_text().splitlines()) == 2  # header and the one image


@linux_only
def test_system_choice_runs_with_nothing_preloaded(tmp_path: Path) -> None:
    done, maps, env = _run_medsight(
        ["predict", str(tmp_path / "no-bundle"), "x.png", "--out", str(tmp_path / "p.csv")],
        tmp_path,
        MEDSIGHT_ALLOCATOR="system",
    )
    assert done.returncode == 2 and "not a medsight bundle" in done.stderr
    assert "mimalloc" not in maps and "jemalloc" not in maps and "tcmalloc" not in maps
    assert env == repr(dict.fromkeys(("LD_PRELOAD", "GLIBC_TUNABLES", "MEDSIGHT_ALLOCATOR_ACTIVE")))


@linux_only
@pytest.mark.parametrize(("user", "expected"), [({}, "-1"), ({"MIMALLOC_PURGE_DELAY": "10"}, "10")])
def test_mimalloc_keeps_its_pages_unless_the_user_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user: dict, expected: str
) -> None:
    wheel = tmp_path / "libmimalloc.so"
    monkeypatch.setattr(allocator, "LIBRARY_DIRS", ())
    monkeypatch.setattr(allocator, "wheel_allocator", lambda: str(wheel))
    env = allocator.fast_environment({"MEDSIGHT_ALLOCATOR": "auto", **user})
    assert env["LD_PRELOAD"] == str(wheel) and env["MIMALLOC_PURGE_DELAY"] == expected
    glibc = allocator.fast_environment({"MEDSIGHT_ALLOCATOR": "glibc", **user})
    assert glibc.get("MIMALLOC_PURGE_DELAY") == user.get("MIMALLOC_PURGE_DELAY")
