"""The ``medsight`` command: a thin layer over :mod:`medsight.api`.

Each module registers one group of sub-commands with the function that runs it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from medsight import __version__
from medsight.cli import core, evaluation, inference
from medsight.errors import MedsightError
from medsight.gpu_compilers import leave_out_triton

# commands that do heavy numeric work re-exec with tcmalloc/jemalloc when installed
FAST_ALLOCATOR = {"train", "evaluate", "compare", "audit", "predict", "serve"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medsight",
        description="Medical image classification: curate data without patient leakage, "
        "train, evaluate, explain, export and serve.",
    )
    parser.add_argument("--version", action="version", version=f"medsight {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (core, evaluation, inference):
        group.add_commands(commands)
    return parser


def parse(argv: list[str] | None) -> argparse.Namespace:
    """argparse, except that ``key=value`` overrides may stand anywhere on a line that takes
    them (argparse gives its trailing ``nargs="*"`` only the first run of them); an unknown
    option is argparse's usual error."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if not hasattr(args, "overrides"):
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args
    unknown = [t for t in extra if t.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.overrides = [*args.overrides, *extra]  # a word without "=" is refused as an override
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if argv is None and args.command in FAST_ALLOCATOR:
        from medsight.allocator import reexec_with_fast_allocator

        reexec_with_fast_allocator(sys.argv[1:])
    if argv is None:  # the command itself, not a caller in its own process
        leave_out_triton()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.run(args)
    except MedsightError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    ) as exc:
        print(f"error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 2  # a path the user gave: one line, not a traceback
    return 0
