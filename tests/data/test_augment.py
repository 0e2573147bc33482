"""Batched augmentation: the same geometry as torchvision's per-image affine, Keras' 'nearest'
fill, exact flips, seeded draws, and the serving normalisation after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from medsight.config import AugmentConfig
from medsight.data.augment import PARAMS, BatchTransform, augment_batch, draw
from medsight.data.dataset import ArrayDataset

SIZE = (40, 48)  # not square: height and width must not be swapped anywhere


def _params(**values: float) -> torch.Tensor:
    row = dict.fromkeys(PARAMS, 0.0) | {"scale": 1.0, "brightness": 1.0, "contrast": 1.0}
    return torch.tensor([[(row | values)[name] for name in PARAMS]], dtype=torch.float64)


def _image(channels: int = 3) -> torch.Tensor:
    return torch.randint(
        0, 256, (1, channels, *SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize(
    "angle, shift, scale, shear", [(17.0, (3, -2), 1.1, 8.0), (-40.0, (0, 5), 0.8, -15.0)]
)
def test_geometry_matches_torchvision_affine(angle, shift, scale, shear) -> None:
    image = _image().float() / 255
    aug = AugmentConfig(rotation=45, shift=0.2, zoom=0.3, shear=20, fill="constant")
    params = _params(angle=angle, shift_x=shift[0], shift_y=shift[1], scale=scale, shear=shear)
    ours = augment_batch(image, params, aug)
    theirs = TF.affine(
        image,
        angle=angle,
        translate=list(shift),
        scale=scale,
        shear=[shear, 0.0],
        interpolation=TF.InterpolationMode.BILINEAR,
    )
    inside = augment_batch(torch.ones_like(image), params, aug) == 1  # no fill involved
    assert inside.float().mean() > 0.5
    torch.testing.assert_close(ours[inside], theirs[inside], atol=1e-5, rtol=0)
    assert not torch.allclose(ours, image)


def test_nearest_fill_repeats_the_edge_and_constant_fill_is_black() -> None:
    flat = torch.full((1, 3, *SIZE), 200, dtype=torch.uint8)
    params = _params(angle=45, scale=0.7, shift_x=6)
    nearest = augment_batch(flat, params, AugmentConfig(rotation=45, zoom=0.3, shift=0.2))
    constant = augment_batch(
        flat, params, AugmentConfig(rotation=45, zoom=0.3, shift=0.2, fill="constant")
    )
    torch.testing.assert_close(nearest, torch.full_like(nearest, 200 / 255))
    assert float(constant.min()) == 0.0


def test_flips_are_exact_mirrors() -> None:
    image = _image()
    aug = AugmentConfig(hflip=True, vflip=True)
    x = image.float() / 255
    torch.testing.assert_close(augment_batch(image, _params(hflip=1), aug), x.flip(-1))
    torch.testing.assert_close(augment_batch(image, _params(vflip=1), aug), x.flip(-2))
    torch.testing.assert_close(augment_batch(image, _params(), aug), x)


def test_brightness_and_contrast_factors() -> None:
    image = _image(1)
    aug = AugmentConfig(brightness=0.5, contrast=0.5)
    x = image.float() / 255
    brighter = augment_batch(image, _params(brightness=1.2), aug)
    torch.testing.assert_close(brighter, (x * 1.2).clamp(0, 1))
    flat = augment_batch(image, _params(contrast=0.5), aug)
    torch.testing.assert_close(flat, 0.5 * x + 0.5 * x.mean())


def test_blur_is_torchvisions_gaussian_per_image_and_identity_at_zero() -> None:
    images = torch.cat([_image(), _image().flip(-1)]).float() / 255
    blurred = augment_batch(
        images, torch.cat([_params(blur=1.2), _params()]), AugmentConfig(blur=2)
    )
    radius = 4  # ceil(3 * 1.2): the widest sigma in the batch sets the kernel
    reference = TF.gaussian_blur(images[0], [2 * radius + 1] * 2, [1.2, 1.2])
    torch.testing.assert_close(blurred[0], reference)
    torch.testing.assert_close(blurred[1], images[1])  # sigma 0: untouched
    assert (blurred[0] - images[0]).abs().mean() > 0.05


def test_draws_are_seeded_per_image_and_within_range() -> None:
    aug = AugmentConfig(
        rotation=20, shift=0.1, zoom=0.2, shear=10, hflip=True, brightness=0.3, blur=1.5
    )
    params = draw(aug, list(range(400)), SIZE)
    again = draw(aug, [5, 3], SIZE)
    torch.testing.assert_close(again, params[[5, 3]])  # a function of the image's seed only
    column = dict(zip(PARAMS, params.T, strict=True))
    assert column["angle"].abs().max() <= 20 and column["angle"].std() > 5
    assert column["shift_x"].abs().max() == 5 and column["shift_y"].abs().max() == 4  # pixels
    assert column["scale"].min() >= 0.8 and column["scale"].max() <= 1.2
    assert 0.3 < column["hflip"].mean() < 0.7 and column["vflip"].sum() == 0
    assert column["blur"].min() >= 0 and column["blur"].max() <= 1.5 and column["blur"].std() > 0.3
    assert column["contrast"].eq(1).all()  # not asked for: never drawn away from identity


def test_batch_transform_augments_when_training_and_passes_uint8_otherwise() -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (6, *SIZE, 3), dtype=np.uint8)
    dataset = ArrayDataset(pixels, np.arange(6) % 2, seed=7)
    items = dataset.__getitems__([len(pixels) * 2 + i for i in range(6)])  # epoch 1 keys
    images, labels = BatchTransform()(items)
    assert images.dtype == torch.uint8 and images.shape == (6, 3, *SIZE)
    assert labels.tolist() == [0, 1, 0, 1, 0, 1]
    assert torch.equal(images, torch.from_numpy(pixels).permute(0, 3, 1, 2))
    augment = BatchTransform(AugmentConfig(rotation=20, hflip=True))
    first, second = augment(items)[0], augment(items)[0]
    assert first.dtype == torch.float32 and 0 <= first.min() and first.max() <= 1
    torch.testing.assert_close(first, second)  # seeded: the same epoch augments the same way
    other_epoch = augment(dataset.__getitems__([len(pixels) * 3 + i for i in range(6)]))[0]
    assert (other_epoch - first).abs().mean() > 0.05
    unchanged = BatchTransform(AugmentConfig())(items)[0]
    torch.testing.assert_close(unchanged, images.float() / 255)
