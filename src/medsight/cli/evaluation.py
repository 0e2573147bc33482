"""``medsight evaluate``, ``compare`` and ``audit``."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_commands(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate", help="score a bundle on labelled data")
    evaluate.add_argument("bundle", help="bundle folder (or the run directory holding it)")
    evaluate.add_argument("--data", required=True, help="class-folder tree, CSV or .npz")
    evaluate.add_argument(
        "--out", required=True, help="folder for metrics.json and predictions.csv"
    )
    _add_data_options(evaluate)
    evaluate.add_argument(
        "--bootstrap", type=int, metavar="N", help="bootstrap resamples for the CIs (1000)"
    )
    evaluate.set_defaults(run=run_evaluate)
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
    compare.set_defaults(run=run_compare)
    audit.set_defaults(run=run_audit)


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
    parser.add_argument(
        "--exclude-seen",
        action="store_true",
        help="leave out images the model was trained or tuned on (same file, or a patient "
        "it saw); without it they are counted and warned about",
    )


def _data_options(args: argparse.Namespace) -> dict:
    """The shared data options as keyword arguments of the API functions."""
    from medsight.evaluation.labelled import parse_class_map

    return {
        "split": args.split,
        "class_map": parse_class_map(args.class_map),
        "drop_unknown": args.drop_unknown_classes,
        "exclude_seen": args.exclude_seen,
    }


def run_evaluate(args: argparse.Namespace) -> None:
    from medsight import api

    metrics = api.evaluate(
        args.bundle, args.data, args.out, resamples=args.bootstrap, **_data_options(args)
    )
    _print_figures(metrics)
    print(f"seen in training: {_seen(metrics['seen_in_training'])}")
    print(f"report: {Path(args.out) / 'report.html'}")


def _seen(count: int | None) -> str:
    """A seen-in-training count as printed: None is "unknown", never 0."""
    return "unknown" if count is None else str(count)


def run_compare(args: argparse.Namespace) -> None:
    from medsight import api

    result = api.compare(
        args.bundle_a,
        args.bundle_b,
        args.data,
        resamples=args.bootstrap,
        out=args.out,
        **_data_options(args),
    )
    print(f"{result['n']} images; differences are B - A (95 % CI, bootstrap p-value)")
    seen = result["seen_in_training"]
    print(f"seen in training: A {_seen(seen['a'])}, B {_seen(seen['b'])}")
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


def run_audit(args: argparse.Namespace) -> None:
    from medsight import api

    found = api.audit(args.bundle, args.data, args.out, **_data_options(args))
    probe = found["source_probe"]
    if probe.get("auc") is not None:
        print(f"source probe ROC-AUC {probe['auc']:.3f} over {len(probe['sources'])} sources")
    else:
        print(f"source probe not run: {probe['reason']}")
    for name, row in found["occlusion"]["results"].items():
        auc = "n/a" if row["roc_auc"] is None else f"{row['roc_auc']:.3f}"
        print(f"{name:<14} accuracy {row['accuracy']:.3f}  ROC-AUC {auc}")
    print(f"seen in training: {_seen(found['seen_in_training'])}")
    for warning in found["warnings"]:
        print(f"WARNING: {warning}")
    print(f"report: {Path(args.out) / 'report.html'}")


def _print_figures(metrics: dict) -> None:
    """The headline figures with their 95 % CIs, one per line (a multi-label evaluation's
    averages, then each label's ROC-AUC on the images that record it)."""
    print(f"{metrics['n']} images")
    for key, value in (metrics.get("figures") or {}).items():
        if value["value"] is not None:
            print(f"{key:<18} {_with_ci(value)}")
    for label, row in (metrics.get("per_label") or {}).items():
        counts = f"{row['n']} images, {row['positives']} with it"
        print(f"{label + ' ROC-AUC':<18} {_with_ci(row['roc_auc'])}  ({counts})")


def _with_ci(figure: dict) -> str:
    if figure["value"] is None:
        return "n/a"
    if figure["ci_low"] is None:
        return f"{figure['value']:.3f}"
    return f"{figure['value']:.3f}  [{figure['ci_low']:.3f}, {figure['ci_high']:.3f}]"
