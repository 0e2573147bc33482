"""The training module: fused optimisers, mixup, the Classifier and its callbacks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from medsight import api
from medsight.config import TrainConfig
from medsight.training.module import make_optimizer, mixup

REFERENCE = {
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.01, weight_decay=1e-4, eps=1e-7),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=1e-4, eps=1e-7),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=1e-4),
    "sgd": lambda p: torch.optim.SGD(p, lr=0.01, weight_decay=1e-4, momentum=0.9),
}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_fused_optimiser_matches_the_reference(name: str) -> None:
    torch.manual_seed(0)
    start = torch.randn(300)
    target = torch.randn(300)
    fused_w, plain_w = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    cfg = TrainConfig(optimizer=name, lr=0.01, weight_decay=1e-4)
    fused, plain = make_optimizer([fused_w], cfg), REFERENCE[name]([plain_w])
    assert fused.defaults["fused"] is True and type(fused) is type(plain)
    for _ in range(20):
        for weight, optimizer in ((fused_w, fused), (plain_w, plain)):
            optimizer.zero_grad()
            ((weight - target) ** 2).sum().backward()
            optimizer.step()
    assert not torch.allclose(fused_w, start)  # it did move
    torch.testing.assert_close(fused_w, plain_w, rtol=1e-5, atol=1e-6)


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


def test_masked_bce_leaves_missing_labels_out() -> None:
    from medsight.training.module import MaskedBCE, label_accuracy

    logits = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 1.0, 4.0]])
    targets = torch.tensor([[1.0, float("nan"), 0.0], [0.0, 1.0, float("nan")]])
    loss = MaskedBCE()(logits, targets)
    observed = ~torch.isnan(targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[observed], targets[observed]
    )
    torch.testing.assert_close(loss, expected)
    # whatever a missing entry's logit, it changes nothing; counted as 0 it would
    moved = logits.clone()
    moved[0, 1], moved[1, 2] = 9.0, -9.0
    torch.testing.assert_close(MaskedBCE()(moved, targets), loss)
    assert not torch.allclose(
        torch.nn.functional.binary_cross_entropy_with_logits(moved, targets.nan_to_num()),
        torch.nn.functional.binary_cross_entropy_with_logits(logits, targets.nan_to_num()),
    )
    # of the 4 recorded labels only (0.5 > 0 but absent) is wrong at probability 0.5
    assert float(label_accuracy(logits, targets)) == pytest.approx(3 / 4)


def test_masked_bce_weights_positives() -> None:
    from medsight.training.module import MaskedBCE

    logits = torch.tensor([[0.3, -0.2]])
    targets = torch.tensor([[1.0, 0.0]])
    plain, weighted = MaskedBCE()(logits, targets), MaskedBCE(torch.tensor([4.0, 4.0]))
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=torch.tensor([4.0, 4.0])
    )
    torch.testing.assert_close(weighted(logits, targets), expected)
    assert float(weighted(logits, targets)) > float(plain)
