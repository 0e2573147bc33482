"""medsight's side of the benchmark: the tutorial recipes through the product's own code paths.

Training is what ``medsight train`` runs, through its run object
(:class:`medsight.training.run.Run`): ``prepare`` hashes, splits and decodes every image once
into its store (through the decoded-image cache, empty at the start: a first run; decoding
goes on while the first epoch trains, as in ``medsight train``), then Lightning fits
the run's planned module (the recipe's model in channels_last behind the bundle's input
pipeline) with its DataLoader workers, sampler, augmentation and schedule callbacks.
Prediction is what ``medsight predict`` runs (:func:`medsight.serving.batch.predict_files`:
files to probabilities, into a CSV) with ONNX Runtime on the bundle's export, or PyTorch.
Weights are random, as on the Keras side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import PeakMemory, steps_to_run, training_figures, write_json
from medsight.bundle import default_batch_size, load_predictor
from medsight.config import Recipe, load_recipe
from medsight.data.io import find_images, load_image
from medsight.serving.batch import predict_files

# PyTorch and Lightning are imported by the phases that use them: the prediction phase
# imports what `medsight predict` imports (no PyTorch with an ONNX export), so its memory is
# that of the command


def bench_recipe(name: str, extra: list[str] | None = None) -> Recipe:
    """The built-in recipe on a benchmark tree: random weights (no download offline, as on the
    Keras side) and the given files as they are (no curation). ResNet50 is timed in its
    all-layers phase (8 of its 10 epochs), as the Keras side trains it. ``extra``: more
    ``key=value`` overrides (a setting measured against another)."""
    overrides = ["model.pretrained=null", "data.curation=null"]
    if name == "covid-resnet50":
        overrides.append("train.freeze_epochs=0")
    return load_recipe(name, [*overrides, *(extra or [])])


def step_clock():
    """A Lightning callback that notes the time each training step ends and its images."""
    import lightning as L

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.sizes: list[int] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.ends.append(time.perf_counter())
            self.sizes.append(len(batch[1]))

    return StepClock()


def fresh_cache(work: Path) -> None:
    """An empty decoded-image cache: the figures are those of a first run on these files."""
    cache = work / "decoded-cache"
    shutil.rmtree(cache, ignore_errors=True)
    os.environ["MEDSIGHT_CACHE"] = str(cache)


def measure_train(
    name: str, tree: Path, warmup: int, steps: int, work: Path, extra: list[str] | None = None
) -> dict[str, Any]:
    import lightning as L

    from medsight.training.run import Run

    recipe = bench_recipe(name, extra)
    fresh_cache(work)
    run = Run(recipe, work / "run")
    with PeakMemory() as memory:
        start = time.perf_counter()
        data = run.prepare(tree)
        prepare_s = time.perf_counter() - start
        plan = run.plan(data)
        loader = plan.train
        total = steps_to_run(warmup, steps, len(loader))
        clock = step_clock()
        callbacks: list[L.Callback] = [clock, *plan.callbacks]
        trainer = L.Trainer(
            max_steps=total,
            accelerator=plan.device.accelerator,
            devices=1,
            precision=plan.device.precision,
            limit_val_batches=0,
            num_sanity_val_steps=0,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
        )
        fit_start = time.perf_counter()
        with warnings.catch_warnings():  # validation is left out on purpose: training is timed
            warnings.filterwarnings("ignore", message=".*validation_step.*val_dataloader")
            trainer.fit(plan.module, loader)
        if data.decoding is not None:  # decoded while the first epoch trained: let it finish
            data.decoding.result()
    train_images = int((data.split == "train").sum())
    figures = training_figures(
        prepare_s, fit_start, clock.ends, clock.sizes, len(loader), train_images, warmup, steps
    )
    decoded_images, workers = len(data.table), plan.device.workers
    del data, loader, trainer, plan
    start = time.perf_counter()  # a second run on the same files: decoded pixels from the cache
    run.prepare(tree)
    return {
        **figures,
        **memory.figures(),
        "prepare_warm_cache_s": round(time.perf_counter() - start, 3),
        "decoded_images": decoded_images,
        "batch_size": recipe.train.batch_size,
        "num_workers": workers,
        "allocator": os.environ.get("MEDSIGHT_ALLOCATOR_ACTIVE", "system malloc"),
    }


def make_bundle(name: str, tree: Path, dest: Path) -> dict[str, Any]:
    """A bundle of the recipe's model (random weights) and its checked ONNX export, as
    ``medsight export`` writes it; returns the export's duration."""
    from medsight.bundle import save_bundle
    from medsight.serving.export import export_onnx
    from medsight.training.model import build_model
    from medsight.training.prepare import positive_class

    recipe = bench_recipe(name)
    classes = sorted(folder.name for folder in tree.iterdir() if folder.is_dir())
    model, spec = build_model(recipe, classes, positive_class(classes, recipe.data.positive_class))
    save_bundle(dest, model.eval(), spec)
    start = time.perf_counter()
    export_onnx(dest, check_images=[tree])
    return {"export_s": round(time.perf_counter() - start, 2)}


def decode_all(files: list[str], size: tuple[int, int], channels: int) -> np.ndarray:
    """The decoding ``predict_files`` does (same reader, resize and thread count), alone."""
    with ThreadPoolExecutor(2) as pool:
        return np.stack(list(pool.map(lambda f: load_image(f, size, channels), files)))


def measure_predict(bundle: Path, tree: Path, engine: str, work: Path) -> dict[str, Any]:
    """Files to probabilities with ``predict_files``; then, apart, its decoding alone and its
    model alone, so a shortfall can be traced to one of them."""
    work.mkdir(parents=True, exist_ok=True)
    for csv in work.glob("predictions*.csv"):
        csv.unlink()
    with PeakMemory() as memory:
        predictor = load_predictor(bundle, prefer_onnx=engine == "onnxruntime")
        files = find_images([tree])
        predict_files(predictor, files[:2], work / "predictions-warmup.csv")
        start = time.perf_counter()
        done = predict_files(predictor, [tree], work / "predictions.csv")
        seconds = time.perf_counter() - start
    spec = predictor.spec
    start = time.perf_counter()
    pixels = decode_all(files, tuple(spec.image_size), spec.channels)
    decode_s = time.perf_counter() - start
    start = time.perf_counter()
    predictor.predict_proba(pixels)
    model_s = time.perf_counter() - start
    return {
        "predict_img_s": round(done.predicted / seconds, 2),
        "predict_images": done.predicted,
        "predict_s": round(seconds, 3),
        "engine": done.engine,
        "batch_size": default_batch_size(spec.image_size),  # per model call; 64 per chunk
        "decode_only_img_s": round(len(files) / decode_s, 2),
        "model_only_img_s": round(len(files) / model_s, 2),
        **memory.figures(),
        "allocator": os.environ.get("MEDSIGHT_ALLOCATOR_ACTIVE", "system malloc"),
    }


def versions() -> dict[str, str]:
    import lightning
    import onnxruntime
    import torch
    import torchvision

    import medsight

    return {
        "medsight": medsight.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": lightning.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["train", "bundle", "predict", "versions"])
    parser.add_argument("--recipe", help="built-in recipe name")
    parser.add_argument("--data", type=Path, help="class-folder tree of the recipe's images")
    parser.add_argument("--bundle", type=Path, help="bundle folder (written by 'bundle')")
    parser.add_argument("--engine", choices=["onnxruntime", "torch"], default="onnxruntime")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--work", type=Path, help="scratch folder (decoded-image cache, CSVs)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training only")
    args = parser.parse_args()
    if args.phase == "train":
        result = measure_train(args.recipe, args.data, args.warmup, args.steps, args.work, args.set)
    elif args.phase == "bundle":
        result = make_bundle(args.recipe, args.data, args.bundle)
    elif args.phase == "predict":
        result = measure_predict(args.bundle, args.data, args.engine, args.work)
    else:
        result = versions()
    write_json(args.out, result)


if __name__ == "__main__":
    main()
