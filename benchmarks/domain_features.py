"""Which features tell a run's own images from others? The measurement behind the domain guard.

    .venv/bin/python -m benchmarks.domain_features RUN_DIR   # a malaria run directory

For three feature sets (the model's penultimate layer, its last conv block average-pooled, and
the fixed ImageNet EfficientNet-Lite0 features the guard uses) it fits the same detector
(Mahalanobis distance to the nearest class mean, Ledoit-Wolf shrunk covariance, threshold at the
validation split's 99th percentile) on the run's training split and prints the fraction flagged
of its held-out test split, of Kermany test X-rays and of the scikit-image photos.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.domain_guard import DEFAULT_DATA, files, photos
from medsight.bundle import load_bundle
from medsight.bundle.domain import ImageFeatures, MahalanobisDistance, feature_extractor
from medsight.training.run import Run


def own_features(bundle, pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The model's penultimate features (input of its last Linear) and its pooled conv map."""
    model, captured = bundle.model, {}
    last = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    hook = last.register_forward_pre_hook(lambda _, inputs: captured.update(pen=inputs[0]))
    out = {"penultimate": [], "pooled conv": []}
    with torch.inference_mode():
        for i in range(0, len(pixels), 128):
            x = bundle.pipeline(torch.from_numpy(np.ascontiguousarray(pixels[i : i + 128])))
            model(x)
            maps = (
                model.forward_features(x)
                if hasattr(model, "forward_features")
                else model.features(x)
            )
            out["penultimate"].append(captured["pen"].numpy())
            out["pooled conv"].append(maps.mean((2, 3)).numpy())
    hook.remove()
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    run_dir = Path(sys.argv[1])
    run = Run.reopen(run_dir)
    data = run.reload()
    bundle = load_bundle(run_dir / "bundle")
    size, channels = tuple(bundle.spec.image_size), bundle.spec.channels
    sets = {name: data.pixels[data.split == name] for name in ("train", "val", "test")}
    xrays = sorted((DEFAULT_DATA / "chest_xray" / "test").glob("*/*.jpeg"))[::3]
    sets |= {"X-rays": files(xrays, size, channels), "photos": photos(size, channels)}
    lite0 = ImageFeatures(feature_extractor())
    features = {name: own_features(bundle, pixels) for name, pixels in sets.items()}
    for name, pixels in sets.items():
        features[name]["ImageNet Lite0"] = lite0.of(pixels)
    labels = data.table.labels[data.split == "train"]
    for kind in features["train"]:
        distance = MahalanobisDistance.fit(features["train"][kind], labels)
        with torch.inference_mode():
            scored = {
                name: distance(torch.from_numpy(found[kind].astype(np.float32))).numpy()
                for name, found in features.items()
            }
        threshold = np.quantile(scored["val"], 0.99)
        rates = {
            name: f"{(scored[name] > threshold).mean():.1%} of {len(sets[name])}"
            for name in ("test", "X-rays", "photos")
        }
        print(f"{kind:<16} dims {features['train'][kind].shape[1]:>5}  flagged: {rates}")


if __name__ == "__main__":
    main()
