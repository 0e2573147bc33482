"""``medsight data``, ``train``, ``recipes`` and ``models``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medsight.errors import MedsightError


def add_commands(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="inspect or download datasets")
    data_cmds = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    inspect = data_cmds.add_parser(
        "inspect", help="counts, patients, sizes, duplicates, unreadable files of a dataset"
    )
    inspect.add_argument("path", help="class-folder tree, CSV sheet or MedMNIST .npz")
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    inspect.add_argument(
        "--patient-pattern", metavar="REGEX", help="try a recipe's data.patient_pattern"
    )
    inspect.add_argument(
        "--patient-from", choices=["parent"], help="try a recipe's data.patient_from"
    )
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
        help="train with DDP over N processes (per node; see docs/commands.md)",
    )
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument("--seed", type=int, help="override train.seed")
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an earlier run in --out and train afresh there",
    )
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any recipe field, e.g. train.lr=3e-4 data.limit=500",
    )
    data.set_defaults(run=run_data)
    train.set_defaults(run=run_train)

    recipes = commands.add_parser("recipes", help="built-in recipes")
    recipes.add_argument("action", choices=["list"])
    models = commands.add_parser("models", help="registered model architectures")
    models.add_argument("action", choices=["list"])
    recipes.set_defaults(run=run_recipes)
    models.set_defaults(run=run_models)


def run_data(args: argparse.Namespace) -> None:
    from medsight import api

    if args.data_command == "inspect":
        found = api.inspect(args.path, args.patient_pattern, args.patient_from)
        print(json.dumps(found.to_dict(), indent=2) if args.json else found.text())
    else:
        print(api.download(args.name, args.root))


def run_train(args: argparse.Namespace) -> None:
    from medsight import api

    if args.resume:
        _report_run(api.resume(args.resume, args.devices))
        return
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


def run_recipes(args: argparse.Namespace) -> None:
    from medsight import api

    for name, about in api.list_recipes().items():
        print(f"{name:<18} {about}")


def run_models(args: argparse.Namespace) -> None:
    from medsight.models.zoo import list_models

    for name, about in list_models().items():
        print(f"{name:<18} {about}")
    print("(any timm model name also works, e.g. resnet50, densenet121)")


def _report_run(run: Path) -> None:
    if not (run / "metrics.json").is_file():  # a DDP worker process: rank 0 reports
        return
    metrics = json.loads((run / "metrics.json").read_text())
    print(
        f"run written to {run}; {metrics['split']} accuracy {metrics['accuracy']:.3f} "
        f"on {metrics['n']} images; report: {run / 'report.html'}"
    )
