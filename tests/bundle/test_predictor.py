"""The Predictor base: probabilities come from the spec (temperature-scaled unless asked not
to), ``_batches`` gives the same answer whatever the batch size, empty input included, and
without a batch size one model call holds about as many pixels as 16 images of 224 x 224."""

from __future__ import annotations

import numpy as np
import pytest

from medsight.bundle import BundleSpec, Predictor, default_batch_size, softmax
from medsight.bundle.predictor import PIXELS_PER_CALL

SPEC = BundleSpec(
    model_name="malaria_lenet",
    class_names=["NORMAL", "PNEUMONIA", "OTHER"],
    image_size=(4, 4),
    channels=1,
    mean=(0.0,),
    std=(1.0,),
    temperature=2.0,
)


class FixedLogits(Predictor):
    """Logits that depend only on each image's first pixel, computed batch by batch."""

    engine = "fixed"

    def __init__(self, spec: BundleSpec = SPEC):
        self.spec = spec
        self.chunk_sizes: list[int] = []

    def row_logits(self, pixels: np.ndarray) -> np.ndarray:
        first = pixels.reshape(len(pixels), -1)[:, 0].astype(np.float64)
        return np.stack([first / 50, -first / 80, np.cos(first)], axis=1)

    def outputs(self, pixels: np.ndarray, batch_size: int | None = None):
        def run(chunk: np.ndarray):
            self.chunk_sizes.append(len(chunk))
            return self.row_logits(chunk), None

        return self._batches(pixels, batch_size, run)


def images(n: int) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (n, 4, 4, 1), dtype=np.uint8)


def test_base_logits_is_abstract() -> None:
    class Bare(Predictor):
        spec = SPEC

    with pytest.raises(NotImplementedError):
        Bare().predict_proba(images(1))


def test_predict_proba_is_the_specs_probabilities_of_the_logits() -> None:
    predictor, pixels = FixedLogits(), images(7)
    logits = predictor.row_logits(pixels)
    probs = predictor.predict_proba(pixels)
    np.testing.assert_allclose(probs, SPEC.probabilities(logits), rtol=1e-6)
    np.testing.assert_allclose(probs, softmax(logits, 2.0), rtol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_calibrated_uses_the_temperature_and_raw_does_not() -> None:
    predictor, pixels = FixedLogits(), images(6)
    logits = predictor.row_logits(pixels)
    raw = predictor.predict_proba(pixels, calibrated=False)
    calibrated = predictor.predict_proba(pixels)
    np.testing.assert_allclose(raw, softmax(logits, 1.0), rtol=1e-6)
    assert not np.allclose(raw, calibrated)
    # temperature 2 > 1 flattens: the top probability shrinks, the ranking stays
    assert (calibrated.max(axis=1) <= raw.max(axis=1) + 1e-7).all()
    np.testing.assert_array_equal(calibrated.argmax(axis=1), raw.argmax(axis=1))


def test_temperature_one_makes_calibrated_equal_raw() -> None:
    predictor, pixels = FixedLogits(SPEC.model_copy(update={"temperature": 1.0})), images(5)
    np.testing.assert_allclose(
        predictor.predict_proba(pixels), predictor.predict_proba(pixels, calibrated=False)
    )


@pytest.mark.parametrize(
    ("n", "batch_size", "chunks"),
    [(10, 3, [3, 3, 3, 1]), (10, 5, [5, 5]), (10, 64, [10]), (1, 1, [1]), (4, 1, [1, 1, 1, 1])],
)
def test_batches_give_the_same_as_one_batch(n: int, batch_size: int, chunks: list[int]) -> None:
    pixels = images(n)
    whole = FixedLogits().predict_proba(pixels, batch_size=n)
    predictor = FixedLogits()
    batched = predictor.predict_proba(pixels, batch_size=batch_size)
    assert predictor.chunk_sizes == chunks
    assert batched.shape == (n, 3)
    np.testing.assert_array_equal(batched, whole)


def test_batches_keep_the_order_of_the_images() -> None:
    pixels = images(9)
    predictor = FixedLogits()
    np.testing.assert_array_equal(
        predictor.logits(pixels, batch_size=2), predictor.row_logits(pixels)
    )
    reversed_out = predictor.logits(pixels[::-1], batch_size=4)
    np.testing.assert_array_equal(reversed_out, predictor.row_logits(pixels)[::-1])


def test_empty_input_gives_zero_rows_of_n_classes() -> None:
    predictor = FixedLogits()
    empty = np.zeros((0, 4, 4, 1), dtype=np.uint8)
    assert predictor.logits(empty).shape == (0, 3)
    assert predictor.chunk_sizes == []  # the model is never called
    assert predictor.predict_proba(empty).shape == (0, 3)
    two_classes = SPEC.model_copy(update={"class_names": ["a", "b"]})
    assert FixedLogits(two_classes).logits(empty, batch_size=8).shape == (0, 2)


@pytest.mark.parametrize(
    ("size", "expected"),
    [((224, 224), 16), ((150, 150), 35), ((128, 128), 49), ((28, 28), 64), ((512, 384), 4)],
)
def test_default_batch_size_keeps_one_calls_pixels_within_the_budget(
    size: tuple[int, int], expected: int
) -> None:
    assert default_batch_size(size) == expected
    assert expected * size[0] * size[1] <= PIXELS_PER_CALL
    # one more image would exceed it, unless the cap of 64 stopped it first
    assert expected == 64 or (expected + 1) * size[0] * size[1] > PIXELS_PER_CALL


def test_a_huge_input_still_gets_one_image_per_call() -> None:
    assert default_batch_size((4096, 4096)) == 1


@pytest.mark.parametrize(
    ("size", "n", "chunks"),
    [((224, 224), 40, [14, 14, 12]), ((224, 224), 32, [16, 16]), ((4, 4), 40, [40])]
    + [((128, 128), 64, [32, 32]), ((4, 4), 130, [44, 44, 42]), ((224, 224), 1, [1])],
)
def test_without_a_batch_size_the_calls_are_as_few_and_as_even_as_the_budget_allows(
    size: tuple[int, int], n: int, chunks: list[int]
) -> None:
    predictor = FixedLogits(SPEC.model_copy(update={"image_size": size}))
    pixels = np.zeros((n, *size, 1), np.uint8)
    pixels[:, 0, 0, 0] = np.arange(n)
    answers = predictor.answer(pixels)
    assert predictor.chunk_sizes == chunks
    assert max(chunks) <= default_batch_size(size)
    np.testing.assert_array_equal(answers.probs, predictor.predict_proba(pixels, batch_size=n))
