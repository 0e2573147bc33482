"""The Python predictor (``medsight.load``): any image form in, the bundle's own answer out."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medsight
from medsight.bundle import load_bundle
from medsight.data.io import load_image
from medsight.errors import MedsightError, UnreadableImageError
from medsight.serving.classifier import ImageClassifier, Prediction


@pytest.fixture(scope="module")
def xray_file(chest_xray_dir: Path) -> Path:
    return sorted((chest_xray_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[0]


def test_every_form_of_one_image_gets_the_same_answer(xray_bundle: Path, xray_file: Path) -> None:
    model = medsight.load(xray_bundle)
    assert isinstance(model, ImageClassifier) and model.engine == "torch"
    data = xray_file.read_bytes()
    with Image.open(xray_file) as img:
        pil = img.convert("L")
    forms = [xray_file, str(xray_file), data, pil, np.asarray(pil), np.asarray(pil)[..., None]]
    answers = [model.predict(form) for form in forms]
    reference = load_bundle(xray_bundle)
    pixels = load_image(xray_file, reference.spec.image_size, reference.spec.channels)
    probs = reference.predict_proba(pixels[None])[0]
    for answer in answers:
        assert isinstance(answer, Prediction)
        assert list(answer.probabilities) == ["NORMAL", "PNEUMONIA"]
        assert answer.probabilities["PNEUMONIA"] == pytest.approx(float(probs[1]), abs=2e-3)
    first = answers[0]
    # the bundle's threshold (0.4, not 0.5) decides, as serving and predict decide
    expected = "PNEUMONIA" if first.positive_probability >= 0.4 else "NORMAL"
    assert first.decision == expected and first.threshold == 0.4
    # no domain guard in this bundle: nobody can tell, and the answer says so
    assert first.in_domain is None and first.domain_score is None
    assert "no domain check" in first.domain_warning
    assert first.to_dict()["probabilities"] == first.probabilities


def test_the_domain_check_comes_with_the_answer(
    cell_bundle: Path, malaria_subset: Path, xray_file: Path
) -> None:
    model = medsight.load(cell_bundle)
    cell = model.predict(sorted(malaria_subset.glob("*/*.png"))[1])
    xray = model.predict(xray_file)
    assert cell.in_domain is True and cell.domain_warning is None
    assert xray.in_domain is False and xray.domain_score > 1
    assert "not to be trusted" in xray.domain_warning


def test_predict_many_keeps_order_and_matches_single_answers(
    xray_bundle: Path, chest_xray_dir: Path
) -> None:
    files = sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg"))[:3]
    model = medsight.load(xray_bundle)
    many = model.predict_many(files, batch_size=2)
    singles = [model.predict(f) for f in files]
    for one, batched in zip(singles, many, strict=True):
        assert batched.probabilities == pytest.approx(one.probabilities, abs=1e-5)
    assert len({m.probabilities["NORMAL"] for m in many}) == 3  # three different images
    assert model.predict_many([]) == []
    with pytest.raises(MedsightError, match="a list of images"):
        model.predict_many(str(files[0]))


def test_sixteen_bit_and_float_arrays_are_stretched_like_dicom_pixels(xray_bundle: Path) -> None:
    ramp = np.tile(np.linspace(0, 4000, 64), (64, 1))
    model = medsight.load(xray_bundle)
    as_uint8 = model.predict(np.round(ramp / 4000 * 255).astype(np.uint8))
    for array in (ramp.astype(np.uint16), ramp.astype(np.float32)):
        assert model.predict(array).probabilities == pytest.approx(as_uint8.probabilities, abs=1e-3)


def test_bad_input_is_named(xray_bundle: Path, tmp_path: Path) -> None:
    model = medsight.load(xray_bundle)
    with pytest.raises(UnreadableImageError, match="bytes"):
        model.predict(b"not an image at all")
    missing = tmp_path / "nope.png"
    with pytest.raises(UnreadableImageError, match="nope.png"):
        model.predict(missing)
    with pytest.raises(UnreadableImageError, match="shape"):
        model.predict(np.zeros((4, 4, 4, 4), np.uint8))
    with pytest.raises(TypeError, match="give a path, bytes"):
        model.predict(12)
    with pytest.raises(MedsightError, match="not a medsight bundle"):
        medsight.load(tmp_path)


def test_explain_gives_a_map_of_the_decided_class(xray_bundle: Path, xray_file: Path) -> None:
    model = medsight.load(xray_bundle)
    found = model.explain(xray_file)
    assert found.target_class == model.predict(xray_file).decision
    assert found.heatmap.shape == (64, 64) and found.overlay.shape == (64, 64, 3)
    other = model.explain(io.BytesIO(xray_file.read_bytes()).getvalue(), target="NORMAL")
    assert other.target_class == "NORMAL"


def test_an_exported_bundle_predicts_with_onnx_runtime_alike(
    xray_bundle: Path, xray_file: Path, tmp_path: Path
) -> None:
    from medsight.serving.export import export_onnx

    folder = tmp_path / "bundle"
    shutil.copytree(xray_bundle, folder)
    export_onnx(folder)
    fast, reference = medsight.load(folder), medsight.load(folder, prefer_onnx=False)
    assert (fast.engine, reference.engine) == ("onnxruntime", "torch")
    a, b = fast.predict(xray_file), reference.predict(xray_file)
    assert a.decision == b.decision
    assert a.probabilities == pytest.approx(b.probabilities, abs=1e-4)
    assert fast.explain(xray_file).target_class == a.decision  # explanations run on PyTorch


def test_an_exported_bundle_answers_from_python_without_importing_pytorch(
    xray_bundle: Path, xray_file: Path, tmp_path: Path
) -> None:
    """PyTorch (about 500 MB and seconds per process) comes in only with the first explain."""
    import json
    import subprocess
    import sys

    from medsight.serving.export import export_onnx

    folder = Path(shutil.copytree(xray_bundle, tmp_path / "bundle"))
    export_onnx(folder)
    code = (
        "import json, sys\n"
        "import medsight\n"
        f"model = medsight.load({str(folder)!r})\n"
        f"answer = model.predict({str(xray_file)!r})\n"
        "before = 'torch' in sys.modules\n"
        f"found = model.explain({str(xray_file)!r})\n"
        "print(json.dumps([model.engine, before, 'torch' in sys.modules,\n"
        "                  answer.probabilities, answer.decision, found.target_class]))\n"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    engine, before, after, probabilities, decision, target = json.loads(child.stdout)
    assert (engine, before, after) == ("onnxruntime", False, True)
    reference = medsight.load(folder, prefer_onnx=False).predict(xray_file)
    assert probabilities == pytest.approx(reference.probabilities, abs=1e-4)
    assert decision == target == reference.decision
