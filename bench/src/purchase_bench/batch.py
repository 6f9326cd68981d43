"""Section ``batch``: 10,000 sessions in one request, on every core and on one."""

from __future__ import annotations

import json
import statistics
import sys
import time

from purchase_bench.common import API_DIR, SERVER_CPU, json_lines, last_json_line, say
from purchase_bench.context import Bench
from purchase_bench.servers import post, running


def batch(bench: Bench, size: int = 10_000, repeats: int = 15, warm_up: int = 3) -> None:
    sessions = [
        {**bench.session, "price": round(5 + (i % 997) * 1.7, 2), "hour": i % 24}
        for i in range(size)
    ]
    body = json.dumps(sessions).encode()
    # Every core (one big request may use them all: LightGBM predicts on each), then one
    # core, as the serving benchmark's server and a one-vCPU Cloud Run instance have.
    runs = {}
    for label, cpu in (("all cores", None), ("one core", SERVER_CPU)):
        runs[label] = batch_run(bench, body, size, cpu, repeats=repeats, warm_up=warm_up)
        say(f"batch of {size}, {label}: server {runs[label]['server_ms_median']:.0f} ms")
    bench.results["batch"] = {
        "breakdown_ms": batch_breakdown(bench, body),
        "sessions": size,
        "body_mb": len(body) / 1e6,
        "requests": repeats,
        "warm_up_requests": warm_up,
        **runs["all cores"],
        "runs": runs,
    }


def batch_run(
    bench: Bench, body: bytes, size: int, cpu: int | None, *, repeats: int, warm_up: int
) -> dict[str, float]:
    """Server time and round trip of ``repeats`` batch requests after ``warm_up`` others."""
    server = bench.ours(MODEL_PATH=str(bench.model_dir), LOG_LEVEL="INFO")
    server.log = bench.work / f"api-batch-{cpu}.log"
    server.log.unlink(missing_ok=True)
    trips = []
    with running(server, cpu=cpu):
        # The first requests grow the heap and start LightGBM's threads: not counted.
        for attempt in range(warm_up + repeats):
            started = time.perf_counter()
            status, answer = post(server.url, body, timeout=60)
            if attempt >= warm_up:
                trips.append(time.perf_counter() - started)
            if status != 200 or len(json.loads(answer)["predictions"]) != size:
                raise RuntimeError(f"batch request answered {status}: {answer[:300]!r}")
    server_ms = [
        entry["latency_ms"]
        for entry in json_lines(server.log)
        if entry.get("path") == "/predict" and entry.get("sessions") == size
    ][warm_up:]
    return {
        "server_ms_median": statistics.median(server_ms),
        "server_ms_min": min(server_ms),
        "server_ms_max": max(server_ms),
        "round_trip_ms_median": statistics.median(trips) * 1000,
    }


def batch_breakdown(bench: Bench, body: bytes) -> dict[str, float]:
    """Best of 5, in one process: where a batch request's server time goes."""
    body_file = bench.work / "batch.json"
    body_file.write_bytes(body)
    done = bench.run(
        [
            sys.executable,
            "-m",
            "purchase_bench.batch_probe",
            str(bench.model_dir),
            str(body_file),
        ],
        capture_output=True,
        text=True,
        cwd=API_DIR,
    )
    return last_json_line(done.stdout)
