"""``medsight evaluate``, ``compare`` and ``audit`` as a user types them: exit codes and the
lines they print, on a small untrained bundle and real Kermany test X-rays."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pytest

from medsight.cli import main

PER_CLASS = 6
OCCLUSION_ROWS = ("intact", "center_masked", "border_masked")


def _copy_tree(chest_xray_dir: Path, root: Path, offset: int) -> Path:
    """``PER_CLASS`` real test images per class (every 11th, from ``offset``) in class folders."""
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        files = sorted((chest_xray_dir / "test" / cls).glob("*.jpeg"))[offset::11][:PER_CLASS]
        for file in files:
            shutil.copy(file, root / cls / file.name)
    return root


@pytest.fixture(scope="module")
def xrays(chest_xray_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _copy_tree(chest_xray_dir, tmp_path_factory.mktemp("xrays") / "test", 0)


@pytest.fixture(scope="module")
def evaluated(xray_bundle: Path, xrays: Path, tmp_path_factory: pytest.TempPathFactory):
    """One ``medsight evaluate`` run: (exit code, printed lines, output folder)."""
    out = tmp_path_factory.mktemp("evaluated") / "eval"
    stdout = io.StringIO()  # capsys is function-scoped
    with contextlib.redirect_stdout(stdout):
        code = main(
            [
                "evaluate",
                str(xray_bundle),
                "--data",
                str(xrays),
                "--out",
                str(out),
                "--bootstrap",
                "20",
            ]
        )
    return code, stdout.getvalue().splitlines(), out


def test_evaluate_prints_the_figures_with_their_cis(evaluated) -> None:
    code, lines, out = evaluated
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == 2 * PER_CLASS and metrics["bootstrap"]["resamples"] == 20
    assert lines[0] == f"{2 * PER_CLASS} images"
    assert lines[-2] == "seen in training: unknown"  # the fixture bundle records nothing
    assert lines[-1] == f"report: {out / 'report.html'}"
    assert (out / "report.html").is_file() and (out / "predictions.csv").is_file()
    printed = {}
    for line in lines[1:-2]:
        match = re.fullmatch(r"(\w+) +(-?\d\.\d{3})(?:  \[(-?\d\.\d{3}), (-?\d\.\d{3})\])?", line)
        assert match, line
        printed[match[1]] = match.groups()[1:]
    shown = {k: v for k, v in metrics["figures"].items() if v["value"] is not None}
    assert set(printed) == set(shown)
    assert {"accuracy", "sensitivity", "specificity", "roc_auc"} <= set(printed)
    for key, (value, low, high) in printed.items():
        figure = shown[key]
        assert value == f"{figure['value']:.3f}", key
        if figure["ci_low"] is None:
            assert low is None, key
        else:
            assert (low, high) == (f"{figure['ci_low']:.3f}", f"{figure['ci_high']:.3f}"), key
    assert printed["accuracy"][1] is not None  # the headline figure has its interval


def test_evaluate_names_its_columns_aligned(evaluated) -> None:
    _, lines, _ = evaluated
    figure_lines = lines[1:-2]
    assert all(line[18] == " " and line[19] != " " for line in figure_lines)  # {key:<18}


def test_evaluate_accepts_the_run_directory_holding_the_bundle(
    xray_bundle: Path, xrays: Path, evaluated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(xray_bundle, run / "bundle")
    code = main(
        [
            "evaluate",
            str(run),
            "--data",
            str(xrays),
            "--out",
            str(tmp_path / "e"),
            "--bootstrap",
            "20",
        ]
    )
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    _, bundle_lines, _ = evaluated
    assert lines[:-1] == bundle_lines[:-1]  # the same model, the same figures
    assert lines[-1] == f"report: {tmp_path / 'e' / 'report.html'}"


def _bundle_that_saw(xray_bundle: Path, files: list[Path], folder: Path) -> Path:
    """The fixture bundle's model and spec, recording ``files`` as its training images."""
    from medsight.bundle import TrainingImages, load_bundle, save_bundle
    from medsight.data.io import content_sha256

    bundle = load_bundle(xray_bundle)
    record = TrainingImages.record([content_sha256(f) for f in files], [])
    return save_bundle(folder, bundle.model, bundle.spec, training_images=record)


@pytest.mark.parametrize(("flag", "n", "seen"), [([], 12, "2"), (["--exclude-seen"], 10, "0")])
def test_evaluate_says_how_many_images_the_model_saw_and_can_leave_them_out(
    xray_bundle: Path,
    xrays: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    flag: list[str],
    n: int,
    seen: str,
) -> None:
    trained = sorted((xrays / "NORMAL").iterdir())[:2]
    bundle = _bundle_that_saw(xray_bundle, trained, tmp_path / "bundle")
    out = tmp_path / "eval"
    args = ["evaluate", str(bundle), "--data", str(xrays), "--out", str(out), "--bootstrap", "20"]
    assert main([*args, *flag]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{n} images" and lines[-2] == f"seen in training: {seen}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] == n and metrics["seen"]["excluded"] == (2 if flag else 0)


def test_exclude_seen_with_a_bundle_that_records_nothing_is_one_error_line(
    xray_bundle: Path, xrays: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code = main(
        ["evaluate", str(xray_bundle), "--data", str(xrays), "--out", str(out), "--exclude-seen"]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and not out.exists()
    (line,) = captured.err.splitlines()
    assert line.startswith("error: --exclude-seen: ") and "records no training images" in line


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            ["--class-map", "NORMAL"],
            "error: --class-map 'NORMAL': use DATA_CLASS=MODEL_CLASS pairs",
        ),
        (["--class-map", "NORMAL=,PNEUMONIA=PNEUMONIA"], "error: --class-map 'NORMAL=,"),
        (
            ["--class-map", "NORMAL=HEALTHY"],
            "error: class map targets ['HEALTHY'] are not classes of the model",
        ),
        (["--split", "test"], "no images in split 'test' (splits present: [])"),
    ],
    ids=["no-equals", "empty-target", "unknown-target", "missing-split"],
)
def test_bad_data_options_are_exit_code_2_and_one_error_line(
    xray_bundle: Path,
    xrays: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: list[str],
    message: str,
) -> None:
    out = tmp_path / "eval"
    code = main(["evaluate", str(xray_bundle), "--data", str(xrays), "--out", str(out), *option])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert captured.out == "" and not out.exists()  # nothing scored, nothing written


def test_class_map_and_drop_unknown_classes_for_another_sites_data(
    xray_bundle: Path, xrays: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site"
    shutil.copytree(xrays / "NORMAL", site / "healthy")
    shutil.copytree(xrays / "PNEUMONIA", site / "sick")
    shutil.copytree(xrays / "NORMAL", site / "COVID")
    out = tmp_path / "e"
    args = ["evaluate", str(xray_bundle), "--data", str(site), "--out", str(out)]
    args += ["--bootstrap", "20"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "classes ['COVID', 'healthy', 'sick'] are not known" in err
    assert "--class-map DATA=MODEL" in err and "--drop-unknown-classes" in err
    mapped = [*args, "--class-map", " healthy = NORMAL ,sick=PNEUMONIA"]
    assert main(mapped) == 2
    assert "classes ['COVID'] are not known" in capsys.readouterr().err
    assert main([*mapped, "--drop-unknown-classes"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{2 * PER_CLASS} images"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["class_map"] == {"healthy": "NORMAL", "sick": "PNEUMONIA"}
    assert metrics["counts"] == {"NORMAL": PER_CLASS, "PNEUMONIA": PER_CLASS}


def test_compare_a_bundle_with_itself_finds_no_difference(
    xray_bundle: Path, xrays: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            str(xray_bundle),
            str(xray_bundle),
            "--data",
            str(xrays),
            "--bootstrap",
            "20",
            "--out",
            str(out),
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[0] == f"{2 * PER_CLASS} images; differences are B - A (95 % CI, bootstrap p-value)"
    result = json.loads((out / "comparison.json").read_text())
    assert result["n"] == 2 * PER_CLASS and result["a"] == result["b"]
    assert lines[1] == "seen in training: A unknown, B unknown"  # records nothing: not 0
    rows = lines[2:-1]
    assert rows and len(rows) == sum(
        1
        for d in result["difference_b_minus_a"].values()
        if d["value"] is not None and d["ci_low"] is not None
    )
    for row in rows:
        match = re.fullmatch(
            r"(\w+) +A (\d\.\d{3})  B (\d\.\d{3})  diff ([+-]\d\.\d{3}) "
            r"\[([+-]\d\.\d{3}), ([+-]\d\.\d{3})\] p=(\S+)",
            row,
        )
        assert match, row
        assert match[2] == match[3] and match.group(4, 5, 6) == ("+0.000",) * 3, row
        assert float(match[7]) == 1.0, row
    assert any(row.startswith("accuracy ") for row in rows)
    delong = result["delong"]
    assert delong["z"] == 0.0 and delong["p_value"] == 1.0
    assert lines[-1] == (
        f"DeLong test: AUC A {delong['auc_a']:.3f}, B {delong['auc_a']:.3f}, z = 0.000, p-value = 1"
    )


def test_compare_without_out_writes_nothing(
    xray_bundle: Path, xrays: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["compare", str(xray_bundle), str(xray_bundle), "--data", str(xrays)]
    assert main([*args, "--bootstrap", "20"]) == 0
    assert "DeLong test" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def _audit(bundle: Path, data: list[Path], out: Path) -> tuple[int, list[str]]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        args = ["audit", str(bundle), *(a for d in data for a in ("--data", str(d)))]
        code = main([*args, "--out", str(out)])
    return code, stdout.getvalue().splitlines()


def test_audit_with_two_data_folders_prints_both_probes(
    xray_bundle: Path, xrays: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    other = _copy_tree(chest_xray_dir, tmp_path / "other", 5)
    out = tmp_path / "audit"
    code, lines = _audit(xray_bundle, [xrays, other], out)
    assert code == 0
    audit = json.loads((out / "audit.json").read_text())
    probe = audit["source_probe"]
    assert probe["sources"] == {"other": 2 * PER_CLASS, "test": 2 * PER_CLASS}
    if probe.get("auc") is not None:
        assert lines[0] == f"source probe ROC-AUC {probe['auc']:.3f} over 2 sources"
    else:
        assert lines[0] == f"source probe not run: {probe['reason']}"
    rows = audit["occlusion"]["results"]
    assert list(rows) == list(OCCLUSION_ROWS)
    for line, name in zip(lines[1:4], OCCLUSION_ROWS, strict=True):
        auc = "n/a" if rows[name]["roc_auc"] is None else f"{rows[name]['roc_auc']:.3f}"
        assert line == f"{name:<14} accuracy {rows[name]['accuracy']:.3f}  ROC-AUC {auc}"
    assert lines[4] == "seen in training: unknown"
    assert lines[5:-1] == [f"WARNING: {w}" for w in audit["warnings"]]
    assert lines[-1] == f"report: {out / 'report.html'}"
    # a new folder gets a full evaluation first, of both sources together
    assert json.loads((out / "metrics.json").read_text())["n"] == 4 * PER_CLASS
    assert "Shortcut audit" in (out / "model_card.md").read_text()


def test_audit_of_one_folder_says_why_the_source_probe_did_not_run(
    xray_bundle: Path, xrays: Path, evaluated, tmp_path: Path
) -> None:
    out = Path(shutil.copytree(evaluated[2], tmp_path / "audit"))
    before = (out / "metrics.json").read_text()
    code, lines = _audit(xray_bundle, [xrays], out)
    assert code == 0
    assert (out / "metrics.json").read_text() == before  # added to the existing evaluation
    assert lines[0] == (
        "source probe not run: no image sources: give a CSV with a 'source' column or "
        "several --data"
    )
    assert [line.split()[0] for line in lines[1:4]] == list(OCCLUSION_ROWS)


def test_audit_tells_apart_two_sources_whose_folders_share_a_name(
    xray_bundle: Path, xrays: Path, evaluated, chest_xray_dir: Path, tmp_path: Path
) -> None:
    first = shutil.copytree(xrays, tmp_path / "siteA" / "test")
    second = _copy_tree(chest_xray_dir, tmp_path / "siteB" / "test", 5)
    out = Path(shutil.copytree(evaluated[2], tmp_path / "audit"))
    code, lines = _audit(xray_bundle, [first, second], out)
    assert code == 0
    sources = json.loads((out / "audit.json").read_text())["source_probe"]["sources"]
    assert len(sources) == 2, sources
