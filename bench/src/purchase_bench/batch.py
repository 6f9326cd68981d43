"""Section ``batch``: 10,000 sessions in one request, A/B in one run.

Three servers of the same model, on every core and on one, in interleaved rounds (this
machine's speed drifts by tens of percent within minutes): the API as it was before issue 16's
work (``BASELINE_REF``, checked out from git into the scratch directory and its model prepared
by its own ``app.prepare``), ours with the trees on LightGBM's library (``COMPILED_TREES=false``),
and ours. Server time is each API's request log. In one process besides: where ours spends a
batch, and the compiled trees against LightGBM's own predict on the same matrix.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from purchase_bench.common import API_DIR, ROOT, SERVER_CPU, json_lines, last_json_line, say
from purchase_bench.context import Bench
from purchase_bench.servers import Server, post, running

# main before the first commit for issue 16 (7614ec8): the code the issue measured.
BASELINE_REF = "8a2aef312c8f7af2d44017feb95efd11931b6dbd"
BASELINE = "before issue 16"
NO_TREES = "ours, LightGBM's library"
OURS = "ours"
ROUNDS = 2


def batch(bench: Bench, size: int = 10_000, repeats: int = 8, warm_up: int = 3) -> None:
    sessions = [
        {**bench.session, "price": round(5 + (i % 997) * 1.7, 2), "hour": i % 24}
        for i in range(size)
    ]
    body = json.dumps(sessions).encode()
    arms: dict[str, Server] = {
        NO_TREES: bench.ours(MODEL_PATH=str(bench.model_dir), COMPILED_TREES="false"),
        OURS: bench.ours(MODEL_PATH=str(bench.model_dir)),
    }
    baseline, why_not = baseline_server(bench)
    if baseline is not None:
        arms = {BASELINE: baseline, **arms}
    runs: dict[str, dict[str, dict[str, float]]] = {}
    # Every core (LightGBM and our trees use them all), then one, as a one-vCPU instance has.
    for label, cpu in (("all cores", None), ("one core", SERVER_CPU)):
        times = {arm: ([], []) for arm in arms}
        for _ in range(ROUNDS):
            for arm, server in arms.items():
                slug = re.sub(r"\W+", "-", arm)
                server.log = bench.work / f"api-batch-{slug}-{cpu}.log"
                server_ms, trips = batch_run(
                    server, body, size, cpu, repeats=repeats, warm_up=warm_up
                )
                times[arm][0].extend(server_ms)
                times[arm][1].extend(trips)
        runs[label] = {arm: _summary(*times[arm]) for arm in arms}
        say(
            f"batch of {size}, {label}: "
            + ", ".join(
                f"{arm} {run['server_ms_median']:.0f} ms" for arm, run in runs[label].items()
            )
        )
    bench.results["batch"] = {
        "breakdown_ms": batch_breakdown(bench, body),
        "sessions": size,
        "body_mb": len(body) / 1e6,
        "requests": repeats * ROUNDS,
        "warm_up_requests": warm_up,
        "rounds": ROUNDS,
        "baseline_ref": BASELINE_REF,
        "baseline_missing": why_not,
        "arms": runs,
    }


def batch_run(
    server: Server, body: bytes, size: int, cpu: int | None, *, repeats: int, warm_up: int
) -> tuple[list[float], list[float]]:
    """``repeats`` batch requests after ``warm_up`` others on a fresh server: their server
    times (its request log) and round trips, in milliseconds."""
    server.log.unlink(missing_ok=True)
    measured = []
    with running(server, cpu=cpu):
        # The first requests grow the heap and start the thread pools: not counted.
        for attempt in range(warm_up + repeats):
            started = time.perf_counter()
            status, answer = post(server.url, body, timeout=60)
            if attempt >= warm_up:
                measured.append(time.perf_counter() - started)
            if status != 200 or len(json.loads(answer)["predictions"]) != size:
                raise RuntimeError(f"{server.name}: a batch answered {status}: {answer[:300]!r}")
    logged = [
        entry["latency_ms"]
        for entry in json_lines(server.log)
        if entry.get("path") == "/predict" and entry.get("sessions") == size
    ]
    if len(logged) != warm_up + repeats:
        raise RuntimeError(f"{server.name}: {len(logged)} batch requests logged in {server.log}")
    return logged[warm_up:], [seconds * 1000 for seconds in measured]


def _summary(server_ms: list[float], trips: list[float]) -> dict[str, float]:
    return {
        "server_ms_median": statistics.median(server_ms),
        "server_ms_min": min(server_ms),
        "server_ms_max": max(server_ms),
        "round_trip_ms_median": statistics.median(trips),
    }


def baseline_server(bench: Bench) -> tuple[Server | None, str]:
    """The API at ``BASELINE_REF`` serving the bench's model, prepared by its own code; None
    and why when the checkout has not that commit (a shallow clone) or it cannot prepare."""
    tree = bench.work / "baseline"
    model_dir = bench.work / "baseline-model"
    try:
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", BASELINE_REF, "purchase_predict_api", "contract"],
            check=True,
            capture_output=True,
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        shutil.copytree(bench.unprepared_dir, model_dir)
        env = {**bench.env, "PYTHONPATH": _baseline_path(tree)}
        bench.run(
            [sys.executable, "-m", "app.prepare", str(model_dir)],
            env=env,
            cwd=tree / "purchase_predict_api",
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as err:
        stderr = getattr(err, "stderr", b"") or b""
        why = f"{err}: {stderr.decode(errors='replace').strip()[-300:]}"
        say(f"the baseline ({BASELINE_REF[:7]}) is not measured: {why}")
        return None, why
    server = bench.ours(MODEL_PATH=str(model_dir), PYTHONPATH=_baseline_path(tree))
    server.name = f"purchase-predict-api at {BASELINE_REF[:7]}"
    return server, ""


def _baseline_path(tree: Path) -> str:
    """The baseline's API and contract packages first: they shadow the installed ones."""
    return f"{tree / 'purchase_predict_api'}:{tree / 'contract' / 'src'}"


def batch_breakdown(bench: Bench, body: bytes) -> dict[str, float]:
    """Best of N, in one process: where a batch request's server time goes, and the compiled
    trees against LightGBM's own predict on the same matrix."""
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
