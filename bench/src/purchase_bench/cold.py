"""Section ``cold``: process start to the first 200, and where our start-up time goes.

Fetch mode is measured against a real ``mlflow server`` that proxies its artifacts, as in
deployment: the bench's model is logged there as training logs it and registered by the
registration step (which logs its compiled form with it), then fetched by alias.
``python -m purchase_bench.cold log MODEL_DIR STORE_URI`` (MLFLOW_TRACKING_URI: the server) is
the logging half, run in its own interpreter.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from purchase_bench.common import API_DIR, ROOT, last_json_line, say
from purchase_bench.context import Bench
from purchase_rig.cloud_run_standin import free_port

SERVER_ALIAS = "bench"


def cold(bench: Bench, repeats: int = 3) -> None:
    mlflow_server = start_mlflow_server(bench)
    try:
        server_uri = register_on_server(bench, mlflow_server[1])
        fetch = {"MODEL_URI": server_uri, "MLFLOW_TRACKING_URI": mlflow_server[1]}
        candidates = [
            ("ours, baked model", bench.baked()),
            ("ours, fetch from mlflow server", bench.ours(**fetch)),
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
        breakdown = {**startup_breakdown(bench), **fetch_breakdown(bench, fetch)}
    finally:
        mlflow_server[0].terminate()
        mlflow_server[0].wait(timeout=20)
    bench.results["cold"] = rows
    bench.results["startup_breakdown"] = breakdown
    # Issue 16, point 11: fetch mode at most 2x the baked start, measured in the same run.
    ratio = rows[1]["median_s"] / rows[0]["median_s"]
    bench.results["cold_fetch_over_baked"] = ratio
    say(f"cold start fetch/baked: {ratio:.2f}x (target <= 2x)")


def register_on_server(bench: Bench, server: str) -> str:
    """The bench's model logged on ``server`` as training logs it (test set, model, reference
    sample), then registered and aliased by the registration step; its alias URI."""
    env = {**bench.env, "MLFLOW_TRACKING_URI": server}
    done = bench.run(
        [
            sys.executable,
            "-m",
            "purchase_bench.cold",
            "log",
            str(bench.model_dir),
            bench.tracking_uri,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    run_id = done.stdout.strip().splitlines()[-1]
    bench.run(
        [
            sys.executable,
            str(ROOT / "scripts/register_model.py"),
            *("--run-id", run_id, "--alias", SERVER_ALIAS),
        ],
        env=env,
        stdout=(bench.work / "register-on-server.md").open("w"),
    )
    return f"models:/{bench.model_name()}@{SERVER_ALIAS}"


def start_mlflow_server(bench: Bench) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            shutil.which("mlflow") or "mlflow",
            "server",
            "--host=127.0.0.1",
            f"--port={port}",
            # Its own store, artifacts proxied (mlflow-artifacts:/), as in deployment.
            f"--backend-store-uri=sqlite:///{bench.work / 'mlflow-server.db'}",
            f"--artifacts-destination={bench.work / 'mlflow-server-artifacts'}",
            "--workers=1",
        ],
        # Its job runner (GenAI jobs) is unused here and slows its start (rig/local_cloud.py).
        env={**bench.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
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
    return parts


def fetch_breakdown(bench: Bench, fetch: dict[str, str]) -> dict[str, object]:
    """Fetch mode in a fresh interpreter: imports, the download, the load, what it imported."""
    done = bench.run(
        [sys.executable, "-m", "purchase_bench.startup_probe", "--fetch"],
        capture_output=True,
        text=True,
        cwd=API_DIR,
        env={**bench.env, **fetch},
    )
    return {f"fetch_{key}": value for key, value in last_json_line(done.stdout).items()}


def _log_on_server(model_dir: Path, store_uri: str) -> str:
    """The baked model's estimator logged in a new run of MLFLOW_TRACKING_URI by training's own
    functions, with the test set its training run logged in ``store_uri``; the run id."""
    import mlflow  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415

    from purchase_contract.model_dir import ModelMeta  # noqa: PLC0415
    from purchase_predict.mlflow_logging import log_model, log_test_set  # noqa: PLC0415

    meta = ModelMeta.read(model_dir)
    test_set = pd.read_parquet(
        mlflow.artifacts.download_artifacts(
            run_id=meta.run_id, artifact_path="test_set/test_set.parquet", tracking_uri=store_uri
        )
    )
    model = mlflow.sklearn.load_model(str(model_dir))
    with mlflow.start_run() as run:
        log_test_set(test_set)
        log_model(model, test_set, meta.decision_threshold)
    return run.info.run_id


if __name__ == "__main__":
    if sys.argv[1:2] == ["log"]:
        print(_log_on_server(Path(sys.argv[2]), sys.argv[3]))
