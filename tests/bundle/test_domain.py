"""The domain guard on real images: fitted on one kind of image, it flags the other kind and
passes held-out images of its own kind; the bundle, its ONNX graph and the predict CSV carry it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medsight.bundle import (
    Bundle,
    BundleSpec,
    OnnxPredictor,
    fit_guard,
    load_bundle,
    save_bundle,
)
from medsight.bundle.domain import (
    FittedGuard,
    MahalanobisDistance,
    guard_batch_size,
    ledoit_wolf_precision,
)
from medsight.data.io import load_image
from medsight.models.zoo import create_model

SIZE = (64, 64)


def _spread(files: list[Path], n: int) -> list[Path]:
    return [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]


def _pixels(files: list[Path]) -> np.ndarray:
    return np.stack([load_image(f, size=SIZE, channels=3) for f in files])


def _patient(path: Path) -> str:
    return path.name.split("_")[0]


@pytest.fixture(scope="module")
def cells(malaria_dir: Path) -> dict[str, object]:
    """Real cells split by patient (file-name prefix): train, val and unseen-patient test."""
    files = [
        f for c in ("Parasitized", "Uninfected") for f in sorted((malaria_dir / c).glob("*.png"))
    ]
    files = _spread(files, 900)
    patients = sorted({_patient(f) for f in files})
    held = set(patients[::5])
    val_patients = set(patients[1::5])
    parts = {"train": [], "val": [], "test": []}
    for f in files:
        p = _patient(f)
        parts["test" if p in held else "val" if p in val_patients else "train"].append(f)
    labels = np.array([0 if f.parent.name == "Parasitized" else 1 for f in parts["train"]])
    return {name: _pixels(found) for name, found in parts.items()} | {"labels": labels}


@pytest.fixture(scope="module")
def xrays(chest_xray_dir: Path) -> np.ndarray:
    return _pixels(_spread(sorted((chest_xray_dir / "test").glob("*/*.jpeg")), 60))


@pytest.fixture(scope="module")
def cell_guard(cells: dict) -> FittedGuard:
    return fit_guard(cells["train"], cells["labels"], cells["val"])


def test_the_fitted_guard_returns_the_distances_its_threshold_was_set_on(
    cells: dict, cell_guard: FittedGuard
) -> None:
    """Training scores the validation split with these instead of computing them again."""
    np.testing.assert_allclose(
        cell_guard.held_distances, cell_guard.guard.distances(cells["val"]), rtol=1e-5
    )
    share = (cell_guard.held_distances > cell_guard.spec.threshold).mean()
    assert share == pytest.approx(cell_guard.spec.val_out_of_domain)


def test_cell_guard_flags_xrays_and_passes_unseen_patients_cells(
    cells: dict, xrays: np.ndarray, cell_guard: FittedGuard
) -> None:
    guard, spec, _ = cell_guard
    assert spec.threshold > 0 and spec.fitted_on == len(cells["train"])
    assert spec.val_out_of_domain <= 0.02  # its threshold is the val split's 99th percentile
    flagged_xrays = (spec.scores(guard.distances(xrays)) > 1).mean()
    flagged_cells = (spec.scores(guard.distances(cells["test"])) > 1).mean()
    assert flagged_xrays >= 0.95, flagged_xrays
    assert flagged_cells <= 0.10, flagged_cells


def test_xray_guard_flags_cells(chest_xray_dir: Path, cells: dict) -> None:
    train = _spread(sorted((chest_xray_dir / "train").glob("*/*.jpeg")), 240)
    val = _spread(sorted((chest_xray_dir / "val").glob("*/*.jpeg")) or train, 40)
    labels = np.array([f.parent.name == "PNEUMONIA" for f in train], dtype=int)
    guard, spec, _ = fit_guard(_pixels(train), labels, _pixels(val))
    assert (spec.scores(guard.distances(cells["test"][:100])) > 1).mean() >= 0.95


def test_guard_forward_equals_its_batched_distances(cells: dict, cell_guard: FittedGuard) -> None:
    guard, _, _ = cell_guard
    some = cells["test"][:10]
    with torch.inference_mode():
        direct = guard(torch.from_numpy(np.ascontiguousarray(some))).numpy()
    np.testing.assert_allclose(direct, guard.distances(some, batch_size=3), rtol=1e-4)


@pytest.mark.parametrize(
    ("size", "expected"), [((224, 224), 8), ((128, 128), 24), ((4096, 4096), 1)]
)
def test_guard_batches_keep_a_calls_pixels_within_the_budget(
    size: tuple[int, int], expected: int
) -> None:
    assert guard_batch_size(size) == expected


def test_guard_features_in_its_own_batches_equal_one_call(
    cells: dict, cell_guard: FittedGuard
) -> None:
    guard, _, _ = cell_guard
    larger = cells["test"][:30].repeat(2, axis=1).repeat(2, axis=2)  # 128 px: 24 per call
    np.testing.assert_allclose(
        guard.features.of(larger), guard.features.of(larger, batch_size=30), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        guard.distances(larger), guard.distances(larger, batch_size=30), rtol=1e-4
    )


def test_mahalanobis_distance_is_zero_at_a_class_mean_and_grows_away() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (200, 5)), rng.normal(6, 1, (200, 5))])
    labels = np.repeat([0, 1], 200)
    distance = MahalanobisDistance.fit(x, labels)
    points = torch.tensor([[0.0] * 5, [6.0] * 5, [3.0] * 5, [30.0] * 5])
    got = distance(points).numpy()
    assert got[0] < 0.5 and got[1] < 0.5
    assert got[3] > got[2] > got[0]


def _whole_array_fit(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fit written the direct way, on one float64 copy, with scikit-learn's Ledoit-Wolf."""
    from sklearn.covariance import LedoitWolf

    z = x.astype(np.float64)
    spread = z.std(axis=0)
    spread = np.maximum(spread, 1e-3 * max(float(np.median(spread)), 1e-6))
    z /= spread
    classes = np.unique(labels)
    means = np.stack([z[labels == c].mean(axis=0) for c in classes])
    for i, c in enumerate(classes):
        z[labels == c] -= means[i]
    precision = LedoitWolf(assume_centered=True).fit(z).precision_
    return means * spread, precision / np.outer(spread, spread)


def test_mahalanobis_fit_block_by_block_equals_the_whole_array_fit() -> None:
    """More rows than one block, float32 features, unequal classes, a constant feature."""
    from medsight.bundle.domain import ROWS

    rng = np.random.default_rng(1)
    n, d = 2 * ROWS + 300, 24
    x = (rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * rng.uniform(0.1, 3, d)).astype(
        np.float32
    )
    x[:, 5] = 2.0
    labels = rng.choice(["a", "b", "c"], size=n, p=[0.6, 0.3, 0.1])
    x[labels == "b"] += 1.5
    fitted = MahalanobisDistance.fit(x, labels)
    means, precision = _whole_array_fit(x, labels)
    np.testing.assert_allclose(fitted.means.numpy(), means, rtol=1e-5, atol=1e-6)
    scale = np.abs(precision).max()
    np.testing.assert_allclose(fitted.precision.numpy(), precision, rtol=1e-4, atol=1e-6 * scale)


def test_mahalanobis_fit_makes_no_float64_copy_of_the_features() -> None:
    """Its peak allocation stays under a quarter of one (N, D) float64 array (numpy reports its
    allocations to tracemalloc): the whole-array fit held two at once."""
    import tracemalloc

    import scipy.linalg  # noqa: F401  (imported before tracing: a module's import is not the fit)

    rng = np.random.default_rng(2)
    x = rng.normal(size=(40_000, 64)).astype(np.float32)
    labels = rng.integers(0, 2, len(x))
    tracemalloc.start()
    try:
        MahalanobisDistance.fit(x, labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.size * 8 / 4


@pytest.fixture(scope="module")
def guarded_bundle(tmp_path_factory: pytest.TempPathFactory, cell_guard: FittedGuard) -> Path:
    guard, domain, _ = cell_guard
    torch.manual_seed(0)
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["Parasitized", "Uninfected"],
        positive_class="Parasitized",
        image_size=SIZE,
        channels=3,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        domain=domain,
    )
    model = create_model(spec.model_name, 2, 3, SIZE)
    folder = tmp_path_factory.mktemp("guarded") / "bundle"
    return save_bundle(folder, model, spec, guard=guard)


@pytest.mark.parametrize(("n", "d"), [(3000, 64), (50, 80), (1500, 1)])
def test_ledoit_wolf_precision_is_scikit_learns(n: int, d: int) -> None:
    """Correlated, unequal-variance features; more features than images too (strong shrinkage)."""
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(3)
    z = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * rng.uniform(0.1, 3, d)
    z -= z.mean(axis=0)
    expected = LedoitWolf(assume_centered=True, block_size=16).fit(z).precision_
    got = ledoit_wolf_precision(z[i : i + 97] for i in range(0, n, 97))  # 97 does not divide n
    np.testing.assert_allclose(got, expected, rtol=1e-8, atol=1e-10 * np.abs(expected).max())


def test_a_saved_guard_loads_and_scores_the_same(
    guarded_bundle: Path, cell_guard: FittedGuard, xrays: np.ndarray
) -> None:
    guard, _, _ = cell_guard
    bundle = load_bundle(guarded_bundle)
    assert (guarded_bundle / "domain.safetensors").is_file()
    answers = bundle.answer(xrays[:8])
    expected = bundle.spec.domain.scores(guard.distances(xrays[:8]))
    np.testing.assert_allclose(answers.domain_score, expected, rtol=1e-4)
    assert list(answers.in_domain) == [bool(s <= 1) for s in expected]


def test_a_bundle_without_its_guard_file_is_refused(guarded_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from medsight.errors import MedsightError

    copy = tmp_path / "copy"
    shutil.copytree(guarded_bundle, copy)
    (copy / "domain.safetensors").unlink()
    with pytest.raises(MedsightError, match="domain.safetensors is missing"):
        load_bundle(copy)


def test_bundles_made_before_guards_say_they_cannot_tell(xray_bundle: Path) -> None:
    bundle = load_bundle(xray_bundle)
    answers = bundle.answer(np.zeros((3, 64, 64, 3), np.uint8))
    assert np.isnan(answers.domain_score).all()
    assert list(answers.in_domain) == [None, None, None]


def test_onnx_graph_has_the_domain_output_and_matches_pytorch(
    guarded_bundle: Path, cells: dict, xrays: np.ndarray, tmp_path: Path
) -> None:
    from medsight.serving.export import export_onnx

    folder = tmp_path / "b"
    import shutil

    shutil.copytree(guarded_bundle, folder)
    onnx_path = export_onnx(folder)
    onnx = OnnxPredictor(onnx_path)
    torch_bundle: Bundle = load_bundle(folder)
    mixed = np.concatenate([cells["test"][:6], xrays[:6]])
    a, b = torch_bundle.answer(mixed), onnx.answer(mixed)
    np.testing.assert_allclose(a.probs, b.probs, atol=1e-4)
    np.testing.assert_allclose(a.domain_score, b.domain_score, rtol=1e-3)
    assert list(a.in_domain) == list(b.in_domain)
    assert not all(b.in_domain[6:])  # the X-rays are flagged through ONNX too


def test_predict_csv_carries_the_domain_check(
    guarded_bundle: Path, malaria_dir: Path, chest_xray_dir: Path, tmp_path: Path
) -> None:
    import pandas as pd

    from medsight.serving.batch import predict_files

    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in _spread(sorted((chest_xray_dir / "test" / "NORMAL").glob("*.jpeg")), 5):
        (folder / f.name).symlink_to(f)
    result = predict_files(guarded_bundle, [folder], tmp_path / "p.csv", onnx=False)
    frame = pd.read_csv(tmp_path / "p.csv", keep_default_na=False, dtype={"in_domain": str})
    assert set(frame["in_domain"]) <= {"true", "false"}
    assert (frame["in_domain"] == "false").sum() == result.out_of_domain >= 4
    assert (frame.loc[frame["in_domain"] == "false", "domain_score"].astype(float) > 1).all()
