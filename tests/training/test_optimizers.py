"""The recipes' optimisers use PyTorch's fused kernels and take the same steps as the plain ones."""

from __future__ import annotations

import pytest
import torch

from medsight.config import TrainConfig
from medsight.training.module import make_optimizer

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
