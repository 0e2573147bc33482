"""Explain image files: one overlay PNG per image (at the file's own size) and a summary CSV."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from medsight.bundle import Bundle
from medsight.bundle.predictions import in_domain_column
from medsight.data.io import load_image
from medsight.errors import MedsightError, UnreadableImageError
from medsight.explanation.cam import check_method, explain, find_layer, overlay_image
from medsight.fsutil import atomic_write_bytes, atomic_write_text
from medsight.progress import Progress

log = logging.getLogger(__name__)
COLUMNS = [
    "path",
    "prediction",
    "probability",
    "target",
    "method",
    "layer",
    "faithfulness",
    "overlay",
    "in_domain",
    "domain_score",
]
BANNER = "OUT OF DOMAIN: unlike the training images - do not trust"


def _png(rgb: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MedsightError("could not encode the overlay as PNG")
    return encoded.tobytes()


def out_of_domain_banner(rgb: np.ndarray) -> np.ndarray:
    """The overlay with a red banner across its top saying the image is out of domain."""
    marked = np.ascontiguousarray(rgb.copy())
    height, width = marked.shape[:2]
    scale = max(width / 900, 0.3)
    band = max(int(28 * scale), 10)
    marked[:band] = (180, 0, 0)
    cv2.putText(
        marked,
        BANNER,
        (4, int(band * 0.72)),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale * 0.8,
        (255, 255, 255),
        max(1, int(scale * 1.5)),
        cv2.LINE_AA,
    )
    return marked


def _unique(stem: str, used: set[str]) -> str:
    """``stem.png``, or ``stem-2.png``... when two images share a file name (other folders)."""
    name, n = f"{stem}.png", 1
    while name in used:
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def explain_files(
    bundle: Bundle,
    paths: list[str | Path],
    out_dir: str | Path,
    method: str = "gradcam",
    target: int | str | None = None,
    layer: str | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Write ``<stem>_<method>.png`` overlays (``-2``, ``-3``... added when file names repeat)
    and ``explanations.csv`` into ``out_dir``.

    The model sees each image as predict does (resized to the bundle's input); the heat-map
    is then upsampled onto the original image, so overlays have the file's own size (for a
    bundle that crops to the lungs, the overlay shows the crop the model saw; an image the
    domain guard flags gets a red "out of domain" banner across its overlay). Returns
    the CSV's rows (path, prediction, probability, target, method, layer, faithfulness,
    overlay, in_domain, domain_score) and the unreadable files as ``(path, reason)``, which
    are skipped, not fatal.
    """
    check_method(method)  # bad options fail before any work, not after the first image
    find_layer(bundle, layer)
    spec, out = bundle.spec, Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows, skipped, used = [], [], set()
    with Progress(len(paths), f"explain ({method})", "img") as bar:
        for path in map(str, paths):
            bar.update()
            try:
                pixels = np.array(load_image(path, tuple(spec.image_size), spec.channels))
                original = load_image(path, size=None, channels=3)
            except UnreadableImageError as exc:
                log.warning("skipped %s: %s", path, exc.reason)
                skipped.append((path, exc.reason))
                continue
            answers = bundle.answer(pixels[None])
            probs, domain_score = answers.probs, float(answers.domain_score[0])
            found = explain(bundle, pixels, target, method, layer)
            name = _unique(f"{Path(path).stem}_{method}", used)
            # a lung-cropping bundle saw only the crop: its heat-map belongs on that
            overlay = found.overlay if bundle.lung_crop else overlay_image(original, found.heatmap)
            if domain_score > 1.0:
                overlay = out_of_domain_banner(overlay)
            atomic_write_bytes(out / name, _png(overlay))
            rows.append(
                {
                    "path": path,
                    "prediction": spec.decision_names(probs)[0],
                    "probability": round(float(spec.score(probs)[0]), 6),
                    "target": found.target_class,
                    "method": method,
                    "layer": found.layer,
                    "faithfulness": round(found.faithfulness, 6),
                    "overlay": name,
                    "in_domain": in_domain_column(np.array([domain_score]))[0],
                    "domain_score": domain_score,
                }
            )
    frame = pd.DataFrame(rows, columns=COLUMNS)
    atomic_write_text(out / "explanations.csv", frame.to_csv(index=False))
    return frame, skipped
