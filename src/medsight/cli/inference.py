"""``medsight predict``, ``explain``, ``export`` and ``serve``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from medsight.data.limits import DEFAULT_MAX_DECODED_BYTES, DEFAULT_MAX_PIXELS


def add_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict", help="predict image files and folders into a CSV (resumable, shardable)"
    )
    predict.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    predict.add_argument("--out", required=True, help="CSV to write (a rerun continues it)")
    predict.add_argument(
        "--batch-size",
        type=int,
        help="images per model call (default: by input size, 16 at 224x224, at most 64; "
        "more is barely faster and takes more memory)",
    )
    predict.add_argument(
        "--shard", metavar="i/N", help="only the i-th of N disjoint parts of the files"
    )
    predict.add_argument(
        "--no-onnx", action="store_true", help="predict with PyTorch even if model.onnx exists"
    )
    predict.add_argument("--precision", choices=["fp32", "int8"], help=PRECISION_HELP)

    explain = commands.add_parser("explain", help="Grad-CAM heat-map overlays for images")
    explain.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    explain.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    explain.add_argument("--out", required=True, help="folder for the overlays and the CSV")
    explain.add_argument(
        "--method",
        default="gradcam",
        help="CAM method: gradcam (default), gradcam++, hirescam, xgradcam, layercam, "
        "eigencam, scorecam, ...",
    )
    explain.add_argument("--target", metavar="CLASS", help="class to explain (the predicted)")
    explain.add_argument("--layer", metavar="NAME", help="module to explain (the last map)")

    export = commands.add_parser("export", help="export a bundle to ONNX, checked on images")
    export.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    export.add_argument(
        "--format",
        choices=["onnx", "triton"],
        default="onnx",
        help="onnx (default) or triton: a Triton model repository entry in --out",
    )
    export.add_argument(
        "--out",
        help="file to write (default: BUNDLE/model.onnx); with --format triton: the model "
        "repository folder (required)",
    )
    export.add_argument(
        "--name", help="Triton model name (default: the bundle's folder name, sanitised)"
    )
    export.add_argument(
        "--quantize",
        choices=["int8", "none"],
        help="int8: also write model.int8.onnx, adopted only if it agrees with fp32 on "
        "held-out images (default: when training images to calibrate on are at hand); none: not",
    )
    export.add_argument(
        "--calibrate",
        nargs="+",
        metavar="DIR_OR_FILE",
        help="training-split images to calibrate int8 on (default: the run's train split)",
    )
    export.add_argument(
        "--check",
        nargs="+",
        metavar="DIR_OR_FILE",
        help="real images to compare ONNX with PyTorch on (default: synthetic ones); in "
        "class folders, also the held-out images int8 is gated on",
    )
    predict.set_defaults(run=run_predict)
    explain.set_defaults(run=run_explain)
    export.set_defaults(run=run_export)

    serve = commands.add_parser("serve", help="REST API and web page for a bundle")
    serve.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="port to listen on (8000)")
    serve.add_argument(
        "--api-key",
        help="require this key in the X-API-Key header of /v1 requests "
        "(better: set MEDSIGHT_API_KEY, which other users cannot see in the process list)",
    )
    serve.add_argument(
        "--no-onnx", action="store_true", help="predict with PyTorch even if model.onnx exists"
    )
    serve.add_argument("--precision", choices=["fp32", "int8"], help=PRECISION_HELP)
    serve.add_argument(
        "--name",
        help="the model's name in /v2/models/NAME (default: the run's or bundle's folder name)",
    )
    serve.add_argument(
        "--request-timeout",
        type=_positive(float),
        default=30.0,
        help="seconds a client has to send a whole request; slower ones get a 408 (30)",
    )
    serve.add_argument(
        "--max-pixels",
        type=_positive(int),
        default=DEFAULT_MAX_PIXELS,
        help=f"largest upload in pixels, checked from its header ({DEFAULT_MAX_PIXELS:,})",
    )
    serve.add_argument(
        "--max-decoded-mb",
        type=_positive(int),
        default=DEFAULT_MAX_DECODED_BYTES // 2**20,
        help="largest decoded upload in MiB, checked from its header "
        f"({DEFAULT_MAX_DECODED_BYTES // 2**20})",
    )
    serve.add_argument(
        "--max-decodes",
        type=_positive(int),
        help="uploads decoded at once (default: CPU count, at most 4): "
        "bounds memory to this x --max-decoded-mb",
    )
    serve.set_defaults(run=run_serve)


PRECISION_HELP = (
    "fp32: the reference model even when an int8 one was adopted; int8: the adopted int8 "
    "model, an error if there is none (default: int8 when adopted, else fp32)"
)


def run_predict(args: argparse.Namespace) -> None:
    from medsight import api

    done = api.predict(
        args.bundle,
        args.paths,
        args.out,
        args.batch_size,
        args.shard,
        not args.no_onnx,
        args.precision,
    )
    for path, reason in done.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"{done.out}: {done.predicted} new, {done.already_done} already there, "
        f"{len(done.skipped)} unreadable, of {done.files} files ({done.engine})"
    )
    if done.out_of_domain:
        print(
            f"warning: {done.out_of_domain} of the {done.predicted} new images are out of domain "
            "(unlike the training images: in_domain=false); do not trust their predictions",
            file=sys.stderr,
        )
    elif not done.guarded:
        print("warning: this bundle has no domain check (in_domain is empty)", file=sys.stderr)


def run_explain(args: argparse.Namespace) -> None:
    from medsight import api

    frame = api.explain(args.bundle, args.images, args.out, args.method, args.target, args.layer)
    print(f"{len(frame)} overlays and explanations.csv written to {args.out}")


def run_export(args: argparse.Namespace) -> None:
    from medsight import api

    quantize = {"int8": True, "none": False}.get(args.quantize)
    path = api.export(
        args.bundle, args.out, quantize, args.check, args.format, args.name, args.calibrate
    )
    if args.format == "triton":
        meta = json.loads((path / "1" / "model.onnx.json").read_text())
        parity = json.dumps(meta["parity"])
        print(f"{path}: Triton model {path.name!r}, parity with PyTorch {parity}")
        return
    meta = json.loads(path.with_name(path.name + ".json").read_text())
    print(f"{path}: parity with PyTorch {json.dumps(meta['parity'])}")
    from medsight.bundle.runtime import int8_path, sidecar

    int8 = int8_path(path)
    if quantize is not False and sidecar(int8).is_file():
        record = json.loads(sidecar(int8).read_text())["quantization"]
        verdict = "adopted" if record["adopted"] else "NOT adopted"
        print(f"{int8}: int8 {verdict}: {record['reason']}; {json.dumps(record)}")


def run_serve(args: argparse.Namespace) -> None:
    from medsight import api

    api.serve(
        args.bundle,
        args.host,
        args.port,
        args.api_key,
        request_timeout=args.request_timeout,
        prefer_onnx=not args.no_onnx,
        precision=args.precision,
        max_pixels=args.max_pixels,
        max_decoded_bytes=args.max_decoded_mb * 2**20,
        max_decodes=args.max_decodes,
        name=args.name,
    )


def _positive(kind: type) -> Callable[[str], Any]:
    """An argparse type: a number of ``kind`` above zero, else argparse's one-line error."""

    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            number = None
        if number is None or not number > 0 or number != number:
            raise argparse.ArgumentTypeError(f"{value!r} is not a positive {kind.__name__}")
        return number

    return parse


def _port(value: str) -> int:
    """A TCP port number: refused by argparse's one line, not by the server's traceback."""
    if not (value.isascii() and value.isdigit() and int(value) < 65536):
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number (0-65535; 0: any free)")
    return int(value)
