"""Augmentations: Keras-like 'nearest' fill, shapes kept, eval transform deterministic."""

from __future__ import annotations

import torch

from medsight.config import AugmentConfig
from medsight.data.transforms import eval_transform, train_transform


def _constant(value: int = 200, size: int = 32) -> torch.Tensor:
    return torch.full((3, size, size), value, dtype=torch.uint8)


def test_nearest_fill_leaves_no_black_corners() -> None:
    torch.manual_seed(0)
    nearest = train_transform(AugmentConfig(rotation=45, zoom=0.3), (32, 32), 3, (0,), (1,))
    constant = train_transform(
        AugmentConfig(rotation=45, zoom=0.3, fill="constant"), (32, 32), 3, (0,), (1,)
    )
    for _ in range(10):
        assert float(nearest(_constant()).min()) > 0.7  # all pixels stay ~200/255
    assert min(float(constant(_constant()).min()) for _ in range(10)) == 0.0


def test_train_transform_keeps_shape_and_varies() -> None:
    tf = train_transform(
        AugmentConfig(rotation=20, shift=0.1, hflip=True, brightness=0.3, contrast=0.3),
        (40, 48),
        3,
        (0.5,),
        (0.5,),
    )
    image = torch.randint(0, 256, (3, 40, 48), dtype=torch.uint8)
    outs = torch.stack([tf(image) for _ in range(8)])
    assert outs.shape == (8, 3, 40, 48) and outs.dtype == torch.float32
    assert outs.std(dim=0).mean() > 0.05


def test_eval_transform_is_deterministic_normalisation() -> None:
    tf = eval_transform(3, (0.5,), (0.25,))
    out = tf(_constant(255))
    assert torch.allclose(out, torch.full_like(out, 2.0))
    assert torch.equal(tf(_constant(10)), tf(_constant(10)))
