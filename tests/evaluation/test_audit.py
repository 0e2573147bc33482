"""The shortcut audit flags a planted shortcut on real images and leaves a clean model alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from medsight.bundle import Bundle, BundleSpec
from medsight.data.dataset import decode_images
from medsight.data.sources import ImageTable, load_table
from medsight.evaluation.audit import audit_scored, coinciding_sources, mask
from medsight.models.zoo import create_model

SIZE = (64, 64)


@pytest.fixture(scope="module")
def cells(malaria_dir: Path) -> tuple[ImageTable, np.ndarray]:
    """600 real malaria cells (300 per class, spread over patients) at 64 x 64."""
    table = load_table(malaria_dir)
    frame = pd.concat(
        [table.frame[table.frame["label"] == c].iloc[::10][:300] for c in table.class_names]
    ).reset_index(drop=True)
    table = ImageTable(frame, table.class_names, table.source)
    pixels, failures = decode_images(list(frame["path"]), SIZE, 3)
    assert not failures
    return table, pixels


def _plant_mark(pixels: np.ndarray, where: np.ndarray) -> np.ndarray:
    """A bright square in the top-left corner (a 'hospital mark') on the chosen images."""
    out = pixels.copy()
    out[where, 2:10, 2:10] = 255
    return out


def _train(pixels: np.ndarray, labels: np.ndarray, classes: list[str]) -> Bundle:
    torch.manual_seed(0)
    model = create_model("malaria_lenet", 2, 3, SIZE)
    optimiser = torch.optim.Adam(model.parameters(), 1e-3)
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(labels)
    for _ in range(15):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 32):
            batch = order[start : start + 32]
            optimiser.zero_grad()
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=classes,
        positive_class=classes[0],
        image_size=SIZE,
        channels=3,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
    )
    return Bundle(model.eval(), spec)


def _halves(table: ImageTable) -> tuple[np.ndarray, np.ndarray]:
    train = np.arange(len(table)) % 2 == 0
    return train, ~train


def test_occlusion_probe_flags_a_corner_mark_only_on_one_class(cells) -> None:
    table, pixels = cells
    marked = _plant_mark(pixels, table.labels == 0)  # every Parasitized cell carries the mark
    train, test = _halves(table)
    bundle = _train(marked[train], table.labels[train], table.class_names)
    audit = audit_scored(bundle, table.select(test), marked[test], None)
    results = audit["occlusion"]["results"]
    assert results["center_masked"]["roc_auc"] > 0.95  # the mark survives the centre mask
    assert results["border_masked"]["accuracy"] < 0.7  # hiding the corner hides the 'disease'
    assert any("centre of the image masked" in w for w in audit["warnings"])


def test_a_clean_model_is_not_flagged(cells) -> None:
    table, pixels = cells
    train, test = _halves(table)
    bundle = _train(pixels[train], table.labels[train], table.class_names)
    sources = pd.Series(np.where(np.arange(test.sum()) % 3 == 0, "site-a", "site-b"))
    audit = audit_scored(bundle, table.select(test), pixels[test], sources)
    results = audit["occlusion"]["results"]
    assert results["intact"]["roc_auc"] > 0.65  # it learned something from the cells ...
    assert results["center_masked"]["roc_auc"] < results["intact"]["roc_auc"]  # ... in the centre
    assert audit["source_probe"]["auc"] < 0.7  # arbitrary 'sites' leave no trace
    assert audit["warnings"] == []


def test_source_probe_finds_a_source_mark(cells) -> None:
    table, pixels = cells
    train, test = _halves(table)
    bundle = _train(
        _plant_mark(pixels, table.labels == 0)[train], table.labels[train], table.class_names
    )
    site_b = np.arange(test.sum()) % 2 == 1  # both classes in both sites; site B marks its images
    images = _plant_mark(pixels[test], site_b)
    sources = pd.Series(np.where(site_b, "site-b", "site-a"))
    audit = audit_scored(bundle, table.select(test), images, sources)
    assert audit["source_probe"]["auc"] > 0.9
    assert audit["source_probe"]["sources"] == {"site-a": 150, "site-b": 150}
    assert any("tell the image sources apart" in w for w in audit["warnings"])


def test_classes_that_coincide_with_sources_are_named() -> None:
    frame = pd.DataFrame(
        {
            "path": list("abcdef"),
            "label": ["COVID-19"] * 3 + ["normal"] * 3,
            "patient": list("abcdef"),
            "split": None,
        }
    )
    table = ImageTable(frame, ["COVID-19", "normal"], "test")
    coincide = coinciding_sources(table, pd.Series(["ieee8023"] * 3 + ["kermany"] * 3))
    assert coincide and "COVID-19 from ieee8023" in coincide and "normal from kermany" in coincide
    assert coinciding_sources(table, pd.Series(["x", "y"] * 3)) is None


def test_masks_hide_the_centre_or_the_borders() -> None:
    pixels = np.full((2, 10, 10, 1), 200, dtype=np.uint8)
    pixels[:, 0, 0] = 0
    center, border = mask(pixels, "center"), mask(pixels, "border")
    fill = pixels.mean().round()
    assert (center[:, 2:8, 2:8] == fill).all() and center[0, 0, 0, 0] == 0
    assert (border[:, 2:8, 2:8] == 200).all() and border[0, 0, 0, 0] == fill
