"""The bundle folder: weights + preprocessing + classes round-trip safely, it is found inside a
run directory, it is replaced atomically, and bad bundles are named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.bundle import BundleSpec, load_bundle, save_bundle
from medsight.errors import MedsightError
from medsight.models.zoo import create_model


def _spec() -> BundleSpec:
    return BundleSpec(
        model_name="malaria_lenet",
        class_names=["Parasitized", "Uninfected"],
        positive_class="Parasitized",
        image_size=(64, 64),
        channels=3,
        mean=(0.0,),
        std=(1.0,),
        threshold=0.4,
    )


def test_round_trip_gives_identical_predictions(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("malaria_lenet", 2, 3, (64, 64)).eval()
    save_bundle(tmp_path / "bundle", model, _spec())
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [
        "bundle.json",
        "model.safetensors",
    ]
    bundle = load_bundle(tmp_path / "bundle")
    assert bundle.spec.threshold == 0.4 and bundle.spec.positive_index == 0
    assert bundle.spec.medsight_version and bundle.spec.created
    pixels = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    expected = torch.softmax(model(torch.from_numpy(pixels).permute(0, 3, 1, 2) / 255.0), 1)
    assert np.allclose(bundle.predict_proba(pixels), expected.detach().numpy(), atol=1e-6)


def test_run_directory_is_accepted_as_bundle_path(tmp_path: Path) -> None:
    save_bundle(tmp_path / "bundle", create_model("malaria_lenet", 2, 3, (64, 64)), _spec())
    assert load_bundle(tmp_path).spec.class_names == ["Parasitized", "Uninfected"]


def test_saving_again_replaces_the_bundle_atomically(tmp_path: Path) -> None:
    model = create_model("malaria_lenet", 2, 3, (64, 64))
    save_bundle(tmp_path / "bundle", model, _spec())
    save_bundle(tmp_path / "bundle", model, _spec().model_copy(update={"threshold": 0.7}))
    assert load_bundle(tmp_path / "bundle").spec.threshold == 0.7
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"]  # no temporary leftovers


def test_missing_or_invalid_bundle_is_named(tmp_path: Path) -> None:
    with pytest.raises(MedsightError, match="not a medsight bundle"):
        load_bundle(tmp_path)
    save_bundle(tmp_path / "b", create_model("malaria_lenet", 2, 3, (64, 64)), _spec())
    spec = json.loads((tmp_path / "b" / "bundle.json").read_text())
    del spec["class_names"]
    (tmp_path / "b" / "bundle.json").write_text(json.dumps(spec))
    with pytest.raises(MedsightError, match="invalid bundle description"):
        load_bundle(tmp_path / "b")


def test_weights_are_plain_tensors_not_pickles(tmp_path: Path) -> None:
    save_bundle(tmp_path / "b", create_model("malaria_lenet", 2, 3, (64, 64)), _spec())
    head = (tmp_path / "b" / "model.safetensors").read_bytes()[:8]
    header_len = int.from_bytes(head, "little")
    header = json.loads((tmp_path / "b" / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert "features.0.weight" in header


def test_the_card_is_also_the_hub_readme_with_its_metadata(tmp_path: Path) -> None:
    """Uploaded as a Hub repository, a bundle shows its card: the Hub reads README.md."""
    from huggingface_hub import ModelCard

    from medsight.evaluation.card import model_card

    spec = _spec()
    metrics = {"split": "test", "n": 10, "accuracy": 0.9, "roc_auc": 0.95}
    card = model_card(spec, metrics)
    model = create_model("malaria_lenet", 2, 3, (64, 64))
    folder = save_bundle(tmp_path / "bundle", model, spec, card)
    assert (folder / "README.md").read_text() == (folder / "model_card.md").read_text() == card
    hub = ModelCard.load(folder / "README.md")
    assert hub.data.library_name == "medsight" and "medical-imaging" in hub.data.tags
