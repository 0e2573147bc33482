"""The ``medsight`` command: a thin layer over :mod:`medsight.api`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from medsight import __version__
from medsight.errors import MedsightError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsight",
        description=(
            "Medical image classification: curate data without patient leakage, train, evaluate."
        ),
    )
    parser.add_argument("--version", action="version", version=f"medsight {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="inspect or download datasets")
    data_cmds = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    inspect = data_cmds.add_parser(
        "inspect", help="counts, patients, sizes, duplicates, unreadable files of a dataset"
    )
    inspect.add_argument("path", help="class-folder tree, CSV sheet or MedMNIST .npz")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    download = data_cmds.add_parser("download", help="fetch a public dataset into the cache")
    download.add_argument("name", help="dataset name (malaria)")
    download.add_argument(
        "--root", help="folder to download into (default: $MEDSIGHT_DATA or the user cache folder)"
    )

    train = commands.add_parser("train", help="train a recipe and write a run directory")
    train.add_argument("--recipe", help="built-in recipe name or a .yaml file")
    train.add_argument("--data", help="class-folder tree, CSV sheet, .npz or dataset name")
    train.add_argument("--out", help="run directory to create")
    train.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue an interrupted run from its last checkpoint "
        "(no --recipe/--data/--out needed)",
    )
    train.add_argument(
        "--folds",
        type=int,
        metavar="K",
        help="patient-grouped K-fold cross-validation: K models, pooled metrics",
    )
    train.add_argument(
        "--devices",
        type=int,
        default=1,
        help="train with DDP over N processes (per node; see README)",
    )
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument("--seed", type=int, help="override train.seed")
    train.add_argument("--overwrite", action="store_true", help="replace an earlier run in --out")
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any recipe field, e.g. train.lr=3e-4 data.limit=500",
    )

    evaluate = commands.add_parser("evaluate", help="score a bundle on labelled data")
    evaluate.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    evaluate.add_argument("--data", required=True, help="class-folder tree, CSV or .npz")
    evaluate.add_argument(
        "--out", required=True, help="folder for metrics.json and predictions.csv"
    )
    evaluate.add_argument(
        "--split",
        help="only this split of the data (e.g. test, with "
        "--data RUN/splits.csv for the patients the model never saw)",
    )
    evaluate.add_argument(
        "--class-map",
        metavar="DATA=MODEL,...",
        help="rename the data's classes to the model's, e.g. 'COVID-19=COVID' (external data)",
    )
    evaluate.add_argument(
        "--drop-unknown-classes",
        action="store_true",
        help="leave out images whose class the model does not predict (instead of an error)",
    )
    evaluate.add_argument(
        "--bootstrap", type=int, metavar="N", help="bootstrap resamples for the CIs (1000)"
    )

    serve = commands.add_parser("serve", help="REST API and web page for a bundle")
    serve.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    serve.add_argument(
        "--api-key",
        help="require this key in the X-API-Key header of /v1 requests "
        "(better: set MEDSIGHT_API_KEY, which other users cannot see in the process list)",
    )
    serve.add_argument(
        "--no-onnx", action="store_true", help="predict with PyTorch even if model.onnx exists"
    )

    _add_inference_commands(commands)
    _add_comparison_commands(commands)

    recipes = commands.add_parser("recipes", help="built-in recipes")
    recipes.add_argument("action", choices=["list"])
    models = commands.add_parser("models", help="registered model architectures")
    models.add_argument("action", choices=["list"])
    return parser


def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", help="only this split of the data (e.g. test)")
    parser.add_argument(
        "--class-map", metavar="DATA=MODEL,...", help="rename the data's classes to the model's"
    )
    parser.add_argument(
        "--drop-unknown-classes",
        action="store_true",
        help="leave out images whose class the model does not predict",
    )


def _add_comparison_commands(commands: argparse._SubParsersAction) -> None:
    compare = commands.add_parser(
        "compare", help="paired comparison of two bundles (DeLong test, paired bootstrap)"
    )
    compare.add_argument("bundle_a")
    compare.add_argument("bundle_b")
    compare.add_argument("--data", required=True, help="labelled images both are scored on")
    compare.add_argument("--out", help="folder for comparison.json")
    compare.add_argument("--bootstrap", type=int, metavar="N", help="resamples (1000)")
    _add_data_options(compare)
    audit = commands.add_parser(
        "audit", help="shortcut audit: source probe and occlusion probe, added to the report"
    )
    audit.add_argument("bundle")
    audit.add_argument(
        "--data",
        required=True,
        action="append",
        help="labelled images; repeat it to name several sources, or give a CSV with a "
        "'source' column (a run's splits.csv / curation.csv)",
    )
    audit.add_argument("--out", required=True, help="folder of the report to add the audit to")
    _add_data_options(audit)


def _run_comparison(args: argparse.Namespace) -> None:
    from medsight import api
    from medsight.evaluate.scoring import parse_class_map

    class_map = parse_class_map(args.class_map)
    if args.command == "compare":
        result = api.compare(
            args.bundle_a,
            args.bundle_b,
            args.data,
            args.split,
            class_map,
            args.drop_unknown_classes,
            args.bootstrap,
            args.out,
        )
        print(f"{result['n']} images; differences are B - A (95 % CI, bootstrap p-value)")
        for key, d in result["difference_b_minus_a"].items():
            if d["value"] is not None and d["ci_low"] is not None:
                print(
                    f"{key:<18} A {result['a'][key]:.3f}  B {result['b'][key]:.3f}  "
                    f"diff {d['value']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] "
                    f"p={d['p_value']:.3g}"
                )
        if "delong" in result:
            t = result["delong"]
            print(
                f"DeLong test: AUC A {t['auc_a']:.3f}, B {t['auc_b']:.3f}, "
                f"z = {t['z']:.3f}, p-value = {t['p_value']:.4g}"
            )
    else:
        found = api.audit(
            args.bundle, args.data, args.out, args.split, class_map, args.drop_unknown_classes
        )
        probe = found["source_probe"]
        if probe.get("auc") is not None:
            print(f"source probe ROC-AUC {probe['auc']:.3f} over {len(probe['sources'])} sources")
        else:
            print(f"source probe not run: {probe['reason']}")
        for name, row in found["occlusion"]["results"].items():
            auc = "n/a" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
            print(f"{name:<14} accuracy {row['accuracy']:.3f}  ROC-AUC {auc}")
        for warning in found["warnings"]:
            print(f"WARNING: {warning}")
        print(f"report: {Path(args.out) / 'report.html'}")


def _add_inference_commands(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict", help="predict image files and folders into a CSV (resumable, shardable)"
    )
    predict.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    predict.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    predict.add_argument("--out", required=True, help="CSV to write (a rerun continues it)")
    predict.add_argument("--batch-size", type=int, default=64, help="images per batch (64)")
    predict.add_argument(
        "--shard", metavar="i/N", help="only the i-th of N disjoint parts of the files"
    )
    predict.add_argument(
        "--no-onnx", action="store_true", help="predict with PyTorch even if model.onnx exists"
    )

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
    export.add_argument("--format", choices=["onnx"], default="onnx", help="only onnx")
    export.add_argument("--out", help="file to write (default: BUNDLE/model.onnx)")
    export.add_argument(
        "--quantize", choices=["int8"], help="also write an int8 model (model.int8.onnx)"
    )
    export.add_argument(
        "--check",
        nargs="+",
        metavar="DIR_OR_FILE",
        help="real images to compare ONNX with PyTorch on (default: synthetic ones)",
    )


def _run_inference(args: argparse.Namespace) -> None:
    from medsight import api

    if args.command == "predict":
        done = api.predict(
            args.bundle, args.paths, args.out, args.batch_size, args.shard, not args.no_onnx
        )
        for path, reason in done.skipped:
            print(f"skipped {path}: {reason}", file=sys.stderr)
        print(
            f"{done.out}: {done.predicted} new, {done.already_done} already there, "
            f"{len(done.skipped)} unreadable, of {done.files} files ({done.engine})"
        )
    elif args.command == "explain":
        frame = api.explain(
            args.bundle, args.images, args.out, args.method, args.target, args.layer
        )
        print(f"{len(frame)} overlays and explanations.csv written to {args.out}")
    else:
        path = api.export(args.bundle, args.out, args.quantize == "int8", args.check)
        meta = json.loads(path.with_name(path.name + ".json").read_text())
        print(f"{path}: parity with PyTorch {json.dumps(meta['parity'])}")
        if args.quantize:
            from medsight.serve.export import int8_path

            int8 = int8_path(path)
            meta = json.loads(int8.with_name(int8.name + ".json").read_text())
            print(f"{int8}: {json.dumps(meta['quantization'])}")


def _report_run(run: Path) -> None:
    if not (run / "metrics.json").is_file():  # a DDP worker process: rank 0 reports
        return
    metrics = json.loads((run / "metrics.json").read_text())
    print(
        f"run written to {run}; {metrics['split']} accuracy {metrics['accuracy']:.3f} "
        f"on {metrics['n']} images; report: {run / 'report.html'}"
    )


def _print_figures(metrics: dict) -> None:
    """The headline figures with their 95 % CIs, one per line."""
    print(f"{metrics['n']} images")
    for key, value in (metrics.get("figures") or {}).items():
        if value["value"] is None:
            continue
        ci = (
            f"  [{value['ci_low']:.3f}, {value['ci_high']:.3f}]"
            if value["ci_low"] is not None
            else ""
        )
        print(f"{key:<18} {value['value']:.3f}{ci}")


def _run(args: argparse.Namespace) -> None:
    from medsight import api

    if args.command == "data" and args.data_command == "inspect":
        found = api.inspect(args.path)
        print(json.dumps(found.to_dict(), indent=2) if args.json else found.text())
    elif args.command == "data":
        print(api.download(args.name, args.root))
    elif args.command == "train" and args.resume:
        _report_run(api.resume(args.resume, args.devices))
    elif args.command == "train":
        missing = [f"--{n}" for n in ("recipe", "data", "out") if not getattr(args, n)]
        if missing:
            raise MedsightError(f"train needs {', '.join(missing)} (or --resume RUN_DIR)")
        _report_run(
            api.train(
                args.recipe,
                args.data,
                args.out,
                args.epochs,
                args.seed,
                args.overrides,
                args.overwrite,
                args.devices,
                args.folds,
            )
        )
    elif args.command == "evaluate":
        from medsight.evaluate.scoring import parse_class_map

        metrics = api.evaluate(
            args.bundle,
            args.data,
            args.out,
            args.split,
            parse_class_map(args.class_map),
            args.drop_unknown_classes,
            args.bootstrap,
        )
        _print_figures(metrics)
        print(f"report: {Path(args.out) / 'report.html'}")
    elif args.command == "serve":
        api.serve(args.bundle, args.host, args.port, args.api_key, prefer_onnx=not args.no_onnx)
    elif args.command in ("compare", "audit"):
        _run_comparison(args)
    elif args.command in ("predict", "explain", "export"):
        _run_inference(args)
    elif args.command == "recipes":
        for name, about in api.list_recipes().items():
            print(f"{name:<18} {about}")
    elif args.command == "models":
        from medsight.models.zoo import list_models

        for name, about in list_models().items():
            print(f"{name:<18} {about}")
        print("(any timm model name also works, e.g. resnet50, densenet121)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if argv is None and args.command in (
        "train",
        "evaluate",
        "serve",
        "predict",
        "compare",
        "audit",
    ):
        from medsight.allocator import reexec_with_fast_allocator

        reexec_with_fast_allocator(sys.argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        _run(args)
    except MedsightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
