"""Peak memory of a ``malaria-lenet`` training against the number of images it trains on.

    .venv/bin/python -m benchmarks.memory_scale [--sizes 8000 32000 96000] [--limit-gb 2.5]

The decoded pixels live in an on-disk store read a batch at a time (``medsight.data.store``),
so a training's memory should not grow with its data. This checks it on 8k, 32k and 96k unique
images: a pool of noisy copies of the real NIH cells is generated once (each copy gets small
pixel noise, so its SHA-256 differs and nothing is deduplicated; its name keeps the cell's
patient prefix, so the patient split stays honest), and each size is a folder of links to the
first copies. Each size runs ``medsight train --recipe malaria-lenet --epochs 1`` as a child
with an empty cache, and the peak PSS of its process tree (DataLoader workers counted once) is
sampled from here. The largest size runs in a memory cgroup limited to ``--limit-gb`` (cgroup
v1 or v2 sub-group of this process's own group); where no cgroup can be made, the entry says
the limit was not enforced. The Keras tutorial's training on the smallest size is measured the
same way when ``benchmarks/.venv-keras`` exists. Results: ``results/memory_scale.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmarks.common import PeakMemory, write_json

HERE = Path(__file__).parent
DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)
KERAS_PYTHON = HERE / ".venv-keras" / "bin" / "python"


def _noisy_copies(job: tuple[Path, Path, int, int]) -> int:
    """Write copies ``0..copies-1`` of one cell into ``dest``, skipping those already there."""
    source, dest, copies, seed = job
    pixels = None
    written = 0
    for k in range(copies):
        target = dest / f"{source.stem}_n{k}.png"
        if target.exists():
            continue
        if pixels is None:
            pixels = np.asarray(Image.open(source).convert("RGB"), dtype=np.int16)
        noise = np.random.default_rng([seed, k]).integers(-2, 3, pixels.shape, dtype=np.int16)
        partial = target.with_suffix(".part")
        Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(
            partial, format="PNG", compress_level=1
        )
        os.replace(partial, target)
        written += 1
    return written


def make_pool(cells: Path, pool: Path, copies: int, workers: int = 2) -> int:
    """``copies`` noisy copies of every cell under ``cells/CLASS/``, into ``pool/CLASS/``."""
    jobs = []
    for c, class_dir in enumerate(sorted(p for p in cells.iterdir() if p.is_dir())):
        (pool / class_dir.name).mkdir(parents=True, exist_ok=True)
        for i, source in enumerate(sorted(class_dir.glob("*.png"))):
            jobs.append((source, pool / class_dir.name, copies, c * 10**6 + i))
    with ProcessPoolExecutor(workers) as executor:
        return sum(executor.map(_noisy_copies, jobs, chunksize=64))


def size_tree(pool: Path, dest: Path, copies: int) -> int:
    """A class-folder tree of links to the pool's copies ``0..copies-1``; its image count."""
    shutil.rmtree(dest, ignore_errors=True)
    count = 0
    for class_dir in sorted(p for p in pool.iterdir() if p.is_dir()):
        (dest / class_dir.name).mkdir(parents=True)
        for k in range(copies):
            for file in class_dir.glob(f"*_n{k}.png"):
                (dest / class_dir.name / file.name).symlink_to(file)
                count += 1
    return count


class MemoryLimit:
    """A memory cgroup below this process's own, limited to ``limit_bytes``; ``None`` where the
    system does not let us make one. ``wrap(command)`` runs the command inside it."""

    def __init__(self, path: Path, version: int):
        self.path, self.version = path, version

    @classmethod
    def create(cls, name: str, limit_bytes: int) -> MemoryLimit | None:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, own = line.split(":", 2)
            if "memory" in controllers.split(","):
                path, version, files = (
                    Path(f"/sys/fs/cgroup/memory{own}") / name,
                    1,
                    ("memory.limit_in_bytes",),
                )
            elif controllers == "" and (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
                path, version, files = Path(f"/sys/fs/cgroup{own}") / name, 2, ("memory.max",)
            else:
                continue
            try:
                path.mkdir(exist_ok=True)
                for file in files:
                    (path / file).write_text(str(limit_bytes))
                if version == 1 and (path / "memory.memsw.limit_in_bytes").exists():
                    (path / "memory.memsw.limit_in_bytes").write_text(str(limit_bytes))
                return cls(path, version)
            except OSError:
                continue
        return None

    def wrap(self, command: list[str]) -> list[str]:
        procs = self.path / "cgroup.procs"
        return ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *command]

    def figures(self) -> dict[str, Any]:
        """The group's own peak (page cache included, which the kernel reclaims under the limit)
        and whether the kernel had to kill anything."""
        read = lambda name: (self.path / name).read_text()  # noqa: E731
        if self.version == 1:
            oom = dict(line.split() for line in read("memory.oom_control").splitlines())
            return {
                "cgroup_limit_mb": round(int(read("memory.limit_in_bytes")) / 2**20),
                "cgroup_peak_mb": round(int(read("memory.max_usage_in_bytes")) / 2**20),
                "cgroup_limit_hits": int(read("memory.failcnt")),
                "oom_kills": int(oom.get("oom_kill", 0)),
            }
        events = dict(line.split() for line in read("memory.events").splitlines())
        peak = self.path / "memory.peak"
        return {
            "cgroup_limit_mb": round(int(read("memory.max")) / 2**20),
            "cgroup_peak_mb": round(int(peak.read_text()) / 2**20) if peak.exists() else None,
            "oom_kills": int(events.get("oom_kill", 0)),
        }

    def remove(self) -> None:
        try:
            self.path.rmdir()
        except OSError:
            pass


def measure_child(command: list[str], env: dict[str, str], log: Path) -> dict[str, Any]:
    """Run ``command``; its wall time, exit status and the peak PSS of its process tree."""
    start = time.monotonic()
    with open(log, "w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        with PeakMemory(interval=0.2, pid=child.pid) as memory:  # cheap: a core is precious
            returncode = child.wait()
    return {
        "returncode": returncode,
        "wall_s": round(time.monotonic() - start, 1),
        "peak_tree_pss_mb": round(memory.peak_tree_pss_mb, 1),
    }


def train_medsight(tree: Path, work: Path, limit: MemoryLimit | None) -> dict[str, Any]:
    from medsight.allocator import fast_environment

    run, cache = work / "run", work / "cache"
    shutil.rmtree(run, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = fast_environment({**os.environ, "MEDSIGHT_CACHE": str(cache), "HF_HUB_OFFLINE": "1"})
    medsight = str(Path(sys.executable).with_name("medsight"))
    command = [medsight, "train", "--recipe", "malaria-lenet", "--data", str(tree)]
    command += ["--out", str(run), "--epochs", "1"]
    figures = measure_child(limit.wrap(command) if limit else command, env, work / "train.log")
    if figures["returncode"] == 0:
        metrics = json.loads((run / "metrics.json").read_text())
        epoch_s = _first_epoch_seconds(run)
        train_images = _split_count(run, "train")
        figures |= {
            "train_images": train_images,
            "epoch_s": epoch_s,
            "train_img_s": round(train_images / epoch_s, 1),
            "prepare_s": round(figures["wall_s"] - metrics["train_seconds"], 1),
            "test_accuracy": round(metrics["accuracy"], 4),
        }
    shutil.rmtree(cache, ignore_errors=True)  # up to ~10 GB at 96k
    return figures


def _first_epoch_seconds(run: Path) -> float:
    import pandas as pd

    return float(pd.read_csv(run / "history.csv")["seconds"].iloc[0])


def _split_count(run: Path, split: str) -> int:
    import pandas as pd

    frame = pd.read_csv(run / "splits.csv", dtype=str, keep_default_na=False)
    return int((frame["split"] == split).sum())


def train_keras(tree: Path, work: Path, images: int) -> dict[str, Any] | None:
    """The tutorial's Keras training, one whole epoch over the same folder."""
    if not KERAS_PYTHON.exists():
        return None
    out = work / "keras.json"
    steps = -(-images // 32) - 2
    command = [str(KERAS_PYTHON), "-m", "benchmarks.keras_tutorials", "train"]
    command += ["--recipe", "malaria-lenet", "--data", str(tree), "--warmup", "2"]
    command += ["--steps", str(steps), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"} | {"TF_CPP_MIN_LOG_LEVEL": "2"}
    figures = measure_child(command, env, work / "keras.log")
    if figures["returncode"] == 0:
        own = json.loads(out.read_text())
        figures |= {"train_img_s": own["train_img_s"], "epoch_images": own["epoch_images"]}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8000, 32000, 96000])
    parser.add_argument("--limit-gb", type=float, default=2.5, help="for the largest size")
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "memory_scale")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memory_scale.json")
    args = parser.parse_args()
    cells = args.data / "malaria"
    per_copy = sum(1 for _ in cells.glob("*/*.png"))
    copies = {size: -(-size // per_copy) for size in args.sizes}
    pool = args.work / "pool"
    start = time.monotonic()
    written = make_pool(cells, pool, max(copies.values()))
    print(f"pool: {written} new images in {time.monotonic() - start:.0f} s", flush=True)
    limit = MemoryLimit.create(f"medsight-bench-{os.getpid()}", int(args.limit_gb * 2**30))
    rows = []
    for size in sorted(args.sizes):
        tree = args.work / f"images-{size}"
        images = size_tree(pool, tree, copies[size])
        largest = size == max(args.sizes)
        row: dict[str, Any] = {"images": images, "memory_limit_gb": None}
        if largest and limit:
            row["memory_limit_gb"] = args.limit_gb
        row |= train_medsight(tree, args.work / f"run-{size}", limit if largest else None)
        if largest and limit:
            row |= limit.figures()
        if size == min(args.sizes):
            row["keras"] = train_keras(tree, args.work / f"run-{size}", images)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if limit:
        limit.remove()
    smallest, largest = rows[0], rows[-1]
    result = {
        "command": " ".join(["python -m benchmarks.memory_scale", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": rows,
        "pss_ratio_largest_to_smallest": round(
            largest["peak_tree_pss_mb"] / smallest["peak_tree_pss_mb"], 3
        ),
        "limit_enforced": limit is not None,
        "largest_passed_under_limit": largest["returncode"] == 0 and limit is not None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
