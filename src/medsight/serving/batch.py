"""Batch prediction over files and folders: resumable, shardable, never stopped by a bad file.

Rows go to the CSV in chunks, each chunk appended as whole lines and fsynced before the next
one starts. A kill can at worst leave one chunk's last line cut short; on a rerun that partial
line is dropped and every image not yet in the CSV is predicted, so rerunning the same command
until it exits completes the table and a finished table costs no decoding at all.
``--shard i/N`` keeps the files whose path hashes to ``i`` modulo ``N``: array jobs of a
cluster split the work without talking to each other, and a file keeps its shard when others
are added.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from medsight.bundle import Predictor, load_predictor, prediction_columns, predictions_frame
from medsight.data.io import find_images, load_image
from medsight.errors import MedsightError, UnreadableImageError
from medsight.fsutil import atomic_write_text
from medsight.progress import Progress

log = logging.getLogger(__name__)

CHUNK = 64  # images decoded ahead and written together when no batch size is given


@dataclass
class BatchResult:
    """What a batch run did: the CSV, how many rows it holds, and what it could not read."""

    out: Path
    engine: str  # "onnxruntime" or "torch"
    files: int  # image files in this shard
    already_done: int  # found in the CSV from an earlier run
    predicted: int  # new rows written by this run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    out_of_domain: int = 0  # new rows the domain guard flagged (in_domain false)
    guarded: bool = True  # False: the bundle has no domain guard (in_domain left empty)


def parse_shard(shard: str) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with 0 <= i < N."""
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise MedsightError(f"--shard must be i/N with 0 <= i < N (e.g. 0/4), not {shard!r}")
    return int(index), int(count)


def in_shard(path: str, index: int, count: int) -> bool:
    digest = hashlib.sha256(path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index


def _done_paths(out: Path, header: list[str]) -> set[str]:
    """Paths already in ``out`` (a new file gets the header); drops a partial last line left
    by a kill; refuses a file that is not this bundle's predictions table."""
    data = out.read_bytes() if out.is_file() else b""
    if not data.strip():
        atomic_write_text(out, ",".join(header) + "\n")
        return set()
    if not data.endswith(b"\n"):
        with open(out, "rb+") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
        log.warning("%s: dropped an incomplete last row (interrupted run)", out)
    try:
        frame = pd.read_csv(out, dtype={"path": str}, keep_default_na=False)
    except ValueError as exc:  # pandas' parser and decoding errors are ValueErrors
        raise MedsightError(f"{out}: not a predictions CSV ({exc}); choose another --out") from exc
    if list(frame.columns) != header:
        raise MedsightError(
            f"{out}: exists with columns {list(frame.columns)}, not this bundle's {header}; "
            "choose another --out"
        )
    return set(frame["path"])


def _decode(
    pool: ThreadPoolExecutor, paths: list[str], size: tuple[int, int], channels: int
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    def one(path: str) -> np.ndarray | str:
        try:
            return load_image(path, size=size, channels=channels)
        except UnreadableImageError as exc:
            return exc.reason

    results = list(pool.map(one, paths))
    good = [(p, r) for p, r in zip(paths, results, strict=True) if not isinstance(r, str)]
    bad = [(p, r) for p, r in zip(paths, results, strict=True) if isinstance(r, str)]
    pixels = np.stack([r for _, r in good]) if good else np.zeros((0, *size, channels), np.uint8)
    return [p for p, _ in good], pixels, bad


def _append(out: Path, rows: pd.DataFrame) -> None:
    buffer = io.StringIO()
    rows.to_csv(buffer, index=False, header=False, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    with open(out, "ab") as handle:
        handle.write(buffer.getvalue().encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())


def predict_files(
    bundle: str | Path | Predictor,
    paths: list[str | Path],
    out: str | Path,
    batch_size: int | None = None,
    shard: str | tuple[int, int] | None = None,
    onnx: bool = True,
    threads: int = 2,
    precision: str | None = None,
) -> BatchResult:
    """Predict every image under ``paths`` into the CSV ``out`` (see the module docstring).

    Columns: ``path``, ``probability`` (calibrated, of the positive class; of the predicted
    class for multi-class bundles), ``prediction`` (at the bundle's threshold) and
    ``p_<class>``, ``in_domain`` (``false``: unlike the training images, do not trust the
    prediction) and ``domain_score`` (above 1: out of domain). ONNX Runtime runs the model
    when the bundle has a current export (unless ``onnx=False``), its adopted int8 model unless
    ``precision="fp32"``, ``batch_size`` images per model call (None: by the input size, see
    :func:`~medsight.bundle.predictor.default_batch_size`); unreadable files are logged and
    returned, not fatal.
    """
    if batch_size is not None and batch_size < 1:
        raise MedsightError(f"batch size must be at least 1, not {batch_size}")
    if Path(out).is_dir():
        raise MedsightError(f"{out} is a folder; --out names the CSV file to write")
    model = bundle if isinstance(bundle, Predictor) else load_predictor(bundle, onnx, precision)
    spec, out = model.spec, Path(out)
    files = find_images(paths)
    if shard is not None:
        index, count = parse_shard(shard if isinstance(shard, str) else "/".join(map(str, shard)))
        files = [f for f in files if in_shard(f, index, count)]
    header = ["path", *prediction_columns(spec)]
    done = _done_paths(out, header)
    todo = [f for f in files if f not in done]
    engine = model.engine
    result = BatchResult(out, engine, len(files), len(files) - len(todo), 0)
    result.guarded = spec.domain is not None
    if not result.guarded:
        log.warning(
            "%s has no domain guard (made before medsight had one): in_domain stays empty, "
            "nothing checks that the images are like its training data; retrain to add one",
            spec.recipe or spec.model_name,
        )
    log.info(
        "%s: %d files, %d already done, %d to predict with %s",
        out,
        result.files,
        result.already_done,
        len(todo),
        engine,
    )
    # rows are decoded and written batch_size (default CHUNK) at a time
    size, chunks = tuple(spec.image_size), _chunks(todo, batch_size or CHUNK)
    # the next chunk decodes (threads release the GIL) while the model runs on this one
    with (
        Progress(len(todo), "predict", "img") as bar,
        ThreadPoolExecutor(threads) as pool,
        ThreadPoolExecutor(1) as ahead,
    ):
        pending = ahead.submit(_decode, pool, chunks[0], size, spec.channels) if chunks else None
        for i, chunk in enumerate(chunks):
            good, pixels, bad = pending.result()
            if i + 1 < len(chunks):
                pending = ahead.submit(_decode, pool, chunks[i + 1], size, spec.channels)
            for path, reason in bad:
                log.warning("skipped %s: %s", path, reason)
            result.skipped += bad
            if good:
                answers = model.answer(pixels, batch_size)
                paths = pd.DataFrame({"path": good, "label": ""})
                rows = predictions_frame(paths, answers.probs, spec, answers.domain_score)
                result.out_of_domain += int((answers.domain_score > 1.0).sum())
                _append(out, rows.drop(columns="label"))
                result.predicted += len(good)
            bar.update(len(chunk))
    return result


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[start : start + size] for start in range(0, len(items), size)]
