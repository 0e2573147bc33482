"""Train the lung U-Net of :mod:`medsight.models.lungs` on chest X-rays with lung masks.

The masks medsight knows by name are the V7 Labs lung masks of the ieee8023 COVID-19 image
collection, shipped inside the ``torchxrayvision`` package (``pip install 'medsight[lungs]'``);
the X-rays they outline are that collection's ``images/`` folder (510 of its images have one; 82
of those masks are empty on purpose: CT slices and lateral views have no frontal lung field, and
they teach the U-Net to leave such images whole). Any folder or zip of binary masks named like
their images works too. About 6 minutes on 2 CPU cores.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from medsight.config import LungCropConfig
from medsight.data.io import is_image_file, load_image
from medsight.errors import ConfigError, DataError
from medsight.models.lung_spec import LungSpec
from medsight.models.lungs import (
    LungCrop,
    build_segmenter,
    load_lungs,
    save_lungs,
    segmenter_input,
)
from medsight.progress import Progress

log = logging.getLogger(__name__)

TORCHXRAYVISION_MASKS = "semantic_masks_v7labs_lungs.zip"
LOAD_SIZE = (224, 224)  # pairs are augmented at this size, then shrunk as for cropping
MIN_PAIRS = 20


def _mask_files(masks: str) -> tuple[dict[str, bytes], str]:
    """Mask bytes by file name, from a folder or a zip, or from torchxrayvision's package."""
    if masks == "torchxrayvision":
        found = importlib.util.find_spec("torchxrayvision")
        if found is None or not found.submodule_search_locations:
            raise ConfigError(
                "the lung masks come from the torchxrayvision package: pip install "
                "'medsight[lungs]' (or give a folder of masks: preprocess.lung_crop.masks=DIR)"
            )
        package = Path(next(iter(found.submodule_search_locations)))
        path = package / "data" / TORCHXRAYVISION_MASKS
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if is_image_file(n)]
            return {Path(n).name: archive.read(n) for n in names}, "torchxrayvision (V7 Labs)"
    else:
        path = Path(masks)
    if path.is_dir():
        return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if is_image_file(p)}, str(
            path
        )
    if path.suffix == ".zip" and path.is_file():
        with zipfile.ZipFile(path) as archive:
            return {
                Path(name).name: archive.read(name)
                for name in archive.namelist()
                if is_image_file(name)
            }, str(path)
    raise ConfigError(f"{path}: no lung masks there (expected a folder or a .zip of mask images)")


def lung_pairs(images: str | Path, masks: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Grey X-rays (N, H, W) and their binary lung masks, paired by file name."""
    images = Path(images)
    if not images.is_dir():
        raise ConfigError(
            f"{images}: not a folder. The lung masks outline the ieee8023 COVID-19 collection's "
            "images: set preprocess.lung_crop.images to its images/ folder"
        )
    files, origin = _mask_files(masks)
    pixels, outlines = [], []
    for name, data in files.items():
        if not (images / name).is_file():
            continue
        pixels.append(load_image(images / name, LOAD_SIZE, channels=1)[:, :, 0])
        try:
            mask = Image.open(io.BytesIO(data)).convert("L")
        except OSError as exc:
            raise DataError(f"{origin}: mask {name} is unreadable ({exc})") from exc
        mask = mask.resize((LOAD_SIZE[1], LOAD_SIZE[0]), Image.Resampling.NEAREST)
        outlines.append(np.asarray(mask) > 127)
    if len(pixels) < MIN_PAIRS:
        raise DataError(
            f"only {len(pixels)} of the {len(files)} lung masks in {origin} have an image of "
            f"the same name in {images} (need at least {MIN_PAIRS})"
        )
    log.info("lung masks: %d image/mask pairs (%s, %s)", len(pixels), images, origin)
    return np.stack(pixels), np.stack(outlines), f"{len(pixels)} masks from {origin}"


def _augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple:
    """Random affine and mirror (image and mask alike), then brightness and contrast."""
    geometry = v2.Compose(
        [
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.75, 1.25)),
            v2.RandomHorizontalFlip(),
        ]
    )
    xs, ys = [], []
    for image, mask in zip(x, y, strict=True):
        image, mask = geometry(tv_tensors.Image(image), tv_tensors.Mask(mask))
        xs.append(image)
        ys.append(mask)
    x, y = torch.stack(xs).float() / 255, torch.stack(ys).float()
    n = len(x)
    contrast = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=generator)
    shift = 0.24 * torch.rand(n, 1, 1, 1, generator=generator) - 0.12
    mean = x.mean((1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + shift).clamp(0, 1), y


def dice(logits: torch.Tensor, target: torch.Tensor) -> float:
    """Mean Dice overlap of predicted (logit > 0) and true masks per image; an empty mask
    (a CT slice, a lateral view) predicted empty counts as a perfect 1."""
    pred = (logits > 0).float()
    inter = (pred * target).sum((1, 2, 3))
    both = pred.sum((1, 2, 3)) + target.sum((1, 2, 3))
    return float(torch.where(both > 0, 2 * inter / both.clamp(min=1), 1.0).mean())


def train_lungs(
    images: str | Path,
    masks: str = "torchxrayvision",
    epochs: int = 20,
    seed: int = 0,
    spec: LungSpec | None = None,
) -> LungCrop:
    """Fit the lung U-Net (ImageNet encoder when offline weights exist) and return the crop."""
    from medsight.models.pretrained import encoder_imagenet_state

    spec = spec or LungSpec()
    pixels, outlines, origin = lung_pairs(images, masks)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build_segmenter(spec)
    encoder_imagenet_state(model.encoder, spec.encoder)
    x_all = torch.from_numpy(pixels)[:, None]
    y_all = torch.from_numpy(outlines)[:, None].to(torch.uint8)
    order = torch.randperm(len(x_all), generator=generator)
    n_val = max(1, len(x_all) // 10)
    val, train = order[:n_val], order[n_val:]
    batch = 16
    steps = epochs * -(-len(train) // batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=steps)
    shrink = lambda m: F.interpolate(m, size=(spec.size, spec.size), mode="nearest")  # noqa: E731
    with Progress(steps, "lungs", "batch") as bar:
        for _ in range(epochs):
            model.train()
            shuffled = train[torch.randperm(len(train), generator=generator)]
            for start in range(0, len(shuffled), batch):
                rows = shuffled[start : start + batch]
                x, y = _augment(x_all[rows], y_all[rows], generator)
                logits, y = model(segmenter_input(x, spec.size)), shrink(y)
                overlap = 2 * (torch.sigmoid(logits) * y).sum() + 1
                soft_dice = 1 - overlap / (torch.sigmoid(logits).sum() + y.sum() + 1)
                loss = F.binary_cross_entropy_with_logits(logits, y) + soft_dice
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.update()
    model.eval()
    with torch.inference_mode():
        x = segmenter_input(x_all[val].float() / 255, spec.size)
        score = dice(model(x), shrink(y_all[val].float()))
    log.info("lung U-Net: Dice %.3f on %d held-out masks", score, n_val)
    spec = spec.model_copy(update={"val_dice": round(score, 4), "trained_on": origin})
    return LungCrop(model, spec)


def lungs_for_run(
    cfg: LungCropConfig, data: str | Path, out: Path, seed: int, reuse: bool
) -> LungCrop:
    """The run's lung crop, saved to ``RUN_DIR/lungs``: the lung model the recipe names, else
    one trained now. ``reuse`` (a resumed run, or a DDP process other than the first) reloads
    the one saved there, so every process and every restart crops alike."""
    folder = out / "lungs"
    if reuse:
        return load_lungs(folder)
    if cfg.model:
        crop = load_lungs(Path(cfg.model).expanduser())
    else:
        images = Path(cfg.images).expanduser() if cfg.images else default_images(data)
        crop = train_lungs(images, cfg.masks, cfg.epochs, seed)
    save_lungs(folder, crop)
    return crop


def default_images(data: str | Path) -> Path:
    """The ieee8023 images beside the data folder (``<data>/../covid/images``), else those of
    the ``covid`` download (fetched into the cache on first use)."""
    from medsight.data.download import companion

    return companion(data, "covid", "covid") / "images"
