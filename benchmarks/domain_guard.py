"""How often a bundle's domain guard flags images of other kinds, and of its own kind.

    .venv/bin/python -m benchmarks.domain_guard --run RUN_DIR [--run RUN_DIR ...] [--data DIR]

For each run directory (``medsight train`` output) it scores, with the run's bundle:
- its own held-out test split (images of patients the model never saw): should be flagged
  at most 5 % of the time;
- images of other kinds: chest X-rays (Kermany test), malaria cells, the CT slices of the
  ieee8023 collection, and the everyday photos shipped with scikit-image (each whole and as
  three crops): the kinds the run was not trained on should be flagged at least 99 % of the time.
Rates come with their counts; results go to ``benchmarks/results/domain_guard.json``.

``--fit-guard`` gives a run made before domain guards the guard its training would fit now
(``fit_guard`` on the run's own train and val splits, as ``medsight train`` does): the guard
depends only on those images, not on the classifier.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.bundle import Bundle, fit_guard, load_bundle
from medsight.data.io import load_image, to_pixels
from medsight.training.run import Run

DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)
PHOTOS = [
    "astronaut",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "brick",
    "hubble_deep_field",
    "moon",
    "page",
    "rocket",
    "text",
    "colorwheel",
    "logo",
    "horse",
]


def photos(size: tuple[int, int], channels: int) -> np.ndarray:
    """The scikit-image photos, each whole and as three crops (top-left, bottom-right, centre)."""
    import skimage.data
    from PIL import Image

    views = []
    for name in PHOTOS:
        array = getattr(skimage.data, name)()
        if array.dtype != np.uint8:
            array = (array.astype(float) / max(array.max(), 1) * 255).astype(np.uint8)
        img = Image.fromarray(array)
        w, h = img.size
        boxes = [
            (0, 0, w // 2, h // 2),
            (w // 2, h // 2, w, h),
            (w // 4, h // 4, 3 * w // 4, 3 * h // 4),
        ]
        views += [img, *(img.crop(box) for box in boxes)]
    return np.stack([to_pixels(view, size, channels) for view in views])


def files(paths: list[Path], size: tuple[int, int], channels: int) -> np.ndarray:
    return np.stack([load_image(p, size=size, channels=channels) for p in paths])


def image_sets(
    data: Path, run: Path, size: tuple[int, int], channels: int
) -> dict[str, np.ndarray]:
    splits = pd.read_csv(run / "splits.csv")
    held = [Path(p) for p in splits.loc[splits["split"] == "test", "path"]]
    meta = pd.read_csv(data / "covid" / "metadata.csv")
    ct = [data / "covid" / "images" / f for f in meta.loc[meta["modality"] == "CT", "filename"]]
    return {
        "own held-out test split": files(held, size, channels),
        "chest X-rays (Kermany test)": files(
            sorted((data / "chest_xray" / "test").glob("*/*.jpeg")), size, channels
        ),
        "malaria cells": files(sorted((data / "malaria").glob("*/*.png"))[::8], size, channels),
        "CT slices (ieee8023)": files([p for p in ct if p.is_file()], size, channels),
        "photos (scikit-image)": photos(size, channels),
    }


def with_guard(bundle: Bundle, run: Path) -> Bundle:
    """The bundle with the guard its run's training would fit (same splits, same function)."""
    prepared = Run.reopen(run).reload()
    split, labels = prepared.split, prepared.table.labels
    guard, domain, _ = fit_guard(
        prepared.pixels[split == "train"], labels[split == "train"], prepared.pixels[split == "val"]
    )
    spec = bundle.spec.model_copy(update={"domain": domain})
    return Bundle(bundle.model, spec, bundle.lung_crop, guard)


def measure(run: Path, data: Path, fit: bool) -> dict:
    bundle = load_bundle(run / "bundle")
    if bundle.spec.domain is None and fit:
        bundle = with_guard(bundle, run)
    spec = bundle.spec
    if spec.domain is None:
        raise SystemExit(f"{run}: its bundle has no domain guard (made before guards; --fit-guard)")
    rows = {}
    for name, pixels in image_sets(data, run, tuple(spec.image_size), spec.channels).items():
        scores = bundle.answer(pixels).domain_score
        flagged = int((scores > 1).sum())
        rows[name] = {"flagged": flagged, "n": len(scores), "rate": flagged / len(scores)}
        print(
            f"{spec.recipe:>14}  {name:<30} {flagged:>5} of {len(scores):>5}  "
            f"{flagged / len(scores):7.1%}"
        )
    return {"recipe": spec.recipe, "run": str(run), "guard": spec.domain.model_dump(), "sets": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "domain_guard.json"
    )
    parser.add_argument("--fit-guard", action="store_true", help="fit one for runs without")
    args = parser.parse_args()
    results = [measure(run, args.data, args.fit_guard) for run in args.run]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
