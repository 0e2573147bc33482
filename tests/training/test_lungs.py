"""Training the lung U-Net on real ieee8023 X-rays and their V7 Labs lung masks."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.config import LungCropConfig
from medsight.errors import ConfigError, DataError

pytest.importorskip("segmentation_models_pytorch", reason="pip install medsight[lungs]")
pytest.importorskip("torchxrayvision", reason="pip install medsight[lungs]")

from medsight.training.lungs import (  # noqa: E402
    MIN_PAIRS,
    TORCHXRAYVISION_MASKS,
    lung_pairs,
    lungs_for_run,
    train_lungs,
)


@pytest.fixture(scope="module")
def covid_images(datasets_dir: Path) -> Path:
    path = datasets_dir / "covid" / "images"
    if not path.is_dir():
        pytest.skip(f"covid images not found at {path}")
    return path


@pytest.fixture(scope="module")
def v7_masks() -> dict[str, bytes]:
    """The masks torchxrayvision ships, by file name."""
    import importlib.util

    spec = importlib.util.find_spec("torchxrayvision")
    package = Path(next(iter(spec.submodule_search_locations)))
    with zipfile.ZipFile(package / "data" / TORCHXRAYVISION_MASKS) as archive:
        return {Path(n).name: archive.read(n) for n in archive.namelist() if not n.endswith("/")}


@pytest.fixture(scope="module")
def small_pairs(
    covid_images: Path, v7_masks: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """40 real X-rays (symlinks) with their masks in a folder, plus 3 masks without an image."""
    root = tmp_path_factory.mktemp("lungs")
    images, masks = root / "images", root / "masks"
    images.mkdir()
    masks.mkdir()
    names = sorted(n for n in v7_masks if (covid_images / n).is_file())[:40]
    for name in names:
        (images / name).symlink_to(covid_images / name)
        (masks / name).write_bytes(v7_masks[name])
    for k in range(3):
        (masks / f"no-such-image-{k}.png").write_bytes(v7_masks[names[k]])
    return images, masks


def test_the_packaged_masks_pair_with_the_ieee8023_images(covid_images: Path) -> None:
    pixels, masks, origin = lung_pairs(covid_images, "torchxrayvision")
    assert len(pixels) == len(masks) == 510  # of the 517 masks, 510 images are in this snapshot
    assert pixels.dtype == np.uint8 and masks.dtype == bool
    lung_share = masks.mean((1, 2))
    # 82 are empty on purpose: CT slices and lateral views have no frontal lung field
    outlined = lung_share[lung_share > 0]
    assert len(outlined) == 428 and 0.2 < outlined.mean() < 0.5 and outlined.min() > 0.02
    assert "torchxrayvision" in origin


def test_a_mask_folder_pairs_by_file_name(small_pairs: tuple[Path, Path]) -> None:
    images, masks = small_pairs
    pixels, outlines, origin = lung_pairs(images, str(masks))
    assert len(pixels) == 40 and str(masks) in origin


def test_too_few_pairs_is_a_clear_error(small_pairs: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = small_pairs
    few = tmp_path / "few"
    few.mkdir()
    for path in sorted(masks.iterdir())[: MIN_PAIRS - 1]:
        (few / path.name).write_bytes(path.read_bytes())
    with pytest.raises(DataError, match=str(few)):
        lung_pairs(images, str(few))


def test_a_zip_of_masks_works_like_a_folder(small_pairs: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = small_pairs
    archive = tmp_path / "masks.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for path in sorted(masks.iterdir()):
            out.writestr(f"masks/{path.name}", path.read_bytes())
    assert len(lung_pairs(images, str(archive))[0]) == 40


@pytest.mark.parametrize("where", ["images", "masks"])
def test_missing_folders_name_the_setting(
    where: str, small_pairs: tuple[Path, Path], tmp_path: Path
) -> None:
    images, masks = small_pairs
    absent = tmp_path / "absent"
    args = (absent, str(masks)) if where == "images" else (images, str(absent))
    with pytest.raises(ConfigError, match=str(absent)):
        lung_pairs(*args)


def test_an_unreadable_mask_is_named(small_pairs: tuple[Path, Path], tmp_path: Path) -> None:
    images, masks = small_pairs
    bad = tmp_path / "bad"
    bad.mkdir()
    names = sorted(p.name for p in images.iterdir())
    for name in names[:MIN_PAIRS]:
        (bad / name).write_bytes((masks / name).read_bytes())
    (bad / names[MIN_PAIRS]).write_bytes(b"not an image")
    with pytest.raises(DataError, match=names[MIN_PAIRS]):
        lung_pairs(images, str(bad))


def test_a_run_trains_saves_and_reuses_its_lung_model(
    small_pairs: tuple[Path, Path], tmp_path: Path
) -> None:
    images, masks = small_pairs
    cfg = LungCropConfig(images=str(images), masks=str(masks), epochs=1)
    crop = lungs_for_run(cfg, "unused", tmp_path, seed=0, reuse=False)
    assert crop.spec.val_dice is not None and 0 <= crop.spec.val_dice <= 1
    assert (tmp_path / "lungs" / "lungs.safetensors").is_file()
    again = lungs_for_run(cfg, "unused", tmp_path, seed=0, reuse=True)
    given = lungs_for_run(
        LungCropConfig(model=str(tmp_path / "lungs")), "unused", tmp_path / "b", 0, reuse=False
    )
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        assert torch.equal(crop(pixels), again(pixels))
        assert torch.equal(crop(pixels), given(pixels))


@pytest.mark.slow
def test_the_trained_u_net_outlines_held_out_lungs(covid_images: Path) -> None:
    """The recipe's setting (20 epochs, every mask): Dice on the held-out tenth."""
    crop = train_lungs(covid_images, "torchxrayvision", epochs=20, seed=0)
    assert crop.spec.val_dice >= 0.8


def test_dice_counts_overlap_and_empty_agreement() -> None:
    from medsight.training.lungs import dice

    target = torch.zeros(3, 1, 4, 4)
    target[0, :, :2] = 1  # top half
    target[1, :, :, :2] = 1  # left half
    logits = torch.full((3, 1, 4, 4), -1.0)
    logits[0, :, :2] = 1  # exact
    logits[1, :, :2] = 1  # top half against left half: a quarter overlaps
    # image 2: nothing to find, nothing found
    assert dice(logits, target) == pytest.approx((1 + 0.5 + 1) / 3)


def test_default_images_beside_the_data_else_from_the_covid_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from medsight.data import download
    from medsight.training.lungs import default_images

    (tmp_path / "mine" / "chest_xray").mkdir(parents=True)
    (tmp_path / "mine" / "covid" / "images").mkdir(parents=True)
    assert default_images(tmp_path / "mine" / "chest_xray") == tmp_path / "mine/covid/images"
    # not beside the data: the covid download's images, here already in the cache (a closed
    # URL proves that a complete download is found without the network)
    cached = tmp_path / "cache" / "covid" / "covid-chestxray-dataset"
    (cached / "images").mkdir(parents=True)
    (cached / "metadata.csv").write_text("patientid\n")
    monkeypatch.setenv("MEDSIGHT_DATA", str(tmp_path / "cache"))
    entry = dataclasses.replace(download.DATASETS["covid"], url="http://127.0.0.1:9/")
    monkeypatch.setitem(download.DATASETS, "covid", entry)
    (tmp_path / "other" / "chest_xray").mkdir(parents=True)
    assert default_images(tmp_path / "other" / "chest_xray") == cached / "images"
