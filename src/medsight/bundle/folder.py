"""The bundle folder: written atomically, read safely, its model built in PyTorch.

A bundle folder holds ``model.safetensors`` (weights only: loading never unpickles code),
``bundle.json`` (its :class:`~medsight.bundle.spec.BundleSpec`), ``model_card.md`` (also as
``README.md``, the Hub's name for it), the domain guard's ``domain.safetensors``, for a bundle
that crops to the lungs the lung U-Net's ``lungs.safetensors``, and what it was trained on
(``training_images.json``, :mod:`~medsight.bundle.seen`). A run directory that holds
``bundle/`` is accepted wherever a bundle is. File names, reading ``bundle.json`` and finding
the folder need no PyTorch: they are :mod:`.files`.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from medsight.bundle.domain import WEIGHTS_FILE as DOMAIN_WEIGHTS
from medsight.bundle.domain import DomainGuard
from medsight.bundle.files import SPEC_FILE, WEIGHTS_FILE, bundle_folder, read_spec, write_card
from medsight.bundle.loaded import Bundle
from medsight.bundle.seen import TrainingImages
from medsight.bundle.spec import BundleSpec
from medsight.errors import MedsightError
from medsight.fsutil import atomic_dir
from medsight.models.lungs import WEIGHTS_FILE as LUNG_WEIGHTS
from medsight.models.lungs import LungCrop, lung_crop_from
from medsight.models.zoo import create_model


def save_bundle(
    folder: Path,
    model: torch.nn.Module,
    spec: BundleSpec,
    card: str | None = None,
    lung_crop: LungCrop | None = None,
    guard: DomainGuard | None = None,
    training_images: TrainingImages | None = None,
) -> Path:
    """Write a bundle (and its model card) atomically: a kill never leaves a half-written one."""
    from medsight import __version__

    spec = spec.model_copy(
        update={
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "medsight_version": __version__,
        }
    )
    with atomic_dir(folder) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        if lung_crop is not None:
            save_file(lung_crop.weights(), str(tmp / LUNG_WEIGHTS))
        if guard is not None:
            save_file(guard.weights(), str(tmp / DOMAIN_WEIGHTS))
        (tmp / SPEC_FILE).write_text(json.dumps(spec.model_dump(mode="json"), indent=2))
        if card:
            write_card(tmp, card)
        if training_images is not None:
            training_images.save(tmp)
    return folder


def read_bundle(
    folder: str | Path, weights: bool = True
) -> tuple[BundleSpec, dict[str, torch.Tensor], Path]:
    """A bundle's description and weights, without building its model (also accepts the run
    directory that holds ``bundle/``); returns the bundle folder too."""
    folder = bundle_folder(folder)
    spec = read_spec(folder)
    return spec, load_weights(folder / WEIGHTS_FILE) if weights else {}, folder


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a damaged or foreign file is one line naming it (the
    format holds no code, so nothing in it ever runs)."""
    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError, OSError, a pickle or zip renamed, ...
        raise MedsightError(
            f"{path}: not a readable safetensors file ({exc}); the bundle is damaged: copy it "
            "again or train it again"
        ) from exc


def load_bundle(folder: str | Path) -> Bundle:
    """Load a bundle folder (or the run directory that holds ``bundle/``), ready to predict."""
    spec, state, folder = read_bundle(folder)
    model = create_model(
        spec.model_name,
        num_classes=len(spec.class_names),
        in_channels=spec.channels,
        image_size=spec.image_size,
        **spec.model_kwargs,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise MedsightError(
            f"{folder / WEIGHTS_FILE}: the weights do not fit the model bundle.json describes "
            f"({first[0].strip()})"
        ) from exc
    lung_crop = None
    if spec.lung_crop is not None:
        if not (folder / LUNG_WEIGHTS).is_file():
            raise MedsightError(
                f"{folder}: the bundle crops to the lungs but {LUNG_WEIGHTS} is missing"
            )
        lung_crop = lung_crop_from(spec.lung_crop, load_weights(folder / LUNG_WEIGHTS))
    guard = None
    if spec.domain is not None:
        if not (folder / DOMAIN_WEIGHTS).is_file():
            raise MedsightError(
                f"{folder}: bundle.json describes a domain guard but {DOMAIN_WEIGHTS} is missing"
            )
        guard = DomainGuard.from_weights(load_weights(folder / DOMAIN_WEIGHTS))
    return Bundle(model, spec, lung_crop, guard)
