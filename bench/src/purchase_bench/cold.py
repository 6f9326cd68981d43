"""Section ``cold``: process start to the first 200, and where our start-up time goes."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
import urllib.request

from purchase_bench.common import API_DIR, last_json_line, say
from purchase_bench.context import Bench
from purchase_rig.cloud_run_standin import free_port


def cold(bench: Bench, repeats: int = 3) -> None:
    mlflow_server = start_mlflow_server(bench)
    try:
        candidates = [
            ("ours, baked model", bench.baked()),
            (
                "ours, fetch from mlflow server",
                bench.ours(MODEL_URI=bench.model_uri, MLFLOW_TRACKING_URI=mlflow_server[1]),
            ),
            ("mlflow models serve", bench.mlflow_serve()),
        ]
        rows = []
        for label, server in candidates:
            times = []
            for _ in range(repeats):
                times.append(server.start())
                server.stop()
            say(f"cold start {label}: {statistics.median(times):.2f} s")
            rows.append({"what": label, "median_s": statistics.median(times), "runs": times})
    finally:
        mlflow_server[0].terminate()
        mlflow_server[0].wait(timeout=20)
    bench.results["cold"] = rows
    bench.results["startup_breakdown"] = startup_breakdown(bench)


def start_mlflow_server(bench: Bench) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("mlflow") or "mlflow",
            "server",
            "--host=127.0.0.1",
            f"--port={port}",
            f"--backend-store-uri={bench.tracking_uri}",
            "--workers=1",
        ],
        env=bench.env,
        stdout=(bench.work / "mlflow-server.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.terminate()
    raise RuntimeError("mlflow server did not start: see mlflow-server.log")


def startup_breakdown(bench: Bench) -> dict[str, float]:
    """Seconds spent in a fresh interpreter: start, imports, model load (baked, prepared)."""
    started = time.perf_counter()
    done = bench.run(
        [sys.executable, "-m", "purchase_bench.startup_probe", str(bench.model_dir)],
        capture_output=True,
        text=True,
        cwd=API_DIR,
    )
    total = time.perf_counter() - started
    parts = last_json_line(done.stdout)
    bench.run([sys.executable, "-c", "pass"], capture_output=True)  # warm the page cache
    started = time.perf_counter()
    bench.run([sys.executable, "-c", "pass"], capture_output=True)
    parts["interpreter_s"] = time.perf_counter() - started
    parts["total_s"] = total
    # What fetch mode adds: the MLflow client, and scikit-learn to read the MLflow format
    # (a fetched model has no compiled form: that is written at image build).
    for key, modules in (
        ("fetch_import_mlflow_s", ["mlflow.artifacts", "mlflow"]),
        ("fetch_import_sklearn_s", ["skops.io", "sklearn.compose", "lightgbm.sklearn"]),
    ):
        done = bench.run(
            [sys.executable, "-m", "purchase_bench.import_probe", *modules],
            capture_output=True,
            text=True,
        )
        parts[key] = float(done.stdout.strip().splitlines()[-1])
    return parts
