"""From measured numbers to the results: ratios, targets (met, or missed by how much and
why), the JSON's required fields, and the Markdown entry appended to ``RESULTS.md``.

Every ratio and verdict is computed here from the figures the two sides measured, never
measured separately, so the JSON can always be re-derived and checked.
"""

from __future__ import annotations

from typing import Any

SCHEMA = "medsight-bench/1"
TRAIN_TARGET, PREDICT_TARGET = 1.5, 2.0  # medsight / Keras, every tutorial recipe
# serving at concurrency 8: p99 at most 1.25x the compute floor (8 x one image's model call on
# the engine the server used, timed by the server itself at concurrency 1), and 2x Flask + Keras
SERVE_P99_OVER_FLOOR, SERVE_THROUGHPUT, SERVE_LEVEL = 1.25, 2.0, "8"
PIPELINE_SHARE = 0.8  # below this share of the model-only rate, the input pipeline limits


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs`` to 3 decimals; None when either figure is missing or not positive."""
    if not ours or not theirs or ours <= 0 or theirs <= 0:
        return None
    return round(ours / theirs, 3)


def check(value: float | None, threshold: float, higher_is_better: bool, unit: str) -> dict:
    """A target verdict: met or not, and by how much in words."""
    sign = ">=" if higher_is_better else "<="
    verdict: dict[str, Any] = {"target": f"{sign} {threshold:g}{unit}", "value": value}
    if value is None:
        return {**verdict, "met": False, "by": "not measured"}
    met = value >= threshold if higher_is_better else value <= threshold
    gap = abs(threshold - value)
    word = ("above" if met else "short of") if higher_is_better else ("under" if met else "over")
    by = f"{_num(value)}{unit}, {_num(gap)}{unit} ({gap / threshold:.0%}) {word} the target"
    return {**verdict, "met": met, "by": by}


def _num(value: float) -> str:
    """3 significant digits, without exponents for large values."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def percent(part: float, whole: float) -> float:
    return round(100 * part / whole, 1)


def efficiency(recipe: dict[str, Any], peak: float) -> dict[str, Any]:
    """Achieved GFLOP/s of each side's training, and of the model step alone, against the peak."""
    cost = recipe["cost"]
    per_image = cost["train_gflop_per_image"]
    ours = per_image * recipe["medsight"]["train"]["train_img_s"]
    theirs = per_image * recipe["keras"]["train"]["train_img_s"]
    alone = per_image * cost["model_only_train_img_s"]
    return {
        "train_gflop_per_image": per_image,
        "forward_gflop_per_image": cost["forward_gflop_per_image"],
        "medsight_gflops": round(ours, 1),
        "keras_gflops": round(theirs, 1),
        "model_only_gflops": round(alone, 1),
        "medsight_percent_of_peak": percent(ours, peak),
        "keras_percent_of_peak": percent(theirs, peak),
        "model_only_percent_of_peak": percent(alone, peak),
    }


def why_train(recipe: dict[str, Any]) -> str:
    """Which limit the medsight training pipeline hits, from its measured rates."""
    ours = recipe["medsight"]["train"]["train_img_s"]
    alone = recipe["cost"]["model_only_train_img_s"]
    flops = recipe["flops"]
    keras = f"Keras reaches {flops['keras_percent_of_peak']} % of the peak"
    if ours < PIPELINE_SHARE * alone:
        return (
            f"input pipeline: the model step alone trains {_num(alone)} img/s, the whole pipeline "
            f"{_num(ours)} img/s ({percent(ours, alone)} %); {keras}"
        )
    if flops["model_only_percent_of_peak"] >= 50:
        return (
            f"compute-bound: the model step alone runs at {flops['model_only_percent_of_peak']} %"
            f" of the measured peak, so only fewer FLOPs could go faster; {keras}"
        )
    return (
        f"the model step itself: alone it reaches {flops['model_only_percent_of_peak']} % of "
        f"the peak (small layers or memory-bound updates, not arithmetic); {keras}"
    )


def why_first_epoch(recipe: dict[str, Any]) -> str:
    """The first epoch also pays for hashing and decoding every file before the first step."""
    train = recipe["medsight"]["train"]
    return (
        f"hashing and decoding all {train['decoded_images']} files up front took "
        f"{train['prepare_s']:.1f} s of the first epoch's {train['first_epoch_s']:.1f} s (a "
        f"second run reads them from the cache in {train['prepare_warm_cache_s']:.1f} s); then "
        + why_train(recipe)
    )


def why_predict(predict: dict[str, Any], keras_img_s: float) -> str:
    """Decoding or the model, whichever is slower; or the overhead around them when files to
    probabilities runs well below decoding followed by the model."""
    decode, model, whole = (
        predict["decode_only_img_s"],
        predict["model_only_img_s"],
        predict["predict_img_s"],
    )
    serial = 1 / (1 / decode + 1 / model)  # decode then predict, nothing else
    parts = (
        f"decoding alone {_num(decode)} img/s, the model ({predict['engine']}) alone "
        f"{_num(model)} img/s, files to probabilities {_num(whole)} img/s; Keras "
        f"{_num(keras_img_s)} img/s"
    )
    if whole < PIPELINE_SHARE * serial:
        serial_text = f"{_num(serial)} img/s one after the other"
        return f"overhead around decoding and the model ({serial_text}): {parts}"
    return f"bounded by {'decoding' if decode < model else 'the model'}: {parts}"


def compute_floor_ms(serving: dict[str, Any]) -> float | None:
    """8 x one image's model time: the server's own mean model call of batch size 1 at
    concurrency 1 (``/v1/stats`` after that level). No server answers the last of 8 images
    queued at once sooner without batching them; None when it was not measured."""
    stats = serving["medsight"].get("1", {}).get("server_stats", {})
    one = stats.get("model_ms", {}).get("1")
    return round(int(SERVE_LEVEL) * one, 3) if one else None


def why_serving(serving: dict[str, Any], peak: float, key: str) -> str:
    """The p99 against the floor (what the server adds: queueing, decoding, HTTP), and the
    throughput against the compute bound: no server answers more than peak / FLOPs images per
    second."""
    level, forward = int(SERVE_LEVEL), serving["forward_gflop_per_image"]
    ours, theirs = serving["medsight"][SERVE_LEVEL], serving["flask_keras"][SERVE_LEVEL]
    if key == "p99_over_floor_at_8":
        floor = serving.get("compute_floor_ms")
        if floor is None:
            return "the server's model time at concurrency 1 was not measured"
        one = floor / level
        alone = serving["medsight"]["1"]["p50_ms"]
        return (
            f"p99 {_num(ours['p99_ms'])} ms against a floor of {level} x {_num(one)} ms "
            f"({serving.get('engine', '?')}, one image per model call); a lone request took "
            f"{_num(alone)} ms (p50 at concurrency 1), {_num(max(alone - one, 0))} ms of it "
            "outside the model (HTTP, the upload, decoding), which the floor does not count"
        )
    bound_ms, ceiling = level * forward / peak * 1000, peak / forward
    compute = (
        f"{level} x {forward:.3g} GFLOP take >= {bound_ms:.1f} ms at this run's measured peak "
        f"({peak:g} GFLOP/s): a ceiling of {_num(ceiling)} img/s"
    )
    needed = SERVE_THROUGHPUT * theirs["throughput_rps"]
    if needed > ceiling:
        return (
            f"unreachable with this model: {SERVE_THROUGHPUT:g}x Flask + Keras's "
            f"{_num(theirs['throughput_rps'])} req/s is more than {compute}"
        )
    return f"medsight served {_num(ours['throughput_rps'])} req/s; {compute}"


def assess_recipe(recipe: dict[str, Any], peak: float) -> dict[str, Any]:
    """Add ``flops``, ``ratios`` and ``targets`` to one recipe's measured figures."""
    ms, kr = recipe["medsight"], recipe["keras"]
    recipe["flops"] = efficiency(recipe, peak)
    recipe["ratios"] = {
        "train": ratio(ms["train"]["train_img_s"], kr["train"]["train_img_s"]),
        "train_first_epoch": ratio(
            ms["train"]["train_first_epoch_img_s"], kr["train"]["train_first_epoch_img_s"]
        ),
        "predict": ratio(ms["predict"]["predict_img_s"], kr["predict"]["predict_img_s"]),
        "predict_torch": ratio(
            ms["predict_torch"]["predict_img_s"], kr["predict"]["predict_img_s"]
        ),
        "train_memory": ratio(ms["train"]["peak_tree_pss_mb"], kr["train"]["peak_tree_pss_mb"]),
        "predict_memory": ratio(
            ms["predict"]["peak_tree_pss_mb"], kr["predict"]["peak_tree_pss_mb"]
        ),
    }
    targets = {
        "train": check(recipe["ratios"]["train"], TRAIN_TARGET, True, "x"),
        "train_first_epoch": check(recipe["ratios"]["train_first_epoch"], TRAIN_TARGET, True, "x"),
        "predict": check(recipe["ratios"]["predict"], PREDICT_TARGET, True, "x"),
    }
    if not targets["train"]["met"]:
        targets["train"]["why"] = why_train(recipe)
    if not targets["train_first_epoch"]["met"]:
        targets["train_first_epoch"]["why"] = why_first_epoch(recipe)
    if not targets["predict"]["met"]:
        targets["predict"]["why"] = why_predict(ms["predict"], kr["predict"]["predict_img_s"])
    recipe["targets"] = targets
    return recipe


def assess_serving(serving: dict[str, Any], peak: float) -> dict[str, Any]:
    """Add throughput and p99 ratios per level, the compute floor and the two targets at
    concurrency 8."""
    ours, theirs = serving["medsight"], serving["flask_keras"]
    serving["compute_floor_ms"] = floor = compute_floor_ms(serving)
    serving["ratios"] = {
        "throughput": {
            level: ratio(ours[level]["throughput_rps"], theirs[level]["throughput_rps"])
            for level in ours
        },
        "p99": {level: ratio(ours[level]["p99_ms"], theirs[level]["p99_ms"]) for level in ours},
    }
    targets = {}
    if SERVE_LEVEL in ours:
        targets = {
            "p99_over_floor_at_8": check(
                ratio(ours[SERVE_LEVEL]["p99_ms"], floor), SERVE_P99_OVER_FLOOR, False, "x"
            ),
            "throughput_at_8": check(
                serving["ratios"]["throughput"][SERVE_LEVEL], SERVE_THROUGHPUT, True, "x"
            ),
        }
        for key, verdict in targets.items():
            if not verdict["met"]:
                verdict["why"] = why_serving(serving, peak, key)
    serving["targets"] = targets
    return serving


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """Every target verdict in one list: what was met, what was missed and by how much."""
    verdicts = []
    for name, recipe in results["recipes"].items():
        verdicts += [(f"{name} {key}", v) for key, v in recipe["targets"].items()]
    for name, serving in results["serving"].items():
        verdicts += [(f"serve {name} {key}", v) for key, v in serving["targets"].items()]
    for name, tta in results["time_to_accuracy"].items():
        verdicts.append((f"{name} time to {tta['target_accuracy']:.1%}", {"met": tta["reached"]}))
        if "versus_fastai" in tta:
            verdicts.append((f"{name} ahead of fastai", tta["versus_fastai"]))
    return {
        "targets_met": sum(v["met"] for _, v in verdicts),
        "targets_missed": sum(not v["met"] for _, v in verdicts),
        "missed": [f"{name}: {v.get('by', 'not reached')}" for name, v in verdicts if not v["met"]],
    }


def assess(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios, targets and the summary, computed from the measured figures in ``results``."""
    peak = results["machine"]["peak_gflops"]
    for recipe in results["recipes"].values():
        assess_recipe(recipe, peak)
    for serving in results["serving"].values():
        assess_serving(serving, peak)
    results["summary"] = summarize(results)
    return results


REQUIRED = {
    "top": ["schema", "mode", "label", "date", "command", "machine", "versions", "settings"]
    + ["recipes", "serving", "time_to_accuracy", "summary"],
    "machine": ["cpu", "cores", "ram_gib", "flags", "peak_gflops", "peak_detail"]
    + ["peak_runs_gflops"],
    "versions": ["python", "medsight", "torch", "onnxruntime", "tensorflow", "keras"],
    "recipe": ["tutorial", "dataset", "images", "keras", "medsight", "cost", "flops", "ratios"]
    + ["targets"],
    "train": ["train_img_s", "train_first_epoch_img_s", "prepare_s", "first_epoch_s"]
    + ["peak_rss_mb", "peak_tree_pss_mb", "batch_size"],
    "medsight_train": ["prepare_warm_cache_s", "decoded_images", "num_workers", "allocator"],
    "predict": ["predict_img_s", "predict_images", "predict_s", "peak_rss_mb", "peak_tree_pss_mb"],
    "medsight_predict": ["engine", "decode_only_img_s", "model_only_img_s"],
    "ratios": ["train", "train_first_epoch", "predict", "predict_torch", "train_memory"]
    + ["predict_memory"],
    "level": ["requests", "errors", "throughput_rps", "p50_ms", "p95_ms", "p99_ms"],
    "tta": ["target_accuracy", "epochs", "reached", "time_to_target_s", "total_wall_s"]
    + ["final_bundle_accuracy"],
}


def missing_fields(results: dict[str, Any]) -> list[str]:
    """Dotted names of required fields absent from ``results`` (empty: complete)."""
    missing: list[str] = []

    def need(node: dict[str, Any], keys: list[str], where: str) -> None:
        missing.extend(f"{where}{key}" for key in keys if key not in node)

    need(results, REQUIRED["top"], "")
    if missing:
        return missing
    need(results["machine"], REQUIRED["machine"], "machine.")
    need(results["versions"], REQUIRED["versions"], "versions.")
    for name, recipe in results["recipes"].items():
        where = f"recipes.{name}."
        need(recipe, REQUIRED["recipe"], where)
        if any(m.startswith(where) for m in missing):
            continue
        need(recipe["keras"]["train"], REQUIRED["train"], where + "keras.train.")
        fields = REQUIRED["train"] + REQUIRED["medsight_train"]
        need(recipe["medsight"]["train"], fields, where + "medsight.train.")
        need(recipe["keras"]["predict"], REQUIRED["predict"], where + "keras.predict.")
        for engine in ("predict", "predict_torch"):
            fields = REQUIRED["predict"] + REQUIRED["medsight_predict"]
            need(recipe["medsight"][engine], fields, f"{where}medsight.{engine}.")
        need(recipe["ratios"], REQUIRED["ratios"], where + "ratios.")
    for name, serving in results["serving"].items():
        for server in ("medsight", "flask_keras"):
            for level, figures in serving[server].items():
                need(figures, REQUIRED["level"], f"serving.{name}.{server}.{level}.")
    for name, tta in results["time_to_accuracy"].items():
        need(tta, REQUIRED["tta"], f"time_to_accuracy.{name}.")
    return missing
