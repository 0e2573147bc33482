"""One resize rule: the pixels training stores, ``load_image``, the serving decode, batch
prediction and ``ImageClassifier.pixels`` are the same array for the same file, and that array
is Pillow's: JPEG decoded at the draft scale, then a bilinear resize with ``reducing_gap=3.0``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medsight.bundle import BundleSpec, save_bundle
from medsight.data.io import load_image, read_image_bytes, to_pixels
from medsight.data.store import decode_to_store
from medsight.models.zoo import create_model
from medsight.serving.classifier import ImageClassifier

SETTINGS = [((64, 64), 3), ((150, 150), 1)]  # (height, width), channels of a bundle


def _largest(folder: Path, pattern: str) -> Path:
    files = sorted(folder.glob(pattern), key=lambda p: p.stat().st_size)
    if not files:
        pytest.skip(f"no {pattern} under {folder}")
    return files[-1]


@pytest.fixture(scope="module")
def files(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real images of every kind a data set holds: an 8-bit JPEG, the largest JPEG of the
    COVID set (decoded at a reduced scale), an RGB PNG cell, and a 16-bit PNG and a DICOM
    made here from a real X-ray."""
    out = tmp_path_factory.mktemp("rule")
    xray = _largest(datasets_dir / "chest_xray" / "test" / "NORMAL", "*.jpeg")
    grey = np.asarray(Image.open(xray).convert("L"), dtype=np.uint16)
    Image.fromarray(grey * 257 + 3).save(out / "sixteen.png")  # mode I;16: stretched min-max
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_pixel_data(grey.astype(np.uint8), "MONOCHROME2", 8, generate_instance_uid=False)
    ds.save_as(out / "scan.dcm", enforce_file_format=True)
    covid = datasets_dir / "covid" / "images"
    large = _largest(covid, "*.jpg") if covid.is_dir() else xray
    return {
        "jpeg": xray,
        "large_jpeg": Path(shutil.copy(large, out / "large.jpg")),
        "png": _largest(datasets_dir / "malaria" / "Parasitized", "*.png"),
        "png16": out / "sixteen.png",
        "dicom": out / "scan.dcm",
    }


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.manual_seed(0)
    found = {}
    for size, channels in SETTINGS:
        spec = BundleSpec(
            model_name="malaria_lenet",
            class_names=["NORMAL", "PNEUMONIA"],
            positive_class="PNEUMONIA",
            image_size=size,
            channels=channels,
            mean=(0.0,) * channels,
            std=(1.0,) * channels,
        )
        model = create_model(spec.model_name, 2, channels, size)
        folder = save_bundle(tmp_path_factory.mktemp("bundles") / f"b{size[0]}", model, spec)
        found[size, channels] = ImageClassifier(folder, prefer_onnx=False)
    return found


def _pillow(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """The rule written out with Pillow alone (8-bit JPEG and PNG only)."""
    with Image.open(path) as img:
        img.draft(None, (size[1], size[0]))
        img = img.convert("L" if channels == 1 else "RGB")
    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR, reducing_gap=3.0)
    return np.asarray(img)[..., None] if channels == 1 else np.asarray(img)


@pytest.mark.parametrize(("size", "channels"), SETTINGS)
def test_every_path_gives_the_same_pixels(
    files: dict[str, Path], classifiers: dict, size: tuple[int, int], channels: int
) -> None:
    paths = [str(p) for p in files.values()]
    stored, failures = decode_to_store(paths, size, channels)
    assert failures == []
    classifier = classifiers[size, channels]
    for i, (kind, path) in enumerate(files.items()):
        loaded = load_image(path, size, channels)
        assert loaded.shape == (*size, channels) and loaded.dtype == np.uint8, kind
        served = to_pixels(read_image_bytes(path.read_bytes(), draft_size=size), size, channels)
        for name, other in [
            ("training store", stored[i]),
            ("serving decode", served),
            ("ImageClassifier.pixels", classifier.pixels(path)),
            ("ImageClassifier.pixels of bytes", classifier.pixels(path.read_bytes())),
        ]:
            np.testing.assert_array_equal(other, loaded, err_msg=f"{kind}: {name}")
        if kind in ("jpeg", "large_jpeg", "png"):
            np.testing.assert_array_equal(loaded, _pillow(path, size, channels), err_msg=kind)


def test_the_large_jpeg_is_decoded_at_a_reduced_scale(files: dict[str, Path]) -> None:
    """The draft scale is part of the rule: the same JPEG decoded in full and then resized
    gives other pixels, so the test above really covers reduced-size decoding."""
    path = files["large_jpeg"]
    with Image.open(path) as img:
        full_size = img.size
        img.draft(None, (64, 64))
        assert img.size[0] < full_size[0]  # Pillow picks a 1/2..1/8 scale
        full = to_pixels(Image.open(path), (64, 64), 3)
    assert not np.array_equal(full, load_image(path, (64, 64), 3))
