"""The HTML report, rendered from a folder holding only metrics.json and plots/ (plus, when
there, config.yaml, skipped.csv and audit.json)."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest

from medsight.bundle import BundleSpec
from medsight.config import load_recipe, save_recipe
from medsight.evaluation.metrics import class_rows
from medsight.evaluation.multilabel import multilabel_metrics
from medsight.evaluation.report import (
    BINARY_ROWS,
    MULTICLASS_ROWS,
    MULTILABEL_ROWS,
    metric_rows,
    recipe_of,
    write_report,
)
from medsight.evaluation.summary import evaluate_predictions

BINARY = {"class_names": ["NORMAL", "PNEUMONIA"], "positive_class": "PNEUMONIA"}
MULTI = {"class_names": ["COVID", "normal", "pneumonia"], "positive_class": None}
# a 1x1 PNG: the report inlines whatever bytes plots/ holds
PIXEL = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _spec(task: dict) -> BundleSpec:
    return BundleSpec(
        model_name="malaria_lenet",
        image_size=(8, 8),
        channels=1,
        mean=(0.0,),
        std=(1.0,),
        threshold=0.375,
        threshold_rule="youden on the validation split",
        temperature=1.25,
        **task,
    )


def _metrics(task: dict, n: int = 60, seed: int = 0) -> dict:
    """A real evaluation of synthetic logits (a fresh copy: tests add keys to it)."""
    key = (tuple(task["class_names"]), n, seed)
    if key not in _EVALUATIONS:
        _EVALUATIONS[key] = json.dumps(_evaluate(task, n, seed))
    return json.loads(_EVALUATIONS[key])


_EVALUATIONS: dict[tuple, str] = {}


def _evaluate(task: dict, n: int, seed: int) -> dict:
    spec = _spec(task)
    k = len(spec.class_names)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = np.eye(k)[y] * 1.5 + rng.normal(0, 1.0, (n, k))
    return evaluate_predictions(y, logits, spec, resamples=20)


def _folder(tmp_path: Path, metrics: dict, plots: tuple[str, ...] = ()) -> Path:
    folder = tmp_path / "evaluation"
    (folder / "plots").mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    for name in plots:
        (folder / "plots" / f"{name}.png").write_bytes(PIXEL + name.encode())
    return folder


def _rows(html: str) -> list[str]:
    table = html.split('<table id="metrics-table">')[1].split("</table>")[0]
    return re.findall(r"<tr><td>([^<]+)</td>", table)


def test_binary_report_is_self_contained_with_inline_plots(tmp_path: Path) -> None:
    metrics = {**_metrics(BINARY), "split": "test"}
    plots = ("confusion_matrix", "roc_pr", "reliability", "worst_errors")
    folder = _folder(tmp_path, metrics, plots)
    path = write_report(folder)
    assert path == folder / "report.html"
    html = path.read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html
    sources = re.findall(r'<img alt="[^"]+" src="([^"]+)"', html)
    assert sources == [
        "data:image/png;base64," + base64.b64encode(PIXEL + name.encode()).decode()
        for name in ("reliability", "confusion_matrix", "roc_pr", "worst_errors")
    ]
    assert "Not for clinical use." in html
    assert _rows(html) == [label for _, label in BINARY_ROWS] + ["Images"]
    assert "<code>PNEUMONIA</code>" in html and "<strong>0.3750</strong>" in html
    assert "(youden on the validation split)" in html
    assert "Temperature 1.250" in html and "medsight, test split" in html
    assert "No wrong predictions." not in html


def test_figures_are_shown_with_their_intervals(tmp_path: Path) -> None:
    metrics = {**_metrics(BINARY), "split": "test"}
    html = write_report(_folder(tmp_path, metrics)).read_text()
    accuracy = metrics["figures"]["accuracy"]
    expected = (
        f'<td>{metrics["accuracy"]:.3f} <span class="ci">[{accuracy["ci_low"]:.3f}, '
        f"{accuracy['ci_high']:.3f}]</span></td>"
    )
    assert expected in html
    assert "20 resamples, seed" in html  # how the brackets were made


def test_multiclass_report_has_its_own_rows_and_no_threshold(tmp_path: Path) -> None:
    html = write_report(_folder(tmp_path, _metrics(MULTI))).read_text()
    by_class = [label for _, label in class_rows(MULTI["class_names"])]
    assert _rows(html) == [label for _, label in MULTICLASS_ROWS] + by_class + ["Images"]
    assert "COVID vs normal: ROC-AUC" in by_class and "pneumonia: sensitivity" in by_class
    assert "Multi-class: the most probable class is predicted." in html
    assert "Decision threshold\n<strong>" not in html
    assert "Class (one-vs-rest)" in html  # the per-class table
    assert "medsight, evaluated" in html  # no split named: the evaluated set


def test_missing_plots_say_so(tmp_path: Path) -> None:
    html = write_report(_folder(tmp_path, _metrics(MULTI))).read_text()
    assert "<img" not in html
    assert "Not drawn (needs a binary task with both classes present)." in html
    assert "No wrong predictions." in html
    assert 'id="curves"' not in html and 'id="predictions"' not in html


def test_val_and_test_columns(tmp_path: Path) -> None:
    val = _metrics(BINARY, seed=1)
    metrics = {**_metrics(BINARY), "split": "test", "val": val}
    html = write_report(_folder(tmp_path, metrics)).read_text()
    header = html.split('<table id="metrics-table">')[1].split("</tr>")[0]
    assert header.index("medsight, val split") < header.index("medsight, test split")
    assert f"<td>{val['n']}</td><td>{metrics['n']}</td>" in html


def test_an_evaluation_of_val_has_one_column(tmp_path: Path) -> None:
    metrics = {**_metrics(BINARY), "split": "val", "val": _metrics(BINARY, seed=1)}
    html = write_report(_folder(tmp_path, metrics)).read_text()
    assert html.count("medsight, val split") == 1 and "test split" not in html


@pytest.mark.parametrize(
    ("title", "stored", "expected"),
    [
        (None, None, "evaluation"),
        (None, "Kermany test set", "Kermany test set"),
        ("My run <1>", "Kermany test set", "My run &lt;1&gt;"),  # the override wins, escaped
    ],
)
def test_title(tmp_path: Path, title: str | None, stored: str | None, expected: str) -> None:
    metrics = _metrics(BINARY)
    if stored:
        metrics["title"] = stored
    html = write_report(_folder(tmp_path, metrics), title=title).read_text()
    assert f"<title>medsight report: {expected}</title>" in html
    assert f"<h1>medsight report: {expected}</h1>" in html


def test_recipe_of_reads_config_yaml(tmp_path: Path) -> None:
    assert recipe_of(tmp_path) is None
    save_recipe(load_recipe("malaria", ["train.epochs=3"]), tmp_path / "config.yaml")
    recipe = recipe_of(tmp_path)
    assert recipe is not None and recipe.name == "malaria" and recipe.train.epochs == 3


def test_a_run_folder_shows_its_recipe_and_published_figures(tmp_path: Path) -> None:
    metrics = {**_metrics(BINARY), "split": "test", "best_epoch": 2, "train_seconds": 12.5}
    folder = _folder(tmp_path, metrics)
    recipe = load_recipe("malaria")
    save_recipe(recipe, folder / "config.yaml")
    html = write_report(folder).read_text()
    assert "<title>medsight report: malaria</title>" in html  # the recipe names the report
    assert 'id="config"' in html and "Best epoch 2 of 8" in html
    assert "<th>Published</th>" in html and "<td>0.957</td>" in html
    assert recipe.published.claim in html


def test_an_evaluation_folder_has_no_configuration(tmp_path: Path) -> None:
    html = write_report(_folder(tmp_path, _metrics(BINARY))).read_text()
    assert 'id="config"' not in html and "<th>Published</th>" not in html


def _audit(warnings: list[str]) -> dict:
    results = {
        "intact": {"accuracy": 0.91, "roc_auc": 0.95},
        "center_masked": {"accuracy": 0.55, "roc_auc": 0.61},
        "borders_masked": {"accuracy": 0.88, "roc_auc": 0.93},
    }
    return {
        "source_probe": {
            "auc": None,
            "reason": "no image sources: give a CSV with a 'source' column or several --data",
            "sources": {},
            "class_by_source": [],
        },
        "occlusion": {"description": "The central box spans 50 %", "results": results},
        "warnings": warnings,
        "data": "/data/kermany/test",
        "split": "test",
        "n": 60,
    }


def test_no_audit_yet(tmp_path: Path) -> None:
    html = write_report(_folder(tmp_path, _metrics(BINARY))).read_text()
    section = html.split('id="audit"')[1]
    assert "Not run. <code>medsight audit" in section


@pytest.mark.parametrize("warnings", [[], ["the model can decide without the anatomy"]])
def test_audit_section_when_audit_json_exists(tmp_path: Path, warnings: list[str]) -> None:
    folder = _folder(tmp_path, _metrics(BINARY))
    (folder / "audit.json").write_text(json.dumps(_audit(warnings)))
    section = write_report(folder).read_text().split('id="audit"')[1]
    assert "Not run. <code>" not in section
    assert "Run on 60 images of <code>/data/kermany/test</code> (split test)." in section
    assert "Not run: no image sources" in section  # the source probe's reason
    assert "<td>center masked</td><td>0.550</td><td>0.610</td>" in section
    if warnings:
        assert f'<p class="warning">{warnings[0]}</p>' in section
        assert "No shortcut found" not in section
    else:
        assert '<p class="ok">No shortcut found by these probes.</p>' in section


def test_skipped_files_are_listed(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _metrics(BINARY))
    (folder / "skipped.csv").write_text(
        "path,reason\n/data/a.png,empty file (0 bytes)\n/data/b.jpg,truncated <data>\n"
    )
    html = write_report(folder).read_text()
    assert "Skipped files (2)" in html
    assert "<tr><td>/data/a.png</td><td>empty file (0 bytes)</td></tr>" in html
    assert "<td>truncated &lt;data&gt;</td>" in html  # escaped


@pytest.mark.parametrize("content", [None, ""])
def test_no_or_an_empty_skipped_csv(tmp_path: Path, content: str | None) -> None:
    folder = _folder(tmp_path, _metrics(BINARY))
    if content is not None:
        (folder / "skipped.csv").write_text(content)
    html = write_report(folder).read_text()
    assert "Skipped files (0)" in html and "None: every image was readable." in html


@pytest.mark.parametrize(
    ("leakage", "css"),
    [
        ("no patient and no identical image appears in more than one split", "ok"),
        ("2 patient(s) in more than one split", "warning"),
        (None, "warning"),  # not checked is not a clean bill
    ],
)
def test_data_section_and_leakage(tmp_path: Path, leakage: str | None, css: str) -> None:
    data = {
        "source": "folder /data/kermany",
        "splits": [{"split": "test", "counts": [3, 4], "total": 7, "patients": 5}],
        "class_names": ["NORMAL", "PNEUMONIA"],
        "n_images": 7,
        "n_patients": 5,
        "duplicates": {"groups": 1, "files": 2},
    }
    metrics = {**_metrics(BINARY), "data": data, "leakage": leakage, "split_by": "patient"}
    html = write_report(_folder(tmp_path, metrics)).read_text()
    assert "<code>folder /data/kermany</code>. 7 images, 5 patient" in html
    assert "<tr><td>test</td><td>3</td><td>4</td><td>7</td><td>5</td></tr>" in html
    assert "1 group(s),\n2 files" in html
    assert f'<p class="{css}">Leakage check: {leakage or "not checked"}.</p>' in html


def test_a_split_warning_is_shown(tmp_path: Path) -> None:
    metrics = {**_metrics(BINARY), "split_warning": "split by IMAGE: results inflated"}
    html = write_report(_folder(tmp_path, metrics)).read_text()
    assert "<strong>Warning:</strong> split by IMAGE: results inflated</p>" in html


def test_rewriting_replaces_the_report(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _metrics(BINARY))
    write_report(folder, title="the first title")
    write_report(folder, title="the second title")
    html = (folder / "report.html").read_text()
    assert "the second title" in html and "the first title" not in html
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json", "plots", "report.html"]


@pytest.mark.parametrize(
    ("split_by", "without", "split", "css"),
    [
        ("patient", 0, "patient", "ok"),
        ("image", 7, "image: split by image for 7 of 7 images (no patient id)", "warning"),
        (
            "mixed",
            2,
            "mixed: split by image for 2 of 7 images (no patient id), by patient for the rest",
            "warning",
        ),
    ],
)
def test_the_data_section_never_claims_a_patient_split_not_made(
    tmp_path: Path, split_by: str, without: int, split: str, css: str
) -> None:
    data = {
        "source": "folder /data/cells",
        "splits": [{"split": "test", "counts": [3, 4], "total": 7, "patients": 7 - without}],
        "class_names": ["NORMAL", "PNEUMONIA"],
        "n_images": 7,
        "n_patients": 7 - without,
        "patient_ids": {"filename": 7 - without} if without < 7 else {},
        "images_without_patient": without,
    }
    leakage = "no patient and no identical image appears in more than one split"
    metrics = {
        **_metrics(BINARY),
        "data": data,
        "leakage": leakage,
        "split_by": split_by,
        "images_without_patient": without,
    }
    html = write_report(_folder(tmp_path, metrics)).read_text()
    assert f"Split by <strong>{split}</strong>." in html
    assert f"Patient ids: {7 - without} of 7 images" in html
    assert f'<p class="{css}">Leakage check:' in html  # never a clean bill without a patient split


@pytest.mark.parametrize(
    ("seen", "css", "phrase"),
    [
        (
            {"seen_in_training": 5, "seen": {"by": {"content": 3, "patient": 2}, "excluded": 0}},
            "warning",
            "5 of 60 images were in the model's training or validation data\n"
            "(3 identical files, 2 other images of patients it saw): these figures are optimistic.",
        ),
        (
            {"seen_in_training": 0, "seen": {"by": {"content": 0, "patient": 0}, "excluded": 7}},
            "ok",
            "none of these 60 images was in the model's training or validation data",
        ),
        (
            {"seen_in_training": None, "seen": {"by": None, "excluded": 0}},
            "warning",
            "unknown. This bundle records no training images",
        ),
    ],
    ids=["seen", "excluded", "unknown"],
)
def test_what_the_model_had_seen_is_shown(
    tmp_path: Path, seen: dict, css: str, phrase: str
) -> None:
    html = write_report(_folder(tmp_path, {**_metrics(BINARY), **seen})).read_text()
    paragraph = html.split(f'<p class="{css}" id="seen-in-training">')[1].split("</p>")[0]
    assert phrase in paragraph
    assert ("7 image(s) it had seen were left out" in paragraph) == (css == "ok")


def test_a_training_run_has_no_seen_paragraph(tmp_path: Path) -> None:
    html = write_report(_folder(tmp_path, {**_metrics(BINARY), "split": "test"})).read_text()
    assert 'id="seen-in-training"' not in html


def _multilabel(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (80, 2))
    targets = (rng.random(z.shape) < 1 / (1 + np.exp(-z))).astype(float)
    targets[::5, 1] = np.nan
    probs = 1 / (1 + np.exp(-z))
    return multilabel_metrics(targets, probs, [0.4, 0.6], ["Effusion", "Nodule"], resamples=20)


def test_multilabel_report_has_rows_per_label_and_no_binary_rows(tmp_path: Path) -> None:
    metrics = {**_multilabel(), "split": "test", "val": _multilabel(seed=1)}
    html = write_report(_folder(tmp_path, metrics)).read_text()
    rows = _rows(html)
    assert rows == [label for _, label in metric_rows(metrics)] + ["Images"]
    assert rows[: len(MULTILABEL_ROWS)] == [label for _, label in MULTILABEL_ROWS]
    assert {"Effusion: ROC-AUC", "Nodule: threshold", "Nodule: sensitivity"} <= set(rows)
    assert "Accuracy" not in rows and "Sensitivity (recall, disease)" not in rows
    table = html.split('<table id="metrics-table">')[1].split("</table>")[0]
    nodule = table.split("<td>Nodule: ROC-AUC</td>")[1].split("</tr>")[0]
    for m in (metrics["val"], metrics):  # one column per split, each with its interval
        roc = m["per_label"]["Nodule"]["roc_auc"]
        assert f'{roc["value"]:.3f} <span class="ci">[{roc["ci_low"]:.3f}, ' in nodule
    threshold = table.split("<td>Nodule: threshold</td>")[1].split("</tr>")[0]
    assert threshold.count("0.600") == 2
    prevalence = table.split("<td>Effusion: prevalence")[1].split("</tr>")[0]
    effusion = metrics["per_label"]["Effusion"]
    assert f"{effusion['positives'] / effusion['n']:.3f}" in prevalence
