"""The benchmark harness on tiny real inputs: both sides' measurements (the Keras side only where
``benchmarks/.venv-keras`` exists), the JSON with every field, ratios and target verdicts
computed from the measured numbers, and the Markdown entry. No assertion depends on speed."""

from __future__ import annotations

import copy
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import markdown, report
from benchmarks.flops import model_costs, peak_gflops
from benchmarks.medsight_side import make_bundle, measure_predict, measure_train
from benchmarks.run import environments, machine
from benchmarks.time_to_accuracy import versus_fastai
from benchmarks.workloads import WORKLOADS, build_tree, image_files, spread
from medsight.training.device import loader_workers

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def medsight_figures(
    malaria_tree: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """medsight's side of malaria-lenet on 24 real cells: training, bundle, both engines."""
    work = tmp_path_factory.mktemp("medsight-side")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDSIGHT_CACHE", "off")  # restored afterwards: measure_train sets its own
        train = measure_train("malaria-lenet", malaria_tree, warmup=1, steps=1, work=work)
    bundle = work / "bundle"
    export = make_bundle("malaria-lenet", malaria_tree, bundle)
    predict = {
        engine: measure_predict(bundle, malaria_tree, engine, work / engine)
        for engine in ("onnxruntime", "torch")
    }
    return {
        "train": train,
        "predict": predict["onnxruntime"],
        "predict_torch": predict["torch"],
        "export_s": export["export_s"],
        "bundle": bundle,
    }


def test_medsight_training_figures(medsight_figures: dict[str, Any]) -> None:
    train = medsight_figures["train"]
    assert set(report.REQUIRED["train"] + report.REQUIRED["medsight_train"]) <= set(train)
    assert train["train_img_s"] > 0 and train["train_first_epoch_img_s"] > 0
    assert train["decoded_images"] == 24  # every image is decoded up front, whatever its split
    assert 0 < train["epoch_images"] < 24  # the first epoch is the train split only
    assert train["first_epoch_s"] > train["prepare_s"] > 0
    assert train["batch_size"] == 32
    assert train["num_workers"] == loader_workers("auto", on_gpu=False)  # as training chose
    assert train["peak_tree_pss_mb"] > 0


@pytest.mark.parametrize(
    ("key", "engine"), [("predict", "onnxruntime"), ("predict_torch", "torch")]
)
def test_medsight_prediction_figures(medsight_figures: dict[str, Any], key: str, engine: str):
    predict = medsight_figures[key]
    assert set(report.REQUIRED["predict"] + report.REQUIRED["medsight_predict"]) <= set(predict)
    assert predict["engine"] == engine
    assert predict["predict_images"] == 24
    # img/s comes from the unrounded time; predict_s is rounded to 1 ms
    seconds = predict["predict_s"]
    assert 24 / (seconds + 0.0005) - 0.01 <= predict["predict_img_s"] <= 24 / (seconds - 0.0005)
    assert (medsight_figures["bundle"] / "model.onnx").is_file()


def test_flops_and_peak() -> None:
    costs = model_costs("malaria-lenet", seconds=0.01)
    # forward + backward of a training step is about three forward passes (the first conv
    # needs no input gradient)
    assert 2 < costs["train_gflop_per_image"] / costs["forward_gflop_per_image"] <= 3
    assert costs["model_only_train_img_s"] > 0 and costs["batch_size"] == 32
    peak = peak_gflops(seconds=0.2)
    assert peak["peak_gflops"] == max(peak["mm_mkl"], peak["conv1x1_onednn"]) > 0


def keras_stub(train_img_s: float, first_epoch_img_s: float, predict_img_s: float) -> dict:
    """Figures in the shape the Keras side writes (checked against the real side below)."""
    return {
        "train": {
            "train_img_s": train_img_s,
            "train_first_epoch_img_s": first_epoch_img_s,
            "prepare_s": 0.01,
            "first_epoch_s": 1.0,
            "peak_rss_mb": 700.0,
            "peak_tree_pss_mb": 690.0,
            "batch_size": 32,
        },
        "predict": {
            "predict_img_s": predict_img_s,
            "predict_images": 24,
            "predict_s": 24 / predict_img_s,
            "peak_rss_mb": 650.0,
            "peak_tree_pss_mb": 640.0,
            "batch_size": 32,
        },
    }


def level(rps: float, p99: float) -> dict[str, Any]:
    return {
        "concurrency": 8,
        "requests": int(rps * 3),
        "errors": 0,
        "duration_s": 3.0,
        "throughput_rps": rps,
        "p50_ms": p99 / 2,
        "p95_ms": p99 * 0.9,
        "p99_ms": p99,
        "mean_ms": p99 / 2,
    }


def results_with(medsight: dict[str, Any], keras: dict[str, Any]) -> dict[str, Any]:
    """A complete results document around measured figures, as run.py assembles it."""
    ours = {k: medsight[k] for k in ("train", "predict", "predict_torch", "export_s")}
    return {
        "schema": report.SCHEMA,
        "mode": "quick",
        "label": "test",
        "date": "2026-11-21T10:00:00+00:00",
        "command": ".venv/bin/python -m benchmarks.run --quick",
        "machine": {
            **machine(),
            "peak_gflops": 400.0,
            "peak_detail": {"mm_mkl": 200.0, "conv1x1_onednn": 400.0},
            "peak_runs_gflops": [400.0, 380.0],
        },
        "versions": {
            "python": "3.11",
            "medsight": "0.1.0",
            "torch": "2.14.1",
            "onnxruntime": "1.31.1",
            "tensorflow": "2.21.0",
            "keras": "3.15.1",
        },
        "settings": {
            "images": {"malaria": 24},
            "serving_seconds": 3.0,
            "serving_levels": [1, 8],
            "allocator": "test",
        },
        "recipes": {
            "malaria-lenet": {
                "tutorial": "(a)",
                "dataset": "malaria",
                "images": 24,
                "keras": keras,
                "medsight": ours,
                "cost": {
                    "train_gflop_per_image": 0.07,
                    "forward_gflop_per_image": 0.0257,
                    "model_only_train_img_s": 1000.0,
                    "batch_size": 32,
                },
            }
        },
        "serving": {
            "covid-vgg16": {
                "medsight": {
                    "1": {**level(10.0, 120.0), "server_stats": {"model_ms": {"1": 80.0}}},
                    "8": level(12.0, 700.0),
                },
                "flask_keras": {"1": level(5.0, 250.0), "8": level(5.0, 1800.0)},
                "forward_gflop_per_image": 30.7,
                "engine": "onnxruntime",
            }
        },
        "time_to_accuracy": {
            "malaria": {
                "target_accuracy": 0.95,
                "held_out_images": 795,
                "epochs": [{"epoch": 1, "elapsed_s": 80.0, "accuracy": 0.96}],
                "reached": True,
                "time_to_target_s": 80.0,
                "epoch_reached": 1,
                "best_epoch_accuracy": 0.96,
                "final_bundle_accuracy": 0.97,
                "total_wall_s": 700.0,
            }
        },
    }


@pytest.fixture()
def assessed(medsight_figures: dict[str, Any]) -> dict[str, Any]:
    ours = medsight_figures
    keras = keras_stub(  # medsight 1.2x and 1.1x: missed; 3x: met
        train_img_s=ours["train"]["train_img_s"] / 1.2,
        first_epoch_img_s=ours["train"]["train_first_epoch_img_s"] / 1.1,
        predict_img_s=ours["predict"]["predict_img_s"] / 3,
    )
    return report.assess(results_with(medsight_figures, keras))


def test_results_have_every_field_and_are_valid_json(assessed: dict[str, Any]) -> None:
    assert report.missing_fields(assessed) == []
    again = json.loads(json.dumps(assessed, allow_nan=False))
    assert (
        again["recipes"]["malaria-lenet"]["ratios"]
        == assessed["recipes"]["malaria-lenet"]["ratios"]
    )


def test_missing_fields_are_named(assessed: dict[str, Any]) -> None:
    broken = copy.deepcopy(assessed)
    del broken["recipes"]["malaria-lenet"]["medsight"]["train"]["train_img_s"]
    del broken["serving"]["covid-vgg16"]["flask_keras"]["8"]["p99_ms"]
    del broken["versions"]["keras"]
    assert report.missing_fields(broken) == [
        "versions.keras",
        "recipes.malaria-lenet.medsight.train.train_img_s",
        "serving.covid-vgg16.flask_keras.8.p99_ms",
    ]


def test_ratios_come_from_the_measured_numbers(assessed: dict[str, Any]) -> None:
    recipe = assessed["recipes"]["malaria-lenet"]
    ours, theirs = recipe["medsight"], recipe["keras"]
    ratios = recipe["ratios"]

    def expected(a: float, b: float) -> float:
        return round(a / b, 3)

    assert ratios["train"] == expected(ours["train"]["train_img_s"], theirs["train"]["train_img_s"])
    assert ratios["predict"] == expected(
        ours["predict"]["predict_img_s"], theirs["predict"]["predict_img_s"]
    )
    assert ratios["predict_torch"] == expected(
        ours["predict_torch"]["predict_img_s"], theirs["predict"]["predict_img_s"]
    )
    assert ratios["train_memory"] == expected(
        ours["train"]["peak_tree_pss_mb"], theirs["train"]["peak_tree_pss_mb"]
    )
    flops = recipe["flops"]
    assert flops["medsight_gflops"] == round(0.07 * ours["train"]["train_img_s"], 1)
    assert flops["model_only_percent_of_peak"] == round(100 * 0.07 * 1000 / 400, 1)
    serving = assessed["serving"]["covid-vgg16"]["ratios"]
    assert serving["throughput"] == {"1": 2.0, "8": 2.4}
    assert serving["p99"]["8"] == round(700 / 1800, 3)


def test_targets_say_by_how_much_and_why(assessed: dict[str, Any]) -> None:
    targets = assessed["recipes"]["malaria-lenet"]["targets"]
    train, predict = targets["train"], targets["predict"]
    assert train["met"] is False and train["value"] == pytest.approx(1.2, abs=0.01)
    assert "short of the target" in train["by"] and train["why"]
    first_epoch = targets["train_first_epoch"]
    assert first_epoch["met"] is False and first_epoch["value"] == pytest.approx(1.1, abs=0.01)
    assert "hashing and decoding all 24 files up front" in first_epoch["why"]
    assert predict["met"] is True and "why" not in predict
    serving = assessed["serving"]["covid-vgg16"]["targets"]
    assert serving["throughput_at_8"]["met"] is True  # 2.4x >= 2x
    # the floor: 8 x the 80 ms the server timed for one image at concurrency 1
    assert assessed["serving"]["covid-vgg16"]["compute_floor_ms"] == 640.0
    p99 = serving["p99_over_floor_at_8"]
    assert p99["met"] is True and p99["value"] == round(700 / 640, 3)  # 1.094 <= 1.25
    summary = assessed["summary"]
    assert summary["targets_met"] + summary["targets_missed"] == 3 + 2 + 1
    assert any(line.startswith("malaria-lenet train:") for line in summary["missed"])


@pytest.mark.parametrize(
    ("forward", "flask_rps", "key", "why"),
    [
        (30.7, 8.0, "throughput_at_8", "unreachable with this model: 2x Flask + Keras's 8 req/s"),
        (0.0257, 5.0, "throughput_at_8", "medsight served 12 req/s; 8 x 0.0257 GFLOP"),
        (0.0257, 5.0, "p99_over_floor_at_8", "p99 700 ms against a floor of 8 x 50 ms (onnx"),
    ],
)
def test_why_serving_compares_with_the_compute_bound(
    forward: float, flask_rps: float, key: str, why: str
) -> None:
    serving = {
        "medsight": {"1": level(20.0, 120.0), "8": level(12.0, 700.0)},
        "flask_keras": {"8": level(flask_rps, 1800.0)},
        "forward_gflop_per_image": forward,
        "compute_floor_ms": 400.0,
        "engine": "onnxruntime",
    }
    assert report.why_serving(serving, 400.0, key).startswith(why)


@pytest.mark.parametrize(
    ("server_stats", "floor", "met"),
    [({"model_ms": {"1": 100.0, "4": 250.0}}, 800.0, False), ({}, None, False)],
)
def test_the_p99_target_is_against_the_servers_own_compute_floor(
    server_stats: dict, floor: float | None, met: bool
) -> None:
    """p99 1,100 ms at concurrency 8 against 8 x 100 ms is 1.375x the floor: missed; without
    the server's own model time there is no floor and the target is not measured."""
    serving = {
        "medsight": {"1": {**level(9.0, 260.0), "server_stats": server_stats}, "8": level(9, 1100)},
        "flask_keras": {"1": level(5.0, 250.0), "8": level(5.0, 1800.0)},
        "forward_gflop_per_image": 1.0,
        "engine": "onnxruntime-int8",
    }
    verdict = report.assess_serving(serving, 400.0)["targets"]["p99_over_floor_at_8"]
    assert serving["compute_floor_ms"] == floor and verdict["met"] is met
    if floor:
        assert verdict["value"] == 1.375 and "against a floor of 8 x 100 ms" in verdict["why"]
        # the lone request's p50 (130 ms) less its model call: time spent outside the model
        assert "a lone request took 130 ms (p50 at concurrency 1), 30 ms of it" in verdict["why"]
    else:
        assert verdict["by"] == "not measured"


@pytest.mark.parametrize(
    ("value", "threshold", "higher", "met", "by"),
    [
        (1.8, 1.5, True, True, "1.8x, 0.3x (20%) above the target"),
        (1.2, 1.5, True, False, "1.2x, 0.3x (20%) short of the target"),
        (45.0, 60.0, False, True, "45x, 15x (25%) under the target"),
        (None, 2.0, True, False, "not measured"),
    ],
)
def test_check(value, threshold: float, higher: bool, met: bool, by: str) -> None:
    verdict = report.check(value, threshold, higher, "x")
    assert verdict["met"] is met and verdict["by"] == by


def test_ratio_of_missing_or_zero_figures_is_none() -> None:
    assert report.ratio(3.0, 2.0) == 1.5
    assert report.ratio(None, 2.0) is None and report.ratio(3.0, 0.0) is None


def test_markdown_entry(assessed: dict[str, Any], tmp_path: Path) -> None:
    text = markdown.entry(assessed)
    assert text.startswith("## 2026-11-21T10:00:00+00:00 — quick mode — test")
    assert "`.venv/bin/python -m benchmarks.run --quick`" in text
    assert "tensorflow 2.21.0" in text and "keras 3.15.1" in text
    ratio = assessed["recipes"]["malaria-lenet"]["ratios"]["train"]
    assert f"| {ratio:.2f}x **missed** |" in text
    assert "| `covid-vgg16` | 8 |" in text
    assert "`malaria` time to 95.0% held-out accuracy: met, 80 s." in text
    results_md = tmp_path / "RESULTS.md"
    markdown.append(results_md, text)
    markdown.append(results_md, text)
    written = results_md.read_text()
    assert written.count("# Benchmark results") == 1 and written.count(text) == 2


def test_workload_tree_links_the_same_files_for_both_sides(malaria_tree: Path) -> None:
    files = image_files(malaria_tree)
    assert len(files) == 24 and all(f.is_symlink() for f in files)
    assert {f.parent.name for f in files} == {"Parasitized", "Uninfected"}
    # the original names (patients) are kept, and the links point at the real files
    assert all(f.name == f.resolve().name for f in files)
    assert build_tree("malaria", Path("/nonexistent"), malaria_tree, 24) == malaria_tree
    assert spread(list(range(10)), 4) == [0, 2, 5, 7] and spread([1, 2], None) == [1, 2]
    assert {w.dataset for w in WORKLOADS.values()} == {"malaria", "covid", "chest_xray"}


def test_environments_preload_the_allocator_only_for_medsight() -> None:
    from medsight.allocator import find_allocator

    envs = environments()
    assert "LD_PRELOAD" not in envs["keras"]
    assert envs["medsight"]["OMP_WAIT_POLICY"] == os.environ.get("OMP_WAIT_POLICY", "PASSIVE")
    library = find_allocator()
    if library:
        assert envs["medsight"]["MEDSIGHT_ALLOCATOR_ACTIVE"] == library
        assert library in envs["medsight"]["LD_PRELOAD"]


def run_keras(keras_python: Path, out: Path, *argv: str) -> dict[str, Any]:
    env = {**environments()["keras"]}
    subprocess.run(
        [str(keras_python), "-m", "benchmarks.keras_tutorials", *argv, "--out", str(out)],
        check=True,
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
    )
    return json.loads(out.read_text())


def test_keras_side_writes_the_same_fields(
    keras_python: Path, malaria_tree: Path, tmp_path: Path
) -> None:
    recipe = ["--recipe", "malaria-lenet", "--data", str(malaria_tree)]
    train = run_keras(keras_python, tmp_path / "t.json", "train", *recipe, "--steps", "1")
    predict = run_keras(keras_python, tmp_path / "p.json", "predict", *recipe)
    assert set(report.REQUIRED["train"]) <= set(train) and train["epoch_images"] == 24
    assert set(report.REQUIRED["predict"]) <= set(predict) and predict["predict_images"] == 24
    assert train["train_img_s"] > 0 and predict["predict_img_s"] > 0


def test_the_fastai_comparison_is_a_target_and_in_the_entry(assessed: dict[str, Any]) -> None:
    """A time-to-accuracy run with fastai beside it: the verdict counts among the targets and
    the entry shows fastai's epochs beside medsight's; a skipped fastai side says why."""
    tta = assessed["time_to_accuracy"]["malaria"]
    tta["last_epoch_accuracy"] = 0.96
    fastai = {
        "target_accuracy": 0.95,
        "epochs": [
            {"epoch": 1, "elapsed_s": 150.0, "accuracy": 0.93},
            {"epoch": 2, "elapsed_s": 260.0, "accuracy": 0.955},
        ],
        "time_to_target_s": 260.0,
        "best_epoch_accuracy": 0.955,
        "last_epoch_accuracy": 0.955,
        "total_wall_s": 270.0,
    }
    tta["fastai"], tta["versus_fastai"] = fastai, versus_fastai(tta, fastai)
    before = assessed["summary"]["targets_met"]
    assert report.summarize(assessed)["targets_met"] == before + 1
    text = markdown.entry(assessed)
    assert "| `malaria`: fastai | same | 260 s |" in text
    assert "- `malaria` ahead of fastai: met, time to target: medsight 80 s vs fastai 260 s" in text
    tta["fastai"] = {"skipped": "--skip fastai"}
    del tta["versus_fastai"]
    text = markdown.entry(assessed)
    assert "- `malaria` against fastai: not measured (--skip fastai)." in text
