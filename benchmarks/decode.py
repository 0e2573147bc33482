"""Decoders side by side, and decoding overlapped with the model in ``medsight predict``.

    .venv/bin/python -m benchmarks.decode [--data DIR] [--images 600] [--out results/decode.json]

Part 1: per image, decode + resize to a recipe's size with medsight's reader (Pillow, JPEG at
the draft scale: ``medsight.data.io.load_image``) against libjpeg-turbo / libpng through
OpenCV and torchvision.io, followed by the same Pillow resize (``to_pixels``) or by the
library's own resize. Per reader: CPU ms per image (thread time, steadier than wall time on a
shared machine), wall ms, the speed ratio against medsight's reader, the largest pixel
difference and the share of pixels that differ, and whether it refuses a corrupt JPEG that
Pillow refuses. Part 2: ``predict_files`` (the next chunk decodes while the model answers
this one) against the same work one chunk after the other, on Kermany X-rays with a small
seeded bundle. Results: ``results/decode.json``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import PIL
import torch
from PIL import Image, features
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as tvf

from benchmarks.common import write_json
from medsight.bundle import BundleSpec, load_predictor, save_bundle
from medsight.data.io import find_images, load_image, to_pixels
from medsight.models.zoo import create_model
from medsight.serving.batch import predict_files

DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)
Reader = Callable[[bytes, tuple[int, int]], np.ndarray]


def _opencv(data: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), 4)


def _torchvision(data: bytes) -> torch.Tensor:
    return decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)


READERS: dict[str, Reader] = {
    "opencv + Pillow resize": lambda d, s: to_pixels(Image.fromarray(_opencv(d)), s),
    "torchvision + Pillow resize": lambda d, s: to_pixels(
        Image.fromarray(_torchvision(d).permute(1, 2, 0).numpy()), s
    ),
    "torchvision + its antialiased resize": lambda d, s: (
        tvf.resize(_torchvision(d), list(s), antialias=True).permute(1, 2, 0).numpy()
    ),
    "opencv + INTER_AREA resize": lambda d, s: cv2.resize(
        _opencv(d), (s[1], s[0]), interpolation=cv2.INTER_AREA
    ),
}


def _time(fn: Callable[[], object], count: int, repeats: int) -> tuple[float, float]:
    """Best of ``repeats``: (CPU ms, wall ms) per item."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(cpu) / count * 1e3, min(wall) / count * 1e3


def compare_readers(files: list[Path], size: tuple[int, int], repeats: int) -> list[dict]:
    blobs = [f.read_bytes() for f in files]
    ref = [load_image(f, size, 3) for f in files]
    base_cpu, base_wall = _time(
        lambda: [load_image(f, size, 3) for f in files], len(files), repeats
    )
    rows = [{"reader": "medsight (Pillow, draft)", "cpu_ms": base_cpu, "wall_ms": base_wall}]
    for name, read in READERS.items():
        cpu, wall = _time(lambda r=read: [r(b, size) for b in blobs], len(files), repeats)
        outs = [read(b, size) for b in blobs]
        diffs = [np.abs(o.astype(np.int16) - r) for o, r in zip(outs, ref, strict=True)]
        rows.append(
            {
                "reader": name,
                "cpu_ms": cpu,
                "wall_ms": wall,
                "max_diff": int(max(d.max() for d in diffs)),
                "pixels_differ_pct": float(np.mean([np.mean(d > 0) for d in diffs]) * 100),
            }
        )
    for row in rows:
        row["speed_vs_medsight_cpu"] = base_cpu / row["cpu_ms"]
    return rows


def thread_scaling(files: list[Path], size: tuple[int, int]) -> dict[str, float]:
    """Images/s on 1 and 2 threads: > 1x means the reader releases the GIL."""
    blobs = [f.read_bytes() for f in files]
    readers = {"medsight (Pillow, draft)": lambda b: load_image(f_of[b], size, 3)}
    f_of = dict(zip(blobs, files, strict=True))
    readers |= {name: (lambda b, r=r: r(b, size)) for name, r in READERS.items()}
    out = {}
    for name, read in readers.items():
        rates = []
        for threads in (1, 2):
            with ThreadPoolExecutor(threads) as pool:
                start = time.perf_counter()
                list(pool.map(read, blobs))
                rates.append(len(blobs) / (time.perf_counter() - start))
        out[name] = rates[1] / rates[0]
    return out


def corrupt_jpeg_verdicts(jpeg: Path) -> dict[str, str]:
    """A real JPEG with 40 bytes of its entropy-coded data damaged: who decodes it anyway."""
    data = bytearray(jpeg.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 40):
        data[i] = 0xFF if i % 7 == 0 else data[i] ^ 0x55
    bad = bytes(data)
    path = Path(tempfile.mkdtemp()) / "corrupt.jpeg"
    path.write_bytes(bad)
    verdicts = {}
    for name, read in [
        ("medsight (Pillow)", lambda: load_image(path, (224, 224))),
        ("opencv", lambda: _opencv(bad)),
        ("torchvision", lambda: _torchvision(bad)),
    ]:
        try:
            read()
            verdicts[name] = "decoded"
        except Exception as exc:  # each library raises its own type
            verdicts[name] = f"refused ({type(exc).__name__})"
    return verdicts


def predict_overlap(xrays: list[Path], size: tuple[int, int], batch: int) -> dict[str, float]:
    """``predict_files`` against decode-then-model one chunk after the other."""
    torch.manual_seed(0)
    spec = BundleSpec(
        model_name="malaria_lenet",
        class_names=["NORMAL", "PNEUMONIA"],
        positive_class="PNEUMONIA",
        image_size=size,
        channels=3,
        mean=(0.0,) * 3,
        std=(1.0,) * 3,
    )
    work = Path(tempfile.mkdtemp())
    folder = work / "images"
    folder.mkdir()
    for f in xrays:
        (folder / f.name).symlink_to(f)
    bundle = save_bundle(work / "bundle", create_model(spec.model_name, 2, 3, size), spec)
    model = load_predictor(bundle, prefer_onnx=False)
    paths = find_images([folder])
    model.answer(np.stack([load_image(p, size) for p in paths[:batch]]), batch)  # warm up

    with ThreadPoolExecutor(2) as pool:
        start = time.perf_counter()
        pixels = np.stack(list(pool.map(lambda p: load_image(p, size), paths)))
        decode_s = time.perf_counter() - start
    start = time.perf_counter()
    model.answer(pixels, batch)
    model_s = time.perf_counter() - start

    def sequential() -> None:
        with ThreadPoolExecutor(2) as pool:
            for i in range(0, len(paths), batch):
                chunk = np.stack(
                    list(pool.map(lambda p: load_image(p, size), paths[i : i + batch]))
                )
                model.answer(chunk, batch)

    start = time.perf_counter()
    sequential()
    sequential_s = time.perf_counter() - start
    start = time.perf_counter()
    predict_files(model, [folder], work / "p.csv", batch_size=batch)
    overlapped_s = time.perf_counter() - start
    n = len(paths)
    return {
        "images": n,
        "decode_alone_img_s": n / decode_s,
        "model_alone_img_s": n / model_s,
        "one_after_the_other_img_s": n / sequential_s,
        "predict_files_img_s": n / overlapped_s,
        "overlap_ratio": sequential_s / overlapped_s,
        "bound_if_fully_overlapped_img_s": n / max(decode_s, model_s),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=600, help="Kermany X-rays for predict")
    parser.add_argument("--sample", type=int, default=200, help="files per reader comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results/decode.json")
    args = parser.parse_args(argv)
    cv2.setNumThreads(0)
    torch.set_num_threads(1)  # readers compared on one thread each; predict sets its own
    xrays = sorted((args.data / "chest_xray" / "test").rglob("*.jpeg"))
    cells = sorted((args.data / "malaria").rglob("*.png"))[:: max(1, 8000 // args.sample)]
    covid = [
        p
        for p in sorted((args.data / "covid" / "images").glob("*"))
        if p.suffix in (".jpg", ".jpeg")
    ]
    sets = [
        ("Kermany JPEG 224 px", xrays[: args.sample], [(224, 224), (150, 150), (128, 128)]),
        ("malaria PNG cells", cells[: args.sample], [(128, 128)]),
        ("COVID JPEG (up to ~1,000 px)", covid[: args.sample], [(224, 224)]),
    ]
    result: dict = {
        "pillow": PIL.__version__,
        "pillow_libjpeg_turbo": features.version_feature("libjpeg_turbo"),
        "opencv": cv2.__version__,
        "torch_threads_predict": None,
        "readers": [],
        "thread_scaling_2_over_1": {},
    }
    for label, files, sizes in sets:
        for size in sizes:
            for row in compare_readers(files, size, args.repeats):
                result["readers"].append({"images": label, "size": list(size), **row})
                print(label, size, row, flush=True)
    result["thread_scaling_2_over_1"] = thread_scaling(xrays[: args.sample], (150, 150))
    result["corrupt_jpeg"] = corrupt_jpeg_verdicts(xrays[0])
    torch.set_num_threads(os.cpu_count() or 1)
    result["torch_threads_predict"] = torch.get_num_threads()
    result["predict"] = predict_overlap(xrays[: args.images], (150, 150), 64)
    print(result["thread_scaling_2_over_1"], result["corrupt_jpeg"], result["predict"], sep="\n")
    write_json(args.out, result)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
