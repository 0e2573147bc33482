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

    recipes = commands.add_parser("recipes", help="built-in recipes")
    recipes.add_argument("action", choices=["list"])
    models = commands.add_parser("models", help="registered model architectures")
    models.add_argument("action", choices=["list"])
    return parser


def _report_run(run: Path) -> None:
    if not (run / "metrics.json").is_file():  # a DDP worker process: rank 0 reports
        return
    metrics = json.loads((run / "metrics.json").read_text())
    print(
        f"run written to {run}; {metrics['split']} accuracy {metrics['accuracy']:.3f} "
        f"on {metrics['n']} images; report: {run / 'report.html'}"
    )


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
        metrics = api.evaluate(args.bundle, args.data, args.out, args.split)
        keys = ("n", "accuracy", "sensitivity", "specificity", "roc_auc")
        print(json.dumps({k: metrics.get(k) for k in keys}, indent=2))
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
    if argv is None and args.command in ("train", "evaluate"):
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
