"""The whole benchmark in one run: ``python -m benchmarks.run --quick`` (minutes) or ``--full``.

For every tutorial recipe both sides train and predict on the same files, one after the
other, each phase in its own process (so peak memory is that phase's own): the tutorials' Keras
code in ``benchmarks/.venv-keras`` and medsight's code paths in medsight's environment, with the
fast allocator the ``medsight`` command uses. Then serving, the hardware efficiency and the time
to accuracy, where fastai (``benchmarks/.venv-fastai``, when it exists) trains the same backbone
on the same patients after each medsight run. Writes ``results/<date>-<mode>.json``, appends a
Markdown entry to ``RESULTS.md`` and prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from benchmarks import markdown, report, serving
from benchmarks.time_to_accuracy import fastai_arguments, time_to_accuracy, versus_fastai
from benchmarks.workloads import MODES, QUICK_IMAGES, WORKLOADS, build_tree, image_files, spread

REPO = Path(__file__).resolve().parents[1]
KERAS_PYTHON = REPO / "benchmarks" / ".venv-keras" / "bin" / "python"
FASTAI_PYTHON = REPO / "benchmarks" / ".venv-fastai" / "bin" / "python"
FASTAI_TIME_SHARE = 0.6  # fastai stops after the epoch ending past this share of the timeout
FLOPS = "benchmarks.flops"
SERVING_RECIPES = ("covid-vgg16", "malaria-lenet")  # tutorial (d)'s model, and a small one
LEVELS = [1, 8, 32]  # concurrent clients
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "serving_seconds": 2.0,
        "flops_seconds": 0.5,
        "timeout_s": 1800,
        "label": "harness check (small subsets, few steps: timings not representative)",
        "tta": {"malaria": ["data.limit=200", "train.epochs=2"]},
        "fastai": ["--lr-find-iters", "10"],  # the docs' 100 would take most of a quick run
    },
    "full": {
        "serving_seconds": 30.0,
        "flops_seconds": 3.0,
        "timeout_s": 7200,
        "label": "",
        "tta": {"malaria": [], "pneumonia": []},
        "fastai": [],
    },
}


def environments() -> dict[str, dict[str, str]]:
    """medsight's side as the ``medsight`` command runs itself (fast allocator, passive OpenMP
    threads); Keras' and fastai's sides as their docs' readers run them (system allocator)."""
    from medsight.allocator import fast_environment

    base = {**os.environ, "HF_HUB_OFFLINE": "1", "MEDSIGHT_PROGRESS": "json"}
    keras = {k: v for k, v in base.items() if k not in ("LD_PRELOAD", "MEDSIGHT_ALLOCATOR_ACTIVE")}
    fastai = dict(keras)
    keras["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return {"medsight": fast_environment(base), "keras": keras, "fastai": fastai}


class Sides:
    """Runs one phase of one side in its own process and returns the JSON it wrote."""

    MODULES = {
        "medsight": "benchmarks.medsight_side",
        "keras": "benchmarks.keras_tutorials",
        "fastai": "benchmarks.fastai_side",
    }

    def __init__(
        self, work: Path, keras_python: Path, timeout_s: float, fastai_python: Path | None = None
    ):
        self.work, self.timeout_s, self.envs = work, timeout_s, environments()
        self.pythons = {"medsight": Path(sys.executable), "keras": keras_python}
        if fastai_python is not None:
            self.pythons["fastai"] = fastai_python
        for folder in ("json", "logs"):
            (work / folder).mkdir(parents=True, exist_ok=True)

    def run(self, side: str, tag: str, *argv: Any, module: str | None = None) -> dict[str, Any]:
        """``python -m MODULE ARGV --out JSON`` (MODULE: the side's, unless given)."""
        out = self.work / "json" / f"{side}-{tag}.json"
        log = self.work / "logs" / f"{side}-{tag}.log"
        out.unlink(missing_ok=True)
        command = [str(self.pythons[side]), "-m", module or self.MODULES[side]]
        command += [str(a) for a in argv] + ["--out", str(out)]
        with open(log, "w") as handle:
            done = subprocess.run(
                command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                env=self.envs[side],
                cwd=REPO,
                timeout=self.timeout_s,
                check=False,
            )
        if done.returncode != 0 or not out.is_file():
            tail = "\n".join(log.read_text().splitlines()[-15:])
            raise RuntimeError(f"{shlex.join(command)} failed ({done.returncode}):\n{tail}")
        return json.loads(out.read_text())


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM and the vector extensions that decide which kernels run."""
    info = Path("/proc/cpuinfo").read_text()
    model = next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if "model name" in ln), ""
    )
    flags = next(
        (ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []
    )
    memory = next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if "MemTotal" in ln)
    return {
        "cpu": model or platform.processor(),
        "cores": os.cpu_count(),
        "ram_gib": round(int(memory.split()[1]) / 2**20, 1),
        "flags": " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags),
    }


def measure_recipe(sides: Sides, name: str, tree: Path, mode: str) -> dict[str, Any]:
    """Both sides' training and prediction figures for one recipe, on the files in ``tree``."""
    workload = WORKLOADS[name]
    warmup, steps = workload.steps[mode]
    scratch, bundle = sides.work / "scratch" / name, sides.work / "bundles" / name
    shutil.rmtree(bundle, ignore_errors=True)
    recipe = ["--recipe", name, "--data", tree]
    timing = [*recipe, "--warmup", warmup, "--steps", steps]
    keras_train = sides.run("keras", f"train-{name}", "train", *timing)
    ours_train = sides.run("medsight", f"train-{name}", "train", *timing, "--work", scratch)
    export = sides.run("medsight", f"bundle-{name}", "bundle", *recipe, "--bundle", bundle)
    keras_predict = sides.run("keras", f"predict-{name}", "predict", *recipe)
    predict = ["predict", "--bundle", bundle, "--data", tree, "--work", scratch, "--engine"]
    engines = ("onnxruntime", "torch")
    ours = {e: sides.run("medsight", f"predict-{name}-{e}", *predict, e) for e in engines}
    return {
        "tutorial": workload.tutorial,
        "dataset": workload.dataset,
        "images": len(image_files(tree)),
        "keras": {"train": keras_train, "predict": keras_predict},
        "medsight": {
            "train": ours_train,
            "predict": ours["onnxruntime"],
            "predict_torch": ours["torch"],
            "export_s": export["export_s"],
        },
    }


def measure_serving(
    args: argparse.Namespace, sides: Sides, trees: dict[str, Path], costs: dict[str, Any]
) -> dict[str, Any]:
    """Both servers for each serving model among the chosen recipes."""
    found = {}
    for name in (r for r in SERVING_RECIPES if r in args.recipes):
        images = spread(image_files(trees[WORKLOADS[name].dataset]), 16)
        seconds = SETTINGS[args.mode]["serving_seconds"]
        measured = serving.compare(
            name,
            sides.work / "bundles" / name,
            images,
            LEVELS,
            seconds,
            args.keras_python,
            sides.envs,
            sides.work / "logs",
        )
        forward = costs[name]["forward_gflop_per_image"]
        found[name] = {**measured, "forward_gflop_per_image": forward}
    return found


def fastai_skipped(args: argparse.Namespace) -> str | None:
    """Why the fastai side does not run (None: it does)."""
    if "fastai" in args.skip:
        return "--skip fastai"
    if args.fastai_python is None:
        return f"{FASTAI_PYTHON.relative_to(REPO)} not found: run benchmarks/setup_fastai.sh"
    return None


def compare_with_fastai(
    sides: Sides, name: str, ours: dict[str, Any], extra: list[str] | None = None
) -> dict[str, Any]:
    """fastai on the same task as medsight's time-to-accuracy run ``ours`` (``extra``: more
    arguments for ``fastai_side``), and the verdict."""
    argv = fastai_arguments(
        Path(ours["run"]), ours["target_accuracy"], sides.work / f"tta-{name}-fastai"
    )
    argv += ["--time-limit", round(FASTAI_TIME_SHARE * sides.timeout_s), *(extra or [])]
    try:
        theirs = sides.run("fastai", f"tta-{name}", *argv, "--start", time.time())
    except (RuntimeError, subprocess.TimeoutExpired) as exc:  # keep the run's other figures
        return {"fastai": {"failed": str(exc)[-2000:]}}
    return {"fastai": theirs, "versus_fastai": versus_fastai(ours, theirs)}


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Every measurement of one mode, assessed (ratios, targets, summary)."""
    settings = SETTINGS[args.mode]
    work = args.work.resolve()
    sides = Sides(work, args.keras_python, settings["timeout_s"], args.fastai_python)
    limits = QUICK_IMAGES if args.mode == "quick" else {}
    data = args.data.resolve()
    datasets = sorted({WORKLOADS[name].dataset for name in args.recipes})
    trees = {d: build_tree(d, data, work / "data" / d, limits.get(d)) for d in datasets}
    seconds = ["--seconds", settings["flops_seconds"]]
    peaks = [sides.run("medsight", "peak-before", "peak", *seconds, module=FLOPS)]
    costs = sides.run("medsight", "models", "models", *args.recipes, *seconds, module=FLOPS)
    recipes = {}
    for name in args.recipes:
        recipe = measure_recipe(sides, name, trees[WORKLOADS[name].dataset], args.mode)
        recipes[name] = {**recipe, "cost": costs[name]}
    served = {} if "serving" in args.skip else measure_serving(args, sides, trees, costs)
    tta, skip_fastai = {}, fastai_skipped(args)
    for name, overrides in ({} if "tta" in args.skip else settings["tta"]).items():
        found = time_to_accuracy(name, data, work, sides.envs["medsight"], overrides)
        tta[name] = {**found, "overrides": overrides}
        if skip_fastai:
            tta[name]["fastai"] = {"skipped": skip_fastai}
        else:
            tta[name] |= compare_with_fastai(sides, name, found, settings["fastai"])
    # the peak again at the end: the best of both is the machine's, should either be disturbed
    peaks.append(sides.run("medsight", "peak-after", "peak", *seconds, module=FLOPS))
    peak = max(peaks, key=lambda p: p["peak_gflops"])
    versions = {"python": platform.python_version()}
    versions |= sides.run("medsight", "versions", "versions")
    versions |= sides.run("keras", "versions", "versions")
    versions |= next(
        (t["fastai"]["versions"] for t in tta.values() if "versions" in t["fastai"]), {}
    )
    allocator = sides.envs["medsight"].get("MEDSIGHT_ALLOCATOR_ACTIVE", "system malloc")
    results = {
        "schema": report.SCHEMA,
        "mode": args.mode,
        "label": "; ".join(filter(None, [settings["label"], args.note])),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command,
        "machine": {
            **machine(),
            "peak_gflops": peak["peak_gflops"],
            "peak_detail": {k: peak[k] for k in ("mm_mkl", "conv1x1_onednn")},
            "peak_runs_gflops": [p["peak_gflops"] for p in peaks],
            "torch_threads": peak["threads"],
        },
        "versions": versions,
        "settings": {
            "images": {d: len(image_files(t)) for d, t in trees.items()},
            "serving_seconds": settings["serving_seconds"],
            "serving_levels": LEVELS,
            "allocator": f"medsight: {allocator}; Keras: system malloc",
        },
        "recipes": recipes,
        "serving": served,
        "time_to_accuracy": tta,
    }
    return report.assess(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    for name in MODES:
        mode.add_argument(f"--{name}", dest="mode", action="store_const", const=name)
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--results-md", type=Path, default=REPO / "benchmarks" / "RESULTS.md")
    parser.add_argument("--work", type=Path, help="scratch folder (benchmarks/.work/MODE)")
    parser.add_argument("--recipes", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--skip", nargs="*", choices=["serving", "tta", "fastai"], default=[])
    parser.add_argument("--keras-python", type=Path, default=KERAS_PYTHON)
    parser.add_argument(
        "--fastai-python",
        type=Path,
        default=FASTAI_PYTHON if FASTAI_PYTHON.is_file() else None,
        help="fastai's environment for the time to accuracy (default: benchmarks/.venv-fastai, "
        "when it exists; without it the fastai side is skipped and the reason recorded)",
    )
    parser.add_argument("--note", default="", help="added to the entry's label")
    args = parser.parse_args()
    if not args.keras_python.is_file():
        parser.error(f"{args.keras_python} not found: run benchmarks/setup_keras.sh first")
    if args.fastai_python is not None and not args.fastai_python.is_file():
        parser.error(f"{args.fastai_python} not found: run benchmarks/setup_fastai.sh first")
    args.work = args.work or REPO / "benchmarks" / ".work" / args.mode
    python = (
        os.path.relpath(sys.executable)
        if sys.executable.startswith(os.getcwd())
        else sys.executable
    )
    command = shlex.join([python, "-m", "benchmarks.run", *sys.argv[1:]])
    results = run(args, command)
    missing = report.missing_fields(results)
    if missing:
        raise SystemExit(f"results incomplete, missing: {', '.join(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{datetime.now():%Y-%m-%dT%H%M}-{args.mode}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    markdown.append(args.results_md, markdown.entry(results))
    summary = {
        "json": str(path),
        "results_md": str(args.results_md),
        "summary": results["summary"],
        "ratios": {name: r["ratios"] for name, r in results["recipes"].items()},
        "serving_throughput_ratios": {
            name: s["ratios"]["throughput"] for name, s in results["serving"].items()
        },
        "versus_fastai": {
            name: t["versus_fastai"] if "versus_fastai" in t else t["fastai"]
            for name, t in results["time_to_accuracy"].items()
        },
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
