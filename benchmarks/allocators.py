"""Memory allocators side by side on a recipe's training step (one process per setting).

Each setting is an environment for a fresh interpreter (``LD_PRELOAD``, ``GLIBC_TUNABLES``,
an allocator's own options): the child builds the recipe's model as training does (random
weights, channels_last), runs warm-up and timed steps on random tensors and reports images/s,
peak RSS, minor page faults per step and which allocator library it really had mapped
(``/proc/self/maps``). Rounds interleave the settings so that a busy machine's load falls on all
of them alike; the table gives the median of the rounds and its ratio to glibc's default.

``--train DATA`` also times a short ``medsight train`` per setting (the command's own re-exec
is told the setting through ``MEDSIGHT_ALLOCATOR``; its ``metrics.json`` says what ran).

    python -m benchmarks.allocators --recipe pneumonia-cnn --steps 150 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from medsight import allocator


def settings(extra: list[str]) -> dict[str, dict[str, str]]:
    """Name -> environment changes: glibc as it is and tuned as medsight tunes it, the wheel's
    allocator (as medsight preloads it, and with its defaults), and the settings given as
    ``NAME=VAR=VALUE;VAR=VALUE`` (another library's ``LD_PRELOAD``, other tunables)."""
    found = {"glibc": {}, "glibc tuned": {"GLIBC_TUNABLES": allocator.GLIBC_TUNED}}
    library = allocator.wheel_allocator()
    if library:
        options = allocator.OPTIONS.get(Path(library).name, {})
        found["mimalloc (wheel, as shipped)"] = {"LD_PRELOAD": library, **options}
        if options:
            found["mimalloc (wheel, its defaults)"] = {"LD_PRELOAD": library}
    for item in extra:
        name, _, changes = item.partition("=")
        pairs = [pair.partition("=") for pair in changes.split(";")]
        if not all(key.isidentifier() and sep for key, sep, _ in pairs):
            raise SystemExit(f"--setting {item!r}: expected NAME=VAR=VALUE[;VAR=VALUE...]")
        found[name] = {key: value for key, _, value in pairs}
    return found


def mapped_allocators() -> list[str]:
    """Allocator libraries this process has mapped (what LD_PRELOAD really loaded)."""
    names = ("malloc", "tcmalloc")
    maps = Path("/proc/self/maps").read_text().splitlines()
    paths = {line.split()[-1] for line in maps if "/" in line}
    return sorted(p for p in paths if any(n in Path(p).name for n in names))


def worker(recipe_name: str, warmup: int, steps: int) -> dict[str, Any]:
    """The recipe's training step on random data, timed in this process."""
    import torch

    from benchmarks.medsight_side import bench_recipe
    from medsight.training.model import build_model
    from medsight.training.module import Classifier, make_optimizer

    recipe = bench_recipe(recipe_name)
    model, _ = build_model(recipe, ["negative", "positive"])
    module = Classifier(model, recipe.train).to(memory_format=torch.channels_last)
    batch = recipe.train.batch_size
    x = torch.rand(batch, recipe.data.channels, *recipe.data.image_size)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 2, (batch,))
    optimizer = make_optimizer(module.parameters(), recipe.train)
    module.train()

    def step() -> None:
        optimizer.zero_grad()
        module.loss(module(x), y).backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu = os.times()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    after = os.times()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    busy = (after.user - cpu.user) + (after.system - cpu.system)
    return {
        "img_s": round(steps * batch / seconds, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "minor_faults_per_step": round((usage.ru_minflt - faults) / steps),
        "system_cpu_share": round((after.system - cpu.system) / busy, 3) if busy else 0.0,
        "mapped": mapped_allocators(),
        "threads": torch.get_num_threads(),
    }


def run_worker(changes: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **changes}
    for key in ("LD_PRELOAD", "GLIBC_TUNABLES", "MEDSIGHT_ALLOCATOR_ACTIVE"):
        if key not in changes:
            env.pop(key, None)
    command = [sys.executable, "-m", "benchmarks.allocators", "--worker", "--recipe", args.recipe]
    command += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"worker failed ({changes}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_train(changes: dict[str, str], args: argparse.Namespace) -> dict[str, Any]:
    """A short ``medsight train`` with this setting: wall seconds and what metrics.json says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSIGHT_ALLOCATOR")}
    env.pop("LD_PRELOAD", None)
    env.pop("GLIBC_TUNABLES", None)
    env["MEDSIGHT_ALLOCATOR"] = changes.get("LD_PRELOAD", "glibc" if changes else "system")
    env.update({k: v for k, v in changes.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES")})
    out = Path(tempfile.mkdtemp(prefix="alloc-train-"))
    command = [sys.executable, "-m", "medsight", "train", "--recipe", args.recipe]
    command += ["--data", args.train, "--out", str(out), "--epochs", "1", *args.train_overrides]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"train failed ({changes}):\n{done.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    return {"train_wall_s": round(wall, 1), "allocator": metrics.get("allocator")}


def table(results: dict[str, list[dict[str, Any]]], key: str, better: str) -> list[str]:
    base = statistics.median(r[key] for r in results["glibc"])
    lines = [f"| setting | {key} (median) | runs | ratio to glibc ({better}) |", "| --- " * 4 + "|"]
    for name, runs in results.items():
        value = statistics.median(r[key] for r in runs)
        each = ", ".join(str(r[key]) for r in runs)
        lines.append(f"| {name} | {value:g} | {each} | {value / base:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="pneumonia-cnn")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE[;VAR=VALUE...]",
        help="another setting, e.g. 'jemalloc=LD_PRELOAD=/path/libjemalloc.so.2'",
    )
    parser.add_argument("--only", nargs="*", help="run only these settings")
    parser.add_argument("--train", metavar="DATA", help="also time a 1-epoch medsight train")
    parser.add_argument("--train-overrides", nargs="*", default=["data.limit=600"])
    parser.add_argument("--out", help="JSON file for all runs")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.recipe, args.warmup, args.steps)))
        return
    chosen = settings(args.setting)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only or k == "glibc"}
    step_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    train_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in chosen}
    for round_ in range(args.rounds):
        for name, changes in chosen.items():
            result = run_worker(changes, args)
            step_runs[name].append(result)
            print(f"round {round_ + 1} {name}: {result}", file=sys.stderr, flush=True)
            if args.train:
                trained = run_train(changes, args)
                train_runs[name].append(trained)
                print(f"round {round_ + 1} {name}: {trained}", file=sys.stderr, flush=True)
    print(f"{args.recipe} training step, {args.steps} timed steps, {args.rounds} rounds\n")
    print("\n".join(table(step_runs, "img_s", "higher is better")) + "\n")
    print("\n".join(table(step_runs, "peak_rss_mb", "lower is better")) + "\n")
    print("\n".join(table(step_runs, "minor_faults_per_step", "lower is better")) + "\n")
    if args.train:
        print("\n".join(table(train_runs, "train_wall_s", "lower is better")) + "\n")
        for name, runs in train_runs.items():
            print(f"- {name}: metrics.json allocator = {runs[0]['allocator']!r}")
    for name, runs in step_runs.items():
        print(f"- {name}: mapped {runs[0]['mapped'] or 'glibc only'}; env {chosen[name]}")
    if args.out:
        Path(args.out).write_text(json.dumps({"steps": step_runs, "train": train_runs}, indent=2))


if __name__ == "__main__":
    main()
