"""Shared fixtures: the real public datasets (../shared/datasets) and offline settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MEDSIGHT_PROGRESS", "json")
os.environ.setdefault("MEDSIGHT_BOOTSTRAP", "100")  # tests of the intervals set their own
os.environ.setdefault("MEDSIGHT_CACHE", "off")  # tests that use the decoded cache set their own

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The folder of real datasets; tests that need it skip with a reason when it is absent."""
    path = Path(os.environ.get("MEDSIGHT_TEST_DATA", REPO_ROOT / ".." / "shared" / "datasets"))
    if not path.is_dir():
        pytest.skip(f"real datasets not found at {path}; set MEDSIGHT_TEST_DATA to their folder")
    return path.resolve()


@pytest.fixture(scope="session")
def malaria_dir(datasets_dir: Path) -> Path:
    path = datasets_dir / "malaria"
    if not path.is_dir():
        pytest.skip(f"malaria dataset not found at {path}")
    return path


def _spread(files: list[Path], n: int) -> list[Path]:
    """Every k-th file of a sorted list: a small subset that still spans many patients."""
    step = max(1, len(files) // n)
    return files[::step][:n]


@pytest.fixture(scope="session")
def malaria_subset(malaria_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A class-folder copy of 300 real malaria cells per class (symlinks), many patients."""
    root = tmp_path_factory.mktemp("malaria_subset")
    for class_dir in sorted(p for p in malaria_dir.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir()
        for file in _spread(sorted(class_dir.glob("*.png")), 300):
            (root / class_dir.name / file.name).symlink_to(file)
    return root


@pytest.fixture(scope="session")
def malaria_renamed(malaria_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 real malaria cells per class renamed ``img_N.png``: no patient id in any name."""
    root = tmp_path_factory.mktemp("malaria_renamed")
    number = 0
    for class_dir in sorted(p for p in malaria_dir.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir()
        for file in _spread(sorted(class_dir.glob("*.png")), 30):
            (root / class_dir.name / f"img_{number}.png").symlink_to(file)
            number += 1
    return root


# the raw PatientIDs of `malaria_dicoms`: no output of medsight may ever contain them
DICOM_PATIENT_IDS = ("RAWID-ALPHA-58213", "RAWID-BRAVO-90467")


@pytest.fixture(scope="session")
def malaria_dicoms(
    malaria_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, tuple[str, str]]:
    """Real malaria cells as 8-bit grey DICOM files (``CLASS/cell_N.dcm``) of two patients,
    each with 6 cells of each class, and the two raw PatientIDs."""
    import numpy as np
    from PIL import Image
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    root = tmp_path_factory.mktemp("malaria_dicoms")
    number = 0
    for class_dir in sorted(p for p in malaria_dir.iterdir() if p.is_dir()):
        (root / class_dir.name).mkdir()
        for i, file in enumerate(_spread(sorted(class_dir.glob("*.png")), 12)):
            ds = Dataset()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
            ds.SOPClassUID = SecondaryCaptureImageStorage
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            pixels = np.asarray(Image.open(file).convert("L"), dtype=np.uint8)
            ds.set_pixel_data(pixels, "MONOCHROME2", 8, generate_instance_uid=False)
            ds.PatientID = DICOM_PATIENT_IDS[i % 2]
            ds.save_as(root / class_dir.name / f"cell_{number}.dcm", enforce_file_format=True)
            number += 1
    return root, DICOM_PATIENT_IDS


@pytest.fixture(scope="session")
def chest_xray_dir(datasets_dir: Path) -> Path:
    path = datasets_dir / "chest_xray"
    if not path.is_dir():
        pytest.skip(f"chest_xray dataset not found at {path}")
    return path


@pytest.fixture(scope="session")
def xray_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained NORMAL/PNEUMONIA bundle (seeded weights) with a non-default threshold
    and temperature, for tests of everything downstream of training (predict, export, serve)."""
    import torch

    from medsight.bundle import BundleSpec, save_bundle
    from medsight.models.zoo import create_model

    torch.manual_seed(0)
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        image_size=(64, 64),
        channels=3,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        threshold=0.4,
        threshold_rule="youden",
        temperature=1.5,
        recipe="test",
    )
    model = create_model(spec.model_name, 2, 3, spec.image_size)
    return save_bundle(tmp_path_factory.mktemp("bundles") / "xray", model, spec)


def _chromium() -> str | None:
    import shutil

    found = shutil.which("chromium")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (its own browser download cannot work
    offline); tests that need it skip with the reason when either is missing. Module-scoped:
    Playwright's sync API keeps an event loop running, which would break ``asyncio.run`` in
    later test modules."""
    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium not found (/usr/bin/chromium or `chromium` on PATH)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Python Playwright not installed")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def cell_bundle(malaria_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained Parasitized/Uninfected bundle (seeded weights) whose domain guard is
    fitted on real malaria cells: chest X-rays given to it are out of domain."""
    import numpy as np
    import torch

    from medsight.bundle import BundleSpec, fit_guard, save_bundle
    from medsight.data.io import load_image
    from medsight.models.zoo import create_model

    files = sorted(malaria_subset.glob("*/*.png"))[::2]  # both classes, spread over patients
    pixels = np.stack([load_image(f, size=(64, 64), channels=3) for f in files])
    labels = np.array([f.parent.name == "Uninfected" for f in files], dtype=int)
    train = np.arange(len(files)) % 4 != 0
    guard, domain, _ = fit_guard(pixels[train], labels[train], pixels[~train])
    torch.manual_seed(0)
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["Parasitized", "Uninfected"],
        positive_class="Parasitized",
        image_size=(64, 64),
        channels=3,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        recipe="test-cells",
        domain=domain,
    )
    model = create_model(spec.model_name, 2, 3, spec.image_size)
    folder = tmp_path_factory.mktemp("bundles") / "cells"
    return save_bundle(folder, model, spec, guard=guard)
