"""benchmarks.serve_overhead: medians over repeats, and the server's own model time carried."""

from __future__ import annotations

from benchmarks.serve_overhead import summarize


def level(rps: float, p50: float, p99: float, model_ms: dict | None) -> dict:
    stats = {"server_stats": {"model_ms": model_ms}} if model_ms is not None else {}
    return {"throughput_rps": rps, "p50_ms": p50, "p99_ms": p99, **stats}


def test_summary_takes_medians_per_level_and_the_batch_of_one_model_time() -> None:
    runs = [
        {"1": level(100, 8, 12, {"1": 1.0}), "8": level(200, 30, 50, {"1": 1.2, "8": 5.0})},
        {"1": level(120, 7, 11, {"1": 1.4}), "8": level(260, 25, 45, {"8": 4.0})},
        {"1": level(110, 9, 30, {"1": 1.2}), "8": level(240, 28, 90, {})},
    ]
    found = summarize(runs)
    assert found["1"]["throughput_rps"] == 110 and found["1"]["p99_ms"] == 12
    assert found["1"]["model_ms_batch_1"] == 1.2
    assert found["8"]["p50_ms"] == 28 and found["8"]["p99_ms"] == 50
    assert found["8"]["model_ms_batch_1"] == 1.2  # only one repeat had a batch of one at 8
    assert [r["throughput_rps"] for r in found["8"]["runs"]] == [200, 260, 240]


def test_a_server_without_model_times_gives_none() -> None:
    found = summarize([{"1": level(100, 8, 12, None), "8": level(200, 30, 50, None)}])
    assert found["1"]["model_ms_batch_1"] is None and found["8"]["model_ms_batch_1"] is None
