"""Hostile input against ``medsight serve``: refusals, survival, memory and latency under attack.

    .venv/bin/python -m benchmarks.fuzz_serving [--bundle DIR] [--seconds 60] [--concurrency 64]

One server process on 127.0.0.1 (``--bundle``, or a ``malaria-lenet`` bundle trained for one
epoch on 400 real cells under ``benchmarks/.work/fuzz_serving``, kept for the next run), the
peak PSS of its process tree sampled from here the whole time. Phases:

1. warm-up (valid predictions and an explanation), then the baseline memory;
2. every case of :func:`benchmarks.hostile.hostile_cases` (``--threads`` at a time, one category
   after the other, ``/healthz`` after each), sent over raw sockets; each answer is checked for
   its status class, the JSON ``{"error", "detail"}`` shape of a refusal, and any file name or
   secret of the request coming back;
3. load A: ``--concurrency`` closed-loop clients of valid predictions (``benchmarks.loadgen``, its
   own process) for ``--seconds``;
4. load B: predictions alone at half that concurrency, then the same number of clients split
   between ``/v1/predict`` and ``/v1/explain`` (two load-generator processes at once) with a
   tenth as many clients again sending hostile cases; the predict p99 with explanations is
   compared with the one alone;
5. the server still alive, its memory after against the baseline, its log scanned for the
   secrets, file names and raw control bytes of the requests.

An explanation answered 503 ``busy`` is the documented refusal, not a failure. Results:
``--out``/fuzz_serving.json and a Markdown summary on stdout; :func:`render` makes a
RESULTS.md-style entry of a result.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import PeakMemory, write_json
from benchmarks.hostile import CATEGORIES, Case, hostile_cases, sample, valid_images
from benchmarks.serving import free_port, load, running

HERE = Path(__file__).parent
DEFAULT_DATA = Path(
    os.environ.get("MEDSIGHT_TEST_DATA", Path(__file__).parents[2] / "shared/datasets")
)
TARGETS = {"peak_pss_mb": 1500, "p99_ratio": 3.0}
CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b-\x1f\x7f]")  # all but tab and newline
FORGED = re.compile(rb"(?m)^FORGED")  # a log line begun by a request (see hostile._urls)


@dataclass
class Answer:
    status: int  # 0: no answer
    head: bytes
    body: bytes
    reset: bool  # the connection was reset or broken while sending or reading
    seconds: float


def send(case: Case, port: int, timeout: float) -> Answer:
    """Put ``case`` on a new connection and read the answer (the body is sent from a second
    thread when large, so an early refusal is read while the client is still sending)."""
    start = time.perf_counter()
    broken: list[OSError] = []
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError:  # refused: nobody listens any more
        return Answer(0, b"", b"", True, time.perf_counter() - start)

    def push() -> None:
        try:
            for piece in case.wire():
                sock.sendall(piece)
        except OSError as exc:
            broken.append(exc)

    pusher = None
    if case.length > 1 << 20 or case.stall:
        pusher = threading.Thread(target=push, daemon=True)
        pusher.start()
    else:
        push()
    data, reset = b"", False
    try:
        data = _read_answer(sock)
    except TimeoutError:
        pass
    except OSError:
        reset = True
    finally:
        sock.close()
        if pusher:
            pusher.join(timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    status = int(match.group(1)) if match else 0
    reset = reset or any(isinstance(e, ConnectionError) for e in broken)
    return Answer(status, head, body, reset, time.perf_counter() - start)


def _read_answer(sock: socket.socket) -> bytes:
    """The first answer on the connection (an answer to a second request that the server
    found in the same bytes is left out)."""
    data = b""
    while b"\r\n\r\n" not in data:
        if not (chunk := sock.recv(65536)):
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    found = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while found is None or len(body) < int(found.group(1)):
        if not (chunk := sock.recv(65536)):
            break
        body += chunk
    return head + b"\r\n\r\n" + (body[: int(found.group(1))] if found else body)


def judge(case: Case, answer: Answer) -> dict[str, Any]:
    """What one answer says: its outcome against the case's expectation and every problem."""
    try:
        doc = json.loads(answer.body)
    except ValueError:
        doc = None
    error_shape = (
        isinstance(doc, dict)
        and set(doc) == {"error", "detail"}
        and all(isinstance(v, str) for v in doc.values())
    )
    busy = case.route == "/v1/explain" and answer.status == 503 and error_shape
    busy = busy and doc["error"] == "busy"
    if answer.status == 0:
        outcome = "no_answer"
    elif busy:
        outcome = "busy"
    else:
        outcome = "expected" if f"{answer.status // 100}xx" == case.expect else "unexpected"
    text = answer.head + answer.body
    return {
        "outcome": outcome,
        "status": answer.status,
        "error": doc.get("error") if error_shape else None,
        "server_error": answer.status >= 500 and not busy,
        "non_json_error": answer.status >= 400 and not error_shape,
        "echoed": [s for s in case.secrets if s.encode() in text],
        "bomb_accepted": case.bomb and 200 <= answer.status < 300,
        "reset": answer.reset,
        "seconds": answer.seconds,
    }


def healthy(port: int, process: subprocess.Popen, wait: float = 30.0) -> bool:
    """Whether the server still runs and answers ``/healthz`` within ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def hostile_phase(
    cases: Sequence[Case], port: int, process: subprocess.Popen, threads: int, timeout: float
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Each category's cases ``threads`` at a time, then a health check: per-category counts
    and the cases that went wrong (capped)."""
    per_category, problems = {}, []
    with ThreadPoolExecutor(threads) as pool:
        for category in CATEGORIES:
            members = [c for c in cases if c.category == category]
            if not members:
                continue
            with PeakMemory(interval=0.1, pid=process.pid) as memory:
                verdicts = list(pool.map(lambda c: judge(c, send(c, port, timeout)), members))
            per_category[category] = _count(members, verdicts) | {
                "peak_pss_mb": round(memory.peak_tree_pss_mb, 1),
                "alive_after": healthy(port, process),
            }
            for case, verdict in zip(members, verdicts, strict=True):
                if _wrong(verdict) and len(problems) < 60:
                    problems.append({"category": category, "case": case.name, **verdict})
    return per_category, problems


def _wrong(verdict: dict[str, Any]) -> bool:
    return verdict["outcome"] in ("unexpected", "no_answer") or any(
        verdict[k] for k in ("server_error", "non_json_error", "echoed", "bomb_accepted")
    )


def _count(cases: Sequence[Case], verdicts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    outcomes = Counter(v["outcome"] for v in verdicts)
    return {
        "cases": len(cases),
        **{k: outcomes.get(k, 0) for k in ("expected", "unexpected", "busy", "no_answer")},
        "status_5xx": sum(v["server_error"] for v in verdicts),
        "non_json_errors": sum(v["non_json_error"] for v in verdicts),
        "echoes": sum(bool(v["echoed"]) for v in verdicts),
        "bombs": sum(c.bomb for c in cases),
        "bombs_accepted": sum(v["bomb_accepted"] for v in verdicts),
        "resets": sum(v["reset"] for v in verdicts),
        "statuses": dict(sorted(Counter(str(v["status"]) for v in verdicts).items())),
        "slowest_s": round(max(v["seconds"] for v in verdicts), 2),
    }


def hostile_clients(
    cases: Sequence[Case], port: int, rate: float, stop: threading.Event, timeout: float
) -> dict[str, Any]:
    """Hostile cases in turn, about ``rate`` a second (from up to four clients, so a slow one
    does not hold the others up), until ``stop`` is set."""
    done: list[tuple[Case, dict[str, Any]]] = []
    lock = threading.Lock()
    clients = 4

    def client(index: int) -> None:
        sent = index
        while not stop.wait(clients / rate * random.Random(sent).uniform(0.5, 1.5)):
            case = cases[sent % len(cases)]
            verdict = judge(case, send(case, port, timeout))
            with lock:
                done.append((case, verdict))
            sent += clients

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures = {"rate_per_s": round(rate, 2)}
    return figures | _count(*zip(*done, strict=True)) if done else figures


def mixed_phase(
    base: str,
    images: list[Path],
    cases: Sequence[Case],
    port: int,
    concurrency: int,
    seconds: float,
    alone_rps: float,
) -> dict[str, Any]:
    """Half the clients predicting, half explaining, and hostile cases making about a tenth
    of the requests (a ninth of the predictions' throughput alone)."""
    half = max(1, concurrency // 2)
    stop = threading.Event()
    quick = [c for c in cases if not (c.stall or c.length > 1 << 20)]
    quick = random.Random(0).sample(quick, len(quick))  # every category from the start
    with ThreadPoolExecutor(3) as pool:
        predict = pool.submit(load, f"{base}/v1/predict", images, half, seconds)
        explain = pool.submit(
            load, f"{base}/v1/explain", images, max(1, concurrency - half), seconds
        )
        hostile = pool.submit(hostile_clients, quick, port, max(0.5, alone_rps / 9), stop, 60.0)
        figures = {"predict": predict.result(), "explain": explain.result()}
        stop.set()
        figures["hostile"] = hostile.result()
    answered = sum(sum(f.get("statuses", {}).values()) for f in figures.values())
    answered += figures["hostile"].get("cases", 0)
    figures["hostile_fraction"] = round(figures["hostile"].get("cases", 0) / max(1, answered), 3)
    return figures


@contextmanager
def server(
    bundle: Path, port: int, log: Path, env: dict[str, str], request_timeout: float
) -> Iterator[subprocess.Popen]:
    """``medsight serve`` in its own process, healthy inside the block, stopped after it."""
    medsight = Path(sys.executable).with_name("medsight")
    command = [str(medsight), "serve", str(bundle), "--port", str(port)]
    command += ["--request-timeout", str(request_timeout)]
    with running(command, f"http://127.0.0.1:{port}/healthz", log, env) as process:
        yield process


def tree_pss_mb(pid: int) -> float:
    """The PSS of ``pid``'s process tree now (the peak of a few samples over half a second)."""
    with PeakMemory(interval=0.1, pid=pid) as memory:
        time.sleep(0.5)
    return round(memory.peak_tree_pss_mb, 1)


def environment(work: Path) -> dict[str, str]:
    from medsight.allocator import fast_environment

    base = {**os.environ, "MEDSIGHT_CACHE": str(work / "cache"), "HF_HUB_OFFLINE": "1"}
    return fast_environment(base | {"MEDSIGHT_PROGRESS": "json"})


def cells(data: Path, work: Path) -> Path | None:
    """400 real malaria cells (both classes, many patients) as a tree of links, if the data
    sets are there."""
    from benchmarks.workloads import build_tree

    if not (data / "malaria").is_dir():
        return None
    return build_tree("malaria", data, work / "cells", 400)


def train_bundle(tree: Path, work: Path, env: dict[str, str]) -> tuple[Path, float | None]:
    """A ``malaria-lenet`` bundle, one epoch on ``tree``; one trained before is reused."""
    run = work / "run"
    if (run / "bundle" / "bundle.json").is_file():
        return run / "bundle", None
    shutil.rmtree(run, ignore_errors=True)
    medsight = str(Path(sys.executable).with_name("medsight"))
    command = [medsight, "train", "--recipe", "malaria-lenet", "--data", str(tree)]
    start = time.monotonic()
    with open(work / "train.log", "w") as out:
        subprocess.run(command + ["--out", str(run), "--epochs", "1"], stdout=out, stderr=out,
                       env=env, check=True)  # fmt: skip
    return run / "bundle", round(time.monotonic() - start, 1)


def load_images(tree: Path | None, work: Path) -> list[Path]:
    """Image files for the load phases: real cells when there are, else generated ones."""
    if tree is not None:
        return sorted(tree.glob("*/*.png"))[::50][:8]
    folder = work / "images"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for label, data in valid_images()[:12]:
        (path := folder / f"{label}.img").write_bytes(data)
        files.append(path)
    return files


def scan_log(log: Path, secrets: set[str]) -> dict[str, Any]:
    """Which request secrets, and how many raw control bytes and tracebacks, the log holds."""
    text = log.read_bytes()
    return {
        "bytes": len(text),
        "secrets_found": sorted(s for s in secrets if s.encode() in text),
        "control_bytes": len(CONTROL_BYTES.findall(text)),
        "forged_lines": len(FORGED.findall(text)),
        "tracebacks": text.count(b"Traceback (most recent call last)"),
    }


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = environment(work)
    tree = cells(args.data, work)
    trained_s = None
    if args.bundle is None:
        if tree is None:
            raise SystemExit(f"no bundle given and no malaria cells under {args.data}")
        args.bundle, trained_s = train_bundle(tree, work, env)
    images = load_images(tree, work)
    real = [(f"cell-{i}", p.read_bytes()) for i, p in enumerate(images[:4])]
    cases = hostile_cases(args.seed, real)
    sent = sample(cases, args.sample) if args.sample else cases
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "serve.log"
    result: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "bundle": str(args.bundle),
        "bundle_trained_s": trained_s,
        "hostile_cases": len(sent),
        "cpus": os.cpu_count(),
    }
    phases: dict[str, PeakMemory] = {}
    with server(args.bundle, port, log, env, args.request_timeout) as process:
        with PeakMemory(interval=0.1, pid=process.pid) as whole:
            with urllib.request.urlopen(f"{base}/v1/model", timeout=30) as r:
                result["engine"] = json.load(r)["serving"]["engine"]
            load(f"{base}/v1/predict", images, 2, 1.0)  # warm-up
            load(f"{base}/v1/explain", images, 1, 1.0)
            result["baseline_pss_mb"] = tree_pss_mb(process.pid)
            with PeakMemory(interval=0.1, pid=process.pid) as phases["hostile"]:
                start = time.monotonic()
                categories, problems = hostile_phase(
                    sent, port, process, args.threads, args.request_timeout + 30
                )
                result["hostile_s"] = round(time.monotonic() - start, 1)
            time.sleep(min(2.0, args.seconds))  # let the last answers' buffers go
            result["after_hostile_pss_mb"] = tree_pss_mb(process.pid)
            with PeakMemory(interval=0.1, pid=process.pid) as phases["load_a"]:
                load_a = load(f"{base}/v1/predict", images, args.concurrency, args.seconds)
            half = max(1, args.concurrency // 2)
            with PeakMemory(interval=0.1, pid=process.pid) as phases["load_b"]:
                alone = load(f"{base}/v1/predict", images, half, args.seconds)
                mixed = mixed_phase(
                    base, images, cases, port, half, args.seconds, alone["throughput_rps"]
                )
            alive = healthy(port, process)
            time.sleep(min(2.0, args.seconds))
            result["after_pss_mb"] = tree_pss_mb(process.pid)
    secrets = {s for c in cases for s in c.secrets}
    result |= {
        "alive_after": alive,
        "server_exit_code": process.returncode,
        "peak_pss_mb": round(whole.peak_tree_pss_mb, 1),
        "phase_peak_pss_mb": {k: round(v.peak_tree_pss_mb, 1) for k, v in phases.items()},
        "leak_mb": round(result["after_pss_mb"] - result["baseline_pss_mb"], 1),
        "categories": categories,
        "problems": problems,
        "load_a": load_a,
        "load_b": {"predict_alone": alone, **mixed},
        "log": scan_log(log, secrets),
    }
    result["totals"] = _totals(result)
    result["targets"] = targets(result)
    return result


def _totals(result: dict[str, Any]) -> dict[str, int]:
    """The counts of every category and of load B's hostile requests together; the 5xx of the
    load generators apart (a 503 of ``/v1/explain`` is its documented ``busy``)."""
    keys = ("cases", "unexpected", "busy", "no_answer", "status_5xx", "non_json_errors")
    keys += ("echoes", "bombs", "bombs_accepted", "resets")
    b = result["load_b"]
    counted = [*result["categories"].values(), b["hostile"]]
    totals = {k: sum(c.get(k, 0) for c in counted) for k in keys}
    loads = {"a": result["load_a"], "alone": b["predict_alone"], "predict": b["predict"]}
    loads["explain"] = b["explain"]
    totals["load_5xx"] = sum(
        n
        for name, figures in loads.items()
        for code, n in figures.get("statuses", {}).items()
        if int(code) >= 500 and not (name == "explain" and code == "503")
    )
    totals["deaths"] = sum(not c["alive_after"] for c in result["categories"].values())
    totals["deaths"] += not result["alive_after"]
    return totals


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its measured figure and whether it was met."""
    t, log = result["totals"], result["log"]
    b = result["load_b"]
    alone, mixed = b["predict_alone"]["p99_ms"], b["predict"]["p99_ms"]
    ratio = round(mixed / alone, 2) if alone and mixed else None
    dirt = len(log["secrets_found"]) + log["control_bytes"] + log["forged_lines"]
    dirt += log["tracebacks"]
    rows = {
        "server_deaths": (t["deaths"], t["deaths"] == 0, "0"),
        "status_5xx": (t["status_5xx"] + t["load_5xx"], t["status_5xx"] + t["load_5xx"] == 0, "0"),
        "bombs_accepted": (t["bombs_accepted"], t["bombs_accepted"] == 0, "0"),
        "peak_server_pss_mb": (
            result["peak_pss_mb"],
            result["peak_pss_mb"] < TARGETS["peak_pss_mb"],
            f"< {TARGETS['peak_pss_mb']}",
        ),
        "predict_p99_ratio_with_explain": (
            ratio,
            ratio is not None and ratio <= TARGETS["p99_ratio"],
            f"<= {TARGETS['p99_ratio']}x",
        ),
        "logs_clean": (
            dirt,
            dirt == 0,
            "0 secrets, control bytes, forged lines, tracebacks",
        ),
        "echoes": (t["echoes"], t["echoes"] == 0, "0"),
        "non_json_errors": (t["non_json_errors"], t["non_json_errors"] == 0, "0"),
    }
    return {
        k: {"measured": m, "met": bool(ok), "target": goal} for k, (m, ok, goal) in rows.items()
    }


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]


def summary(result: dict[str, Any]) -> str:
    """The targets, the categories and the load phases as Markdown tables."""
    goals = [
        [name, row["target"], row["measured"], "met" if row["met"] else "**missed**"]
        for name, row in result["targets"].items()
    ]
    keys = ["cases", "expected", "unexpected", "busy", "no_answer", "status_5xx"]
    keys += ["non_json_errors", "echoes", "bombs_accepted", "resets", "peak_pss_mb", "alive_after"]
    categories = [[name, *(c[k] for k in keys)] for name, c in result["categories"].items()]
    b = result["load_b"]
    loads = [
        ["A: predict", result["load_a"]],
        ["B: predict alone", b["predict_alone"]],
        ["B: predict, with explain", b["predict"]],
        ["B: explain", b["explain"]],
    ]
    load_rows = [
        [
            label,
            f["concurrency"],
            f["requests"],
            f["throughput_rps"],
            f["p50_ms"],
            f["p99_ms"],
            json.dumps(f.get("statuses", {})),
        ]  # fmt: skip
        for label, f in loads
    ]
    hostile = b["hostile"]
    memory = (
        f"Server PSS: baseline {result['baseline_pss_mb']} MB, peak {result['peak_pss_mb']} MB "
        f"(phases: {result['phase_peak_pss_mb']}), after the hostile phase "
        f"{result['after_hostile_pss_mb']} MB, at the end {result['after_pss_mb']} MB "
        f"(leak {result['leak_mb']:+} MB); hostile phase {result['hostile_s']} s for "
        f"{result['hostile_cases']} cases; B's hostile requests: {hostile.get('cases', 0)} "
        f"({b['hostile_fraction']:.0%} of B's mixed requests), {hostile.get('status_5xx', 0)} "
        f"5xx, {hostile.get('bombs_accepted', 0)} bombs accepted."
    )
    lines = _table(["target", "goal", "measured", ""], goals) + [""]
    lines += _table(["category", *keys], categories) + [""]
    lines += _table(
        ["load", "clients", "requests", "req/s", "p50 ms", "p99 ms", "statuses"], load_rows
    )
    return "\n".join([*lines, "", memory])


def render(result: dict[str, Any]) -> str:
    """A RESULTS.md entry for one run."""
    met = sum(t["met"] for t in result["targets"].values())
    head = [
        f"## {result['date']} — hostile input against `medsight serve` (issue 19)",
        "",
        f"- Command: `.venv/bin/{result['command']}`",
        f"- Bundle: `{result['bundle']}` ({result['engine']}), {result['cpus']} CPUs; "
        f"{result['hostile_cases']} hostile cases over {len(result['categories'])} categories",
        f"- Targets met: {met}, missed: {len(result['targets']) - met}",
        "",
    ]
    problems = [
        f"- `{p['category']}/{p['case']}`: {p['status']} {p['error'] or ''} ({p['outcome']})"
        for p in result["problems"][:15]
    ]
    tail = ["", "Cases that went wrong (first 15):", "", *problems] if problems else []
    return "\n".join(head) + summary(result) + "\n" + "\n".join(tail) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, help="default: train malaria-lenet for 1 epoch")
    parser.add_argument("--seconds", type=float, default=60.0, help="per load phase")
    parser.add_argument("--concurrency", type=int, default=64, help="load A; B uses half")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=HERE / ".work" / "fuzz_serving")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample", type=int, help="only this many hostile cases per category")
    parser.add_argument("--threads", type=int, default=4, help="hostile cases sent at once")
    parser.add_argument("--request-timeout", type=float, default=30.0, help="the server's")
    args = parser.parse_args(argv)
    given = sys.argv[1:] if argv is None else list(argv)
    result = run(args, " ".join(["python -m benchmarks.fuzz_serving", *given]))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "fuzz_serving.json", result)
    print(summary(result))
    print(f"written {args.out / 'fuzz_serving.json'}")
    return result


if __name__ == "__main__":
    main()
