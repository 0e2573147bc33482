"""Decoding into the in-memory cache: unreadable files are reported, not fatal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medsight.data.dataset import ArrayDataset, EpochSampler, decode_images
from medsight.data.io import load_image


def test_decode_skips_and_reports_broken_files(malaria_subset: Path, tmp_path: Path) -> None:
    good = sorted(malaria_subset.rglob("*.png"))[:6]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good[0].read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    paths = (
        [str(p) for p in good[:3]]
        + [str(empty), str(truncated), str(text)]
        + [str(p) for p in good[3:]]
    )
    pixels, failures = decode_images(paths, (32, 32), 3)
    assert pixels.shape == (9, 32, 32, 3) and pixels.dtype == np.uint8
    assert sorted(p for p, _ in failures) == sorted([str(empty), str(truncated), str(text)])
    reasons = dict(failures)
    assert "empty" in reasons[str(empty)]
    for i in (0, 1, 2, 6, 7, 8):  # readable files decoded exactly as load_image does
        assert np.array_equal(pixels[i], load_image(paths[i], (32, 32), 3))


def test_array_dataset_yields_pixels_labels_and_epoch_seeds() -> None:
    pixels = np.arange(2 * 8 * 8 * 3, dtype=np.uint8).reshape(2, 8, 8, 3)
    dataset = ArrayDataset(pixels, np.array([1, 0]), seed=3)
    image, label, seed = dataset[0]
    assert tuple(image.shape) == (3, 8, 8) and label == 1
    assert np.array_equal(image.permute(1, 2, 0).numpy(), pixels[0])
    # the same image in another epoch (key = (epoch + 1) * n + i) gets another seed
    same, _, later = dataset[2 * 2 + 0]
    assert same.equal(image) and later != seed and dataset[4][2] == later
    images, labels, seeds = dataset.__getitems__([4, 1])  # a batch in one indexing
    assert images[0].equal(image) and labels.tolist() == [1, 0] and seeds[0] == later
    assert images[1].equal(dataset[1][0]) and seeds[1] == dataset[1][2]


def test_decoded_cache_is_keyed_by_content_and_size(
    malaria_subset: Path, tmp_path: Path, monkeypatch
) -> None:
    from medsight.data.io import content_sha256

    monkeypatch.setenv("MEDSIGHT_CACHE", str(tmp_path / "cache"))
    source = sorted(malaria_subset.rglob("*.png"))[0]
    image = tmp_path / "cell.png"
    image.write_bytes(source.read_bytes())
    digest = content_sha256(image)
    first, _ = decode_images([str(image)], (24, 24), 3, hashes=[digest])
    entries = list((tmp_path / "cache").rglob("*.npy"))
    assert [e.name for e in entries] == [f"{digest}.npy"] and "24x24x3" in str(entries[0])
    image.write_bytes(b"")  # the file is gone: the cache still answers for that content
    again, failures = decode_images([str(image)], (24, 24), 3, hashes=[digest])
    assert failures == [] and np.array_equal(first, again)
    # a changed file has a new hash: no stale pixels, the real (broken) file is read
    _, failures = decode_images([str(image)], (24, 24), 3, hashes=[content_sha256(image)])
    assert [p for p, _ in failures] == [str(image)]
    # another size is another entry
    other, _ = decode_images([str(source)], (16, 16), 3, hashes=[digest])
    assert other.shape == (1, 16, 16, 3) and len(list((tmp_path / "cache").rglob("*.npy"))) == 2


@pytest.mark.parametrize("balanced", [False, True], ids=["shuffled", "class-balanced"])
def test_first_rows_are_epoch_zeros_draws_in_order(balanced: bool) -> None:
    labels = np.array([0] * 30 + [1] * 7)
    sampler = EpochSampler(labels, seed=11, balanced=balanced)
    sampler.set_epoch(3)
    rows = sampler.first_rows()
    assert sampler.epoch == 3  # asking changes nothing
    sampler.set_epoch(0)
    drawn = [key - len(labels) for key in sampler]
    assert rows.tolist() == list(dict.fromkeys(drawn))  # distinct, first-drawn first
    assert len(rows) == (len(set(drawn)) if balanced else len(labels))
