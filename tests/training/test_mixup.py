"""Mixup blends image pairs of a batch and their losses with one Beta-distributed weight."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from medsight import api
from medsight.training.module import mixup


def test_every_image_is_blended_with_one_partner_of_the_batch() -> None:
    images = torch.arange(8.0).view(8, 1, 1, 1).expand(8, 3, 4, 4)  # image i is all i
    labels = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    torch.manual_seed(3)
    mixed, partner_labels, weight = mixup(images, labels, alpha=0.4)
    assert 0.0 < weight < 1.0
    partner = (mixed[:, 0, 0, 0] - weight * torch.arange(8.0)) / (1 - weight)
    partner = partner.round().long()
    assert sorted(partner.tolist()) == list(range(8))  # a permutation of the batch
    torch.testing.assert_close(mixed, weight * images + (1 - weight) * images[partner])
    assert torch.equal(partner_labels, labels[partner])


def test_the_same_seed_draws_the_same_blend_and_alpha_shapes_the_weights() -> None:
    images, labels = torch.rand(6, 3, 4, 4), torch.tensor([0, 1, 0, 1, 0, 1])
    torch.manual_seed(7)
    first = mixup(images, labels, 0.4)
    torch.manual_seed(7)
    again = mixup(images, labels, 0.4)
    assert torch.equal(first[0], again[0]) and first[2] == again[2]
    torch.manual_seed(0)
    extreme = [min(w, 1 - w) for *_, w in (mixup(images, labels, 0.05) for _ in range(200))]
    torch.manual_seed(0)
    even = [min(w, 1 - w) for *_, w in (mixup(images, labels, 50.0) for _ in range(200))]
    assert sum(extreme) / 200 < 0.1 < 0.4 < sum(even) / 200  # small alpha: mostly one image


def test_a_run_with_mixup_trains_and_records_no_train_accuracy(
    malaria_subset: Path, tmp_path: Path
) -> None:
    out = api.train(
        "malaria-lenet",
        malaria_subset,
        tmp_path / "mixup",
        epochs=2,
        seed=0,
        overrides=[
            "data.image_size=[64, 64]",
            "train.batch_size=16",
            "train.num_workers=0",
            "train.mixup=0.4",
        ],
    )
    history = pd.read_csv(out / "history.csv")
    assert history["train_loss"].notna().all() and history["train_accuracy"].isna().all()
    assert history["val_accuracy"].notna().all()
    assert (out / "bundle" / "model.safetensors").is_file()


def test_mixup_weight_must_not_be_negative() -> None:
    from medsight.config import TrainConfig

    with pytest.raises(ValueError, match="mixup"):
        TrainConfig(mixup=-0.1)
