"""``medsight evaluate / compare / audit`` end to end on real Kermany X-rays with a small bundle:
metrics with CIs that agree with scikit-learn, the report (rendered in Chromium) and the card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from medsight import api
from medsight.bundle import load_bundle, save_bundle
from medsight.cli import main
from medsight.models.zoo import create_model

SECTIONS = (
    "results",
    "baselines",
    "threshold",
    "calibration",
    "confusion",
    "roc",
    "worst-errors",
    "audit",
    "data",
    "not-for-clinical-use",
)


def _subset(root: Path, folder: Path, per_class: int, rename: dict[str, str] | None = None) -> Path:
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        target = root / (rename or {}).get(class_dir.name, class_dir.name)
        target.mkdir(parents=True)
        for file in sorted(class_dir.glob("*.jpeg"))[::7][:per_class]:
            (target / file.name).symlink_to(file)
    return root


@pytest.fixture(scope="module")
def kermany_test(chest_xray_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 NORMAL + 30 PNEUMONIA images of Kermany's test split."""
    return _subset(tmp_path_factory.mktemp("kermany"), chest_xray_dir / "test", 30)


@pytest.fixture(scope="module")
def evaluation(xray_bundle: Path, kermany_test: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("evaluation")
    args = ["evaluate", str(xray_bundle), "--data", str(kermany_test), "--out", str(out)]
    assert main(args) == 0
    return out


def test_every_figure_has_a_value_and_a_ci(evaluation: Path) -> None:
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["n"] == 60 and metrics["bootstrap"]["resamples"] > 0
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc", "pr_auc", "brier", "mcc"):
        figure = metrics["figures"][key]
        assert figure["value"] == metrics[key]  # older callers read the top-level number
        assert figure["ci_low"] <= figure["value"] <= figure["ci_high"], key
    assert metrics["baselines"]["majority_accuracy"] == pytest.approx(0.5)
    assert metrics["threshold"] == 0.4 and metrics["calibration"]["temperature"] == 1.5
    assert metrics["data"]["duplicates"] == {"groups": 0, "files": 0}  # files were hashed


def test_metrics_agree_with_sklearn_on_the_written_predictions(
    evaluation: Path, xray_bundle: Path
) -> None:
    metrics = json.loads((evaluation / "metrics.json").read_text())
    predictions = pd.read_csv(evaluation / "predictions.csv")
    is_pos = predictions["label"] == "PNEUMONIA"
    said_pos = predictions["prediction"] == "PNEUMONIA"
    assert (said_pos == (predictions["probability"] >= 0.4)).all()  # the stored threshold
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(is_pos, said_pos))
    assert metrics["roc_auc"] == pytest.approx(
        skm.roc_auc_score(is_pos, predictions["probability"]), abs=1e-5
    )


def test_report_and_model_card(evaluation: Path) -> None:
    html = (evaluation / "report.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert "http://" not in html and "https://" not in html  # self-contained
    for plot in ("confusion_matrix", "roc_pr", "reliability"):
        assert (evaluation / "plots" / f"{plot}.png").is_file()
    card = (evaluation / "model_card.md").read_text()
    assert "Not for clinical use" in card and "95 % CI" in card and "0.4000" in card


def test_report_renders_in_chromium_without_console_errors(evaluation: Path, browser) -> None:
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto((evaluation / "report.html").as_uri())
    for section in SECTIONS:
        assert page.locator(f"#{section}").count() == 1, section
    images = page.locator("img")
    assert images.count() >= 3
    for i in range(images.count()):  # every inline plot decoded
        assert images.nth(i).evaluate("img => img.naturalWidth") > 0
    assert "Not for clinical use" in page.inner_text("#not-for-clinical-use")
    assert errors == []
    page.close()


def test_external_data_with_other_class_names(
    xray_bundle: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    data = _subset(
        tmp_path / "data", chest_xray_dir / "test", 5, {"NORMAL": "healthy", "PNEUMONIA": "sick"}
    )
    with pytest.raises(Exception, match="--class-map"):
        api.evaluate(xray_bundle, data, tmp_path / "out")
    metrics = api.evaluate(
        xray_bundle, data, tmp_path / "out", class_map={"healthy": "NORMAL", "sick": "PNEUMONIA"}
    )
    assert metrics["n"] == 10 and metrics["counts"] == {"NORMAL": 5, "PNEUMONIA": 5}


def test_compare_prints_the_delong_p_value(
    xray_bundle: Path, kermany_test: Path, tmp_path: Path, capsys
) -> None:
    torch.manual_seed(7)
    spec = load_bundle(xray_bundle).spec
    other = save_bundle(
        tmp_path / "other", create_model(spec.model_name, 2, 3, spec.image_size), spec
    )
    code = main(
        [
            "compare",
            str(xray_bundle),
            str(other),
            "--data",
            str(kermany_test),
            "--out",
            str(tmp_path),
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and "DeLong test" in printed and "p-value = " in printed
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert 0 <= result["delong"]["p_value"] <= 1
    assert result["delong"]["auc_a"] == pytest.approx(result["a"]["roc_auc"])
    assert result["difference_b_minus_a"]["accuracy"]["p_value"] is not None


def test_audit_adds_its_section_to_an_existing_report(
    xray_bundle: Path, evaluation: Path, chest_xray_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "run"
    shutil.copytree(evaluation, out)
    second = _subset(tmp_path / "train", chest_xray_dir / "train", 15)
    first = _subset(tmp_path / "test", chest_xray_dir / "test", 15)
    code = main(
        ["audit", str(xray_bundle), "--data", str(first), "--data", str(second), "--out", str(out)]
    )
    assert code == 0 and "source probe ROC-AUC" in capsys.readouterr().out
    audit = json.loads((out / "audit.json").read_text())
    assert audit["source_probe"]["sources"] == {"test": 30, "train": 30}
    assert set(audit["occlusion"]["results"]) == {"intact", "center_masked", "border_masked"}
    html = (out / "report.html").read_text()
    assert "Source probe" in html and "Occlusion probe" in html
    assert "Shortcut audit" in (out / "model_card.md").read_text()


def test_evaluate_counts_out_of_domain_images_and_scores_the_rest_alone(
    cell_bundle: Path, malaria_subset: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    from medsight import api

    data = tmp_path / "mixed"
    for name in ("Parasitized", "Uninfected"):
        (data / name).mkdir(parents=True)
        for cell in sorted((malaria_subset / name).glob("*.png"))[1::10][:15]:
            (data / name / cell.name).symlink_to(cell.resolve())
    xrays = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:10]
    for xray in xrays:  # X-rays filed as cells: what a mixed-up folder looks like
        (data / "Uninfected" / xray.name).symlink_to(xray)
    metrics = api.evaluate(cell_bundle, data, tmp_path / "eval")
    domain = metrics["domain"]
    assert domain["n"] == 40 and domain["flagged"] >= 10
    assert metrics["out_of_domain"] == pytest.approx(domain["flagged"] / 40)
    assert domain["in_domain_figures"]["n"] == 40 - domain["flagged"]
    frame = pd.read_csv(tmp_path / "eval" / "predictions.csv", dtype={"in_domain": str})
    flagged = set(frame.loc[frame["in_domain"] == "false", "path"].map(lambda p: Path(p).name))
    assert {x.name for x in xrays} <= flagged
    report = (tmp_path / "eval" / "report.html").read_text()
    assert f"{domain['flagged']} of 40 images" in report
    assert "Domain check" in (tmp_path / "eval" / "model_card.md").read_text()
