"""``medsight data``, ``train``, ``recipes`` and ``models``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medsight.errors import MedsightError

SHORTCUTS = {
    "train.epochs": "--epochs",
    "train.seed": "--seed",
    "train.accelerator": "--accelerator",
    "train.tracking": "--tracking",
}  # options that set a field


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
    inspect.add_argument(
        "--multi-label",
        action="store_true",
        help="the label column holds '|'-separated findings (data.multi_label)",
    )
    inspect.add_argument(
        "--labels", metavar="A,B", help="the labels, or a column per label (data.labels)"
    )
    download = data_cmds.add_parser("download", help="fetch a public dataset into the cache")
    download.add_argument("name", help="dataset name: malaria, kermany or covid")
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
    train.add_argument(
        "--accelerator",
        choices=["auto", "cpu", "gpu"],
        help="where to train: auto (default: a CUDA GPU when there is one), cpu, or gpu "
        "(an error without one); also with --resume",
    )
    train.add_argument(
        "--tracking",
        choices=["csv", "tensorboard", "mlflow"],
        help="log the run to CSV, TensorBoard or MLflow (train.tracking; see docs/commands.md)",
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
        help="override any recipe field, anywhere on the line, e.g. train.lr=3e-4 data.limit=500 "
        "(medsight recipes show NAME lists the fields)",
    )
    data.set_defaults(run=run_data)
    train.set_defaults(run=run_train)

    recipes = commands.add_parser("recipes", help="built-in recipes: list them, or show one")
    recipes.add_argument("action", choices=["list", "show"])
    recipes.add_argument("name", nargs="?", help="show: a built-in recipe or a .yaml file")
    models = commands.add_parser("models", help="registered model architectures")
    models.add_argument("action", choices=["list"])
    recipes.set_defaults(run=run_recipes)
    models.set_defaults(run=run_models)


def run_data(args: argparse.Namespace) -> None:
    from medsight import api

    if args.data_command == "inspect":
        labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
        found = api.inspect(
            args.path, args.patient_pattern, args.patient_from, args.multi_label, labels
        )
        print(json.dumps(found.to_dict(), indent=2) if args.json else found.text())
    else:
        print(api.download(args.name, args.root))


def run_train(args: argparse.Namespace) -> None:
    from medsight import api

    if args.resume:
        options = ("recipe", "data", "epochs", "seed", "folds", "tracking")
        given = [f"--{n}" for n in options if getattr(args, n) is not None] + args.overrides
        if given:
            raise MedsightError(
                f"--resume continues a run with its own recipe and data; {given[0]} would be "
                "ignored (start a new run with --out to change them)"
            )
        _report_run(api.resume(args.resume, args.devices, args.accelerator))
        return
    missing = [f"--{n}" for n in ("recipe", "data", "out") if not getattr(args, n)]
    if missing:
        raise MedsightError(f"train needs {', '.join(missing)} (or --resume RUN_DIR)")
    from medsight.config import is_field, parse_override, unknown_key

    for text in args.overrides:  # before the API, to name the options beside the fields
        keys, _ = parse_override(text)
        if not is_field(keys):
            raise unknown_key(".".join(keys), SHORTCUTS)
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
            args.accelerator,
            tracking=args.tracking,
        )
    )


def run_recipes(args: argparse.Namespace) -> None:
    from medsight import api

    if args.action == "show":
        if not args.name:
            raise MedsightError("recipes show needs a recipe name (medsight recipes list)")
        for key, value in api.show_recipe(args.name).items():
            print(f"{key} = {_flow(value)}")
        return
    if args.name:
        raise MedsightError(f"recipes list takes no name; for one recipe: recipes show {args.name}")
    for name, about in api.list_recipes().items():
        print(f"{name:<18} {about}")


def _flow(value: object) -> str:
    """A value as it is written in a recipe or an override (``null``, ``[128, 128]``)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1_000_000)
    return text.removesuffix("\n...\n").strip()


def run_models(args: argparse.Namespace) -> None:
    from medsight.models.zoo import list_models

    for name, about in list_models().items():
        print(f"{name:<18} {about}")
    print("(any timm model name also works, e.g. resnet50, densenet121)")


def _report_run(run: Path) -> None:
    if not (run / "metrics.json").is_file():  # a DDP worker process: rank 0 reports
        return
    metrics = json.loads((run / "metrics.json").read_text())
    multi = metrics.get("task") == "multilabel"
    name, key = ("macro ROC-AUC", "macro_roc_auc") if multi else ("accuracy", "accuracy")
    value = "n/a" if metrics.get(key) is None else f"{metrics[key]:.3f}"
    print(
        f"run written to {run}; {metrics['split']} {name} {value} "
        f"on {metrics['n']} images; report: {run / 'report.html'}"
    )
