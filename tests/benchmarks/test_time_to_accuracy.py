"""Time to accuracy: per-epoch weights from a real (tiny) ``medsight train``, scored afterwards."""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.run import environments
from benchmarks.time_to_accuracy import first_reaching, held_out_accuracies, train_with_snapshots


def test_first_reaching() -> None:
    epochs = [
        {"epoch": 1, "elapsed_s": 10.0, "accuracy": 0.90},
        {"epoch": 2, "elapsed_s": 20.0, "accuracy": 0.96},
        {"epoch": 3, "elapsed_s": 30.0, "accuracy": 0.97},
    ]
    assert first_reaching(epochs, 0.95)["epoch"] == 2
    assert first_reaching(epochs, 0.96)["elapsed_s"] == 20.0  # at the target counts
    assert first_reaching(epochs, 0.99) is None


def test_every_epoch_is_snapshotted_and_scored(malaria_subset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = ["train", "--recipe", "malaria-lenet", "--data", str(malaria_subset)]
    argv += ["--out", str(run), "--epochs", "2", "data.limit=80", "data.image_size=[32,32]"]
    argv += ["train.num_workers=0"]
    env = {**environments()["medsight"], "MEDSIGHT_CACHE": "off", "MEDSIGHT_BOOTSTRAP": "20"}
    snapshots = tmp_path / "epochs"
    total = train_with_snapshots(argv, snapshots, env, tmp_path / "train.log")
    assert sorted(p.name for p in snapshots.iterdir()) == ["epoch-001.pt", "epoch-002.pt"]
    epochs = held_out_accuracies(run, snapshots)
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert 0 < epochs[0]["elapsed_s"] < epochs[1]["elapsed_s"] < total
    assert all(0 <= e["accuracy"] <= 1 for e in epochs)
    # the command ran unchanged otherwise: a complete run directory
    assert (run / "bundle" / "bundle.json").is_file() and (run / "metrics.json").is_file()


def test_with_weight_averaging_the_averaged_weights_are_snapshotted(
    malaria_subset: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    argv = ["train", "--recipe", "malaria-lenet", "--data", str(malaria_subset)]
    argv += ["--out", str(run), "--epochs", "2", "data.limit=80", "data.image_size=[32,32]"]
    argv += ["train.num_workers=0", "train.ema=0.5"]
    env = {**environments()["medsight"], "MEDSIGHT_CACHE": "off", "MEDSIGHT_BOOTSTRAP": "20"}
    snapshots = tmp_path / "epochs"
    train_with_snapshots(argv, snapshots, env, tmp_path / "train.log")
    snapshot = torch.load(snapshots / "epoch-002.pt", weights_only=True)["state_dict"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    averaged = {k.removeprefix("model."): v for k, v in last["state_dict"].items()}
    raw = {k.removeprefix("model."): v for k, v in last["current_model_state"].items()}
    assert snapshot.keys() == averaged.keys()
    assert all(torch.equal(snapshot[k], averaged[k]) for k in snapshot)
    assert not all(torch.equal(snapshot[k], raw[k]) for k in snapshot)  # not the raw weights
