"""fp32 vs static int8 ONNX prediction, side by side on the same real X-rays, in one process.

Each model is a seeded bundle exported by ``medsight export`` (``export_onnx``, calibrated on
Kermany train images, gated on the test images given as check images); both graphs then
predict the same decoded images in alternating rounds and the best round of each is kept.
Seeded weights: the timing holds for a trained model of the same architecture, the gate's
verdict does not (it is the trained model's to pass).

    .venv/bin/python -m benchmarks.int8_predict [--models malaria_lenet resnet18] [--images 256]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medsight.bundle import BundleSpec, OnnxPredictor, save_bundle
from medsight.bundle.runtime import int8_path, sidecar
from medsight.data.io import find_images, load_image
from medsight.models.zoo import create_model
from medsight.serving.export import export_onnx

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "chest_xray"
SIZES = {"malaria_lenet": 128, "kermany_cnn": 150, "resnet18": 224}


def _time(predictor: OnnxPredictor, pixels: np.ndarray, batch: int) -> float:
    start = time.perf_counter()
    predictor.outputs(pixels, batch)
    return time.perf_counter() - start


def bench(name: str, images: int, rounds: int, batch: int, root: Path) -> dict:
    size = SIZES[name]
    torch.manual_seed(0)
    spec = BundleSpec(
        model_name=name,
        class_names=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        image_size=(size, size),
        channels=3,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    folder = save_bundle(root / name, create_model(name, 2, 3, (size, size)), spec)
    check = [DATA / "test" / "NORMAL", DATA / "test" / "PNEUMONIA"]
    fp32 = export_onnx(folder, quantize=True, check_images=check, calibrate=[DATA / "train"])
    record = json.loads(sidecar(int8_path(fp32)).read_text())["quantization"]
    files = find_images(check)
    files = [files[i] for i in np.linspace(0, len(files) - 1, images).astype(int)]
    pixels = np.stack([load_image(f, (size, size), 3) for f in files])
    pair = {"fp32": OnnxPredictor(fp32), "int8": OnnxPredictor(int8_path(fp32))}
    for predictor in pair.values():
        predictor.outputs(pixels[:batch], batch)  # warm-up
    best = {key: float("inf") for key in pair}
    for _ in range(rounds):
        for key, predictor in pair.items():
            best[key] = min(best[key], _time(predictor, pixels, batch))
    return {
        "model": name,
        "input": size,
        "images": images,
        "fp32_img_s": round(images / best["fp32"], 1),
        "int8_img_s": round(images / best["int8"], 1),
        "speedup": round(best["fp32"] / best["int8"], 2),
        "gate": {k: record.get(k) for k in ("adopted", "agreement", "roc_auc", "reason")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        for name in args.models:
            print(json.dumps(bench(name, args.images, args.rounds, args.batch, Path(root))))


if __name__ == "__main__":
    main()
