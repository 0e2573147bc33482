"""The Markdown entry that ``run.py`` appends to ``benchmarks/RESULTS.md`` for one run."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _n(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _verdict(target: dict[str, Any]) -> str:
    return "met" if target["met"] else "**missed**"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _training(recipes: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in recipes.items():
        k, m = r["keras"]["train"], r["medsight"]["train"]
        rows.append(
            [
                f"`{name}` {r['tutorial']}",
                _n(k["train_img_s"]),
                _n(m["train_img_s"]),
                f"{_x(r['ratios']['train'])} {_verdict(r['targets']['train'])}",
                _n(k["train_first_epoch_img_s"]),
                _n(m["train_first_epoch_img_s"]),
                f"{_x(r['ratios']['train_first_epoch'])}",
                f"{_n(k['peak_tree_pss_mb'], 0)} / {_n(m['peak_tree_pss_mb'], 0)}",
            ]
        )
    header = ["recipe", "Keras img/s", "medsight img/s", "ratio (target >= 1.5x)"]
    header += ["Keras 1st epoch", "medsight 1st epoch incl. decode", "ratio", "peak MB K / m"]
    return _table(header, rows)


def _prediction(recipes: dict[str, Any]) -> list[str]:
    rows = []
    for name, r in recipes.items():
        k, m, t = r["keras"]["predict"], r["medsight"]["predict"], r["medsight"]["predict_torch"]
        rows.append(
            [
                f"`{name}`",
                _n(k["predict_img_s"]),
                _n(m["predict_img_s"]),
                f"{_x(r['ratios']['predict'])} {_verdict(r['targets']['predict'])}",
                _n(t["predict_img_s"]),
                _x(r["ratios"]["predict_torch"]),
                f"{_n(k['peak_tree_pss_mb'], 0)} / {_n(m['peak_tree_pss_mb'], 0)}",
            ]
        )
    header = ["recipe", "Keras img/s", "medsight ONNX img/s", "ratio (target >= 2x)"]
    header += ["medsight PyTorch img/s", "ratio", "peak MB K / m"]
    return _table(header, rows)


def _efficiency(recipes: dict[str, Any], peak: float) -> list[str]:
    rows = [
        [
            f"`{name}`",
            _n(r["flops"]["train_gflop_per_image"], 3),
            f"{_n(r['flops']['keras_gflops'])} ({r['flops']['keras_percent_of_peak']} %)",
            f"{_n(r['flops']['medsight_gflops'])} ({r['flops']['medsight_percent_of_peak']} %)",
            f"{_n(r['flops']['model_only_gflops'])} ({r['flops']['model_only_percent_of_peak']} %)",
        ]
        for name, r in recipes.items()
    ]
    header = ["recipe", "GFLOP / image (train step)", "Keras GFLOP/s (% of peak)"]
    header += ["medsight GFLOP/s", f"model step alone (peak {peak:g})"]
    return _table(header, rows)


def _serving(serving: dict[str, Any]) -> list[str]:
    rows = []
    for name, s in serving.items():
        for level in s["medsight"]:
            k, m = s["flask_keras"][level], s["medsight"][level]
            rows.append(
                [
                    f"`{name}`",
                    level,
                    f"{_n(k['p50_ms'])} / {_n(k['p95_ms'])} / {_n(k['p99_ms'])}",
                    _n(k["throughput_rps"]),
                    f"{_n(m['p50_ms'])} / {_n(m['p95_ms'])} / {_n(m['p99_ms'])}",
                    _n(m["throughput_rps"]),
                    _x(s["ratios"]["throughput"][level]),
                ]
            )
    header = ["model", "concurrency", "Flask+Keras p50/p95/p99 ms", "req/s"]
    header += ["medsight p50/p95/p99 ms", "req/s", "throughput ratio"]
    return _table(header, rows)


def _time_to_accuracy(tta: dict[str, Any]) -> list[str]:
    rows = []
    for name, t in tta.items():
        curve = ", ".join(
            f"{e['epoch']}: {e['accuracy']:.3f} @ {e['elapsed_s']:.0f} s" for e in t["epochs"]
        )
        reached = (
            f"{t['time_to_target_s']:.0f} s (epoch {t['epoch_reached']})"
            if t["reached"]
            else f"**not reached** (best {t['best_epoch_accuracy']:.3f})"
        )
        rows.append(
            [
                f"`{name}`",
                f"{t['target_accuracy']:.1%} on {t['held_out_images']}",
                reached,
                f"{t['final_bundle_accuracy']:.3f}",
                f"{t['total_wall_s']:.0f} s",
                curve,
            ]
        )
        fastai = t.get("fastai", {})
        if "epochs" in fastai:  # the same task trained by fastai, scored on the same rows
            curve = ", ".join(
                f"{e['epoch']}: {e['accuracy']:.3f} @ {e['elapsed_s']:.0f} s"
                for e in fastai["epochs"]
            )
            reached = (
                f"{fastai['time_to_target_s']:.0f} s"
                if fastai.get("time_to_target_s") is not None
                else f"**not reached** (best {fastai['best_epoch_accuracy']:.3f})"
            )
            whole = f"{fastai['total_wall_s']:.0f} s" if "total_wall_s" in fastai else "?"
            rows.append([f"`{name}`: fastai", "same", reached, "–", whole, curve])
    header = ["recipe", "target (held-out images)", "wall time to target", "final (bundle)"]
    header += ["whole run", "epoch: accuracy @ elapsed"]
    return _table(header, rows)


def _line(name: str, verdict: dict[str, Any]) -> str:
    state = "met" if verdict["met"] else "**missed**"
    why = f" Why: {verdict['why']}." if "why" in verdict else ""
    return f"- {name} ({verdict['target']}): {state}, {verdict['by']}.{why}"


def _targets(results: dict[str, Any]) -> list[str]:
    lines = [
        _line(f"`{name}` {key}", verdict)
        for name, recipe in results["recipes"].items()
        for key, verdict in recipe["targets"].items()
    ]
    lines += [
        _line(f"serving `{name}` {key}", verdict)
        for name, serving in results["serving"].items()
        for key, verdict in serving["targets"].items()
    ]
    for name, t in results["time_to_accuracy"].items():
        state = (
            f"met, {t['time_to_target_s']:.0f} s"
            if t["reached"]
            else f"**not reached**, best epoch {t['best_epoch_accuracy']:.3f}"
        )
        lines.append(f"- `{name}` time to {t['target_accuracy']:.1%} held-out accuracy: {state}.")
        fastai = t.get("fastai", {})
        if "versus_fastai" in t:
            verdict = t["versus_fastai"]
            state = "met" if verdict["met"] else "**missed**"
            lines.append(f"- `{name}` ahead of fastai: {state}, {verdict['by']}.")
        elif fastai:
            why = fastai.get("skipped") or f"failed: {fastai.get('failed', '?')[-300:]}"
            lines.append(f"- `{name}` against fastai: not measured ({why}).")
    return lines


def entry(results: dict[str, Any]) -> str:
    """One run as Markdown: heading, context, and a table per measurement."""
    machine, versions = results["machine"], results["versions"]
    title = f"## {results['date']} — {results['mode']} mode"
    if results["label"]:
        title += f" — {results['label']}"
    summary = results["summary"]
    lines = [
        title,
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores ({machine['flags']}), "
        f"{machine['ram_gib']} GiB RAM; measured fp32 peak {machine['peak_gflops']:g} GFLOP/s "
        f"({', '.join(f'{k} {v:g}' for k, v in machine['peak_detail'].items())})",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "- Images per data set: "
        + ", ".join(f"{k} {v:,}" for k, v in results["settings"]["images"].items())
        + f"; allocator: {results['settings']['allocator']}",
        f"- Targets met: {summary['targets_met']}, missed: {summary['targets_missed']}",
        "",
        "Training (images/s; steady state after warm-up; the first epoch counts reading and "
        "decoding every file; peak memory: PSS of the process tree):",
        "",
        *_training(results["recipes"]),
        "",
        "Prediction (image files to probabilities):",
        "",
        *_prediction(results["recipes"]),
        "",
        "Hardware efficiency (training step FLOPs x measured images/s):",
        "",
        *_efficiency(results["recipes"], machine["peak_gflops"]),
        "",
    ]
    if results["serving"]:
        seconds = results["settings"]["serving_seconds"]
        lines += [f"Serving ({seconds:g} s per level, load from a second process):", ""]
        lines += [*_serving(results["serving"]), ""]
        lines += [
            f"- `{name}` served with {s.get('engine', '?')}: compute floor at concurrency 8 "
            + (f"{_n(s['compute_floor_ms'])} ms" if s.get("compute_floor_ms") else "not measured")
            + " (8 x one image's model call, timed by the server at concurrency 1)"
            for name, s in results["serving"].items()
        ] + [""]
    if results["time_to_accuracy"]:
        lines += ["Time to accuracy (`medsight train`, first run, held-out test split):", ""]
        lines += [*_time_to_accuracy(results["time_to_accuracy"]), ""]
    lines += ["Targets (a missed one says by how much and why):", "", *_targets(results), ""]
    return "\n".join(lines) + "\n"


def append(path: Path, text: str) -> None:
    """Append an entry, creating the file with its heading the first time."""
    if not path.is_file():
        path.write_text(
            "# Benchmark results\n\nmedsight against the tutorials' own Keras/TensorFlow code, "
            "same files, same cores, one run per entry (`python -m benchmarks.run`). "
            "Newest last.\n\n"
        )
    with open(path, "a") as out:
        out.write(text)
