"""How far from the machine's limit: measured fp32 peak and each model's work per image.

The peak is the best that a large fp32 matrix product reaches on all cores (see
:func:`peak_gflops`): no model step can do better. Each recipe's training step is counted with
:class:`torch.utils.flop_counter.FlopCounterMode` (convolutions and matrix products, forward and
backward; pooling, activations and the optimiser are not counted, so achieved GFLOP/s is a
slight underestimate). Multiplied by a measured images/s it gives the achieved GFLOP/s. The
model-only training rate (synthetic tensors, no data pipeline) separates compute from input.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.common import write_json
from benchmarks.medsight_side import bench_recipe
from medsight.models.freeze import freeze_base
from medsight.training.model import build_model
from medsight.training.module import Classifier, make_optimizer


def _best_rate(fn, flops: float, seconds: float) -> float:
    fn()
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        best = max(best, flops / (time.perf_counter() - start))
    return round(best / 1e9, 1)


def peak_gflops(seconds: float = 2.0) -> dict[str, float]:
    """Best GFLOP/s of a large fp32 matrix product, run two ways: ``torch.mm`` (MKL) and as a
    1x1 convolution (oneDNN, which every convolution here uses). Both are reported because
    they can differ by 2x: MKL may pick its AVX2 code on AMD CPUs that have AVX-512."""
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    x = torch.randn(1, 1024, 64, 64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(1024, 1024, 1, 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        rates = {
            "mm_mkl": _best_rate(lambda: torch.mm(a, b), 2 * 4096**3, seconds / 2),
            "conv1x1_onednn": _best_rate(
                lambda: torch.nn.functional.conv2d(x, w), 2 * 1024**2 * 64 * 64, seconds / 2
            ),
        }
    return {"peak_gflops": max(rates.values()), **rates}


# timed steps at least: VGG16 takes ~2 s a step on 2 cores, and two steps read it 20 % fast
MIN_STEPS = 5


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def model_costs(name: str, seconds: float = 3.0) -> dict[str, Any]:
    """GFLOP per image of a training step and of a forward pass, and the model-only training
    rate, for the recipe's model at its batch size (frozen base where the recipe trains so)."""
    recipe = bench_recipe(name)
    model, _ = build_model(recipe, ["negative", "positive"])
    if recipe.train.freeze_epochs:
        freeze_base(model)
    module = Classifier(model, recipe.train)
    batch = recipe.train.batch_size
    x = torch.randn(batch, recipe.data.channels, *recipe.data.image_size).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 2, (batch,))
    optimizer = make_optimizer(model.parameters(), recipe.train)

    def step() -> None:
        optimizer.zero_grad()
        module.loss(module(x), y).backward()
        optimizer.step()

    module.train()
    train_flops = _flops(step)
    steps, start = 0, time.perf_counter()
    while steps < MIN_STEPS or time.perf_counter() - start < seconds:
        step()
        steps += 1
    rate = steps * batch / (time.perf_counter() - start)
    module.eval()
    with torch.inference_mode():
        forward_flops = _flops(lambda: module(x))
    return {
        "train_gflop_per_image": round(train_flops / batch / 1e9, 4),
        "forward_gflop_per_image": round(forward_flops / batch / 1e9, 4),
        "model_only_train_img_s": round(rate, 2),
        "batch_size": batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["peak", "models"])
    parser.add_argument("recipes", nargs="*", help="recipes whose models to measure")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing per measurement")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    if args.phase == "peak":
        result = {**peak_gflops(args.seconds), "threads": torch.get_num_threads()}
    else:
        result = {name: model_costs(name, args.seconds) for name in args.recipes}
    write_json(args.out, result)


if __name__ == "__main__":
    main()
