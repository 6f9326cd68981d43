#!/usr/bin/env python3
"""Benchmarks of the serving path, the image and the feature step: what ``nox -s bench`` runs.

One run measures, side by side on this machine, and writes ``docs/benchmarks.md``:

``serving``  the same registered model served by our API (one uvicorn worker) and by
             ``mlflow models serve --env-manager local`` (one worker), each pinned to CPU 0,
             under load from a bounded asyncio generator pinned to CPU 1 (keep-alive
             connections, single-session requests, 16 and 64 connections): req/s, p50, p99;
``cold``     process start -> first 200 on /predict: our API with the baked model, our API
             fetching from an ``mlflow server``, MLflow's scoring server; where our start-up
             time goes (imports, model load);
``batch``    10,000 sessions in one request: server time (the API's request log) and round trip;
``image``    image size and container cold start, when a Docker engine can be started
             (``scripts/local_cloud.py``: the same engine and base image as ``nox -s pipeline``);
``feature``  raw events -> primary table (``kedro run --pipeline data_processing``) on generated
             data of 1 M and 10 M events: wall time and peak memory of the process;
``pipeline`` the local pipeline (``scripts/local_pipeline.py``) in a scratch copy of the
             repository: a cold run, a one-line code change in the API, a warm run; seconds
             per stage.

Traffic stays on loopback; every run is bounded (duration, request counts, timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from purchase_bench import REPO_ROOT
from purchase_rig.cloud_run_standin import free_port

ROOT = REPO_ROOT
TRAINING_DIR = ROOT / "purchase_predict"
API_DIR = ROOT / "purchase_predict_api"
SMOKE_REQUEST = API_DIR / "smoke_request.json"
SECTIONS = ("serving", "cold", "batch", "image", "feature", "pipeline")
SERVER_CPU = 0
LOAD_CPU = 1
EVENTS_PER_SESSION = 6.6  # the generator's average (purchase-predict-generate --help)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` run on one CPU (with everything it starts) when there are two and taskset exists."""
    if cpu is None or (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return cmd
    return ["taskset", "--cpu-list", str(cpu), *cmd]


def post(url: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


# ---- servers under test ------------------------------------------------------------------------


@dataclass
class Server:
    """A server process to benchmark: how to start it and what to send it."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    path: str  # the prediction endpoint
    body: bytes  # one single-session request
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, cpu: int | None = SERVER_CPU) -> float:
        """Start, wait for a 200 on the endpoint; seconds from spawn to that 200."""
        self.port = free_port()
        env = {**self.env, "PORT": str(self.port)}
        cmd = pinned([part.replace("{port}", str(self.port)) for part in self.cmd], cpu)
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + 180
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: see {self.log}"
                )
            status, _ = post(self.url, self.body, timeout=5)
            if status == 200:
                return time.perf_counter() - started
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} gave no 200 on {self.path} within 180 s: see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None


@contextmanager
def running(server: Server, cpu: int | None = SERVER_CPU) -> Iterator[Server]:
    server.start(cpu)
    try:
        yield server
    finally:
        server.stop()


# ---- load generator (runs in its own process, pinned to the other CPU) --------------------------


async def _client(
    host: str, port: int, request: bytes, *, until: float, warm_until: float, out: dict[str, Any]
) -> None:
    reader = writer = None
    while (now := time.perf_counter()) < until:
        started = now
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            status_line = await reader.readline()
            length, close = 0, False
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            await reader.readexactly(length)
            status = int(status_line.split()[1])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status, close = 0, True
        elapsed = time.perf_counter() - started
        if started >= warm_until:
            out["latencies"].append(elapsed)
            if status != 200:
                out["errors"] += 1
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _load(url: str, body: bytes, connections: int, duration: float, warmup: float) -> dict:
    parsed = urllib.parse.urlsplit(url)
    request = (
        f"POST {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    out: dict[str, Any] = {"latencies": [], "errors": 0}
    start = time.perf_counter()
    warm_until = start + warmup
    until = warm_until + duration
    await asyncio.gather(
        *(
            _client(
                parsed.hostname, parsed.port, request, until=until, warm_until=warm_until, out=out
            )
            for _ in range(connections)
        )
    )
    lat = sorted(out["latencies"])
    if not lat:
        return {"requests": 0, "errors": out["errors"], "rps": 0.0, "p50_ms": None, "p99_ms": None}
    return {
        "requests": len(lat),
        "errors": out["errors"],
        "rps": len(lat) / duration,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


def load(url: str, body: bytes, connections: int, duration: float, warmup: float = 2.0) -> dict:
    """Run the load generator in a child process pinned to LOAD_CPU; its results."""
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(body)
    try:
        done = subprocess.run(
            pinned(
                [
                    sys.executable,
                    __file__,
                    "_load",
                    url,
                    f.name,
                    str(connections),
                    str(duration),
                    str(warmup),
                ],
                LOAD_CPU,
            ),
            capture_output=True,
            text=True,
            timeout=duration + warmup + 60,
            check=True,
        )
    finally:
        os.unlink(f.name)
    return json.loads(done.stdout)


# ---- the benchmark run -------------------------------------------------------------------------


@dataclass
class Bench:
    work: Path
    duration: float
    connections: list[int]
    events: list[int]
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tracking_uri = f"sqlite:///{self.work / 'mlflow.db'}"
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PYTHONUNBUFFERED": "1",
        }
        self.session = json.loads(SMOKE_REQUEST.read_text())
        self.model_dir = self.work / "model"

    def run(
        self,
        cmd: list[str],
        *,
        check: bool = True,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, check=check, env=env or self.env, **kwargs)

    # -- a registered model, baked as the image bakes it
    def model(self) -> None:
        say("training a model into a scratch MLflow store (automl_max_evals=4)")
        self.run(
            [
                "purchase-predict-generate",
                "--out",
                str(TRAINING_DIR / "data/01_raw/events.parquet"),
                "--if-missing",
            ]
        )
        self.run(["kedro", "run", "--params", "automl_max_evals=4"], cwd=TRAINING_DIR)
        self.run(
            [
                sys.executable,
                str(ROOT / "scripts/register_model.py"),
                "--training-run-json",
                str(TRAINING_DIR / "data/08_reporting/training_run.json"),
                "--alias",
                "bench",
            ],
            stdout=subprocess.DEVNULL,
        )
        model_name = self.model_name()
        self.model_uri = f"models:/{model_name}@bench"
        self.run(
            [
                sys.executable,
                str(ROOT / "scripts/bake_model.py"),
                "--model-uri",
                self.model_uri,
                "--out",
                str(self.model_dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.run([sys.executable, "-m", "app.prepare", str(self.model_dir)], cwd=API_DIR)

    @staticmethod
    def model_name() -> str:
        from purchase_contract.config import load_config  # noqa: PLC0415

        return load_config().model_name

    def ours(self, **env: str) -> Server:
        mode = "fetch" if "MODEL_URI" in env else "baked"
        return Server(
            name=f"purchase-predict-api ({mode})",
            cmd=[sys.executable, "-m", "app"],
            env={**self.env, **env},
            path="/predict",
            body=json.dumps(self.session).encode(),
            log=self.work / f"api-{mode}.log",
        )

    def baked(self) -> Server:
        return self.ours(MODEL_PATH=str(self.model_dir))

    def mlflow_serve(self, tracking_uri: str | None = None) -> Server:
        mlflow = shutil.which("mlflow") or "mlflow"
        return Server(
            name="mlflow models serve",
            cmd=[
                mlflow,
                "models",
                "serve",
                "-m",
                self.model_uri,
                "--env-manager",
                "local",
                "--workers",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
            ],
            env={**self.env, "MLFLOW_TRACKING_URI": tracking_uri or self.tracking_uri},
            path="/invocations",
            body=json.dumps({"dataframe_records": [self.session]}).encode(),
            log=self.work / "mlflow-serve.log",
        )

    # -- sections
    def serving(self) -> None:
        rows = []
        for server in (self.baked(), self.mlflow_serve()):
            with running(server):
                for connections in self.connections:
                    say(f"load: {server.name}, {connections} connections, {self.duration:.0f} s")
                    stats = load(server.url, server.body, connections, self.duration)
                    rows.append({"server": server.name, "connections": connections, **stats})
        self.results["serving"] = rows

    def cold(self, repeats: int = 3) -> None:
        mlflow_server = self.start_mlflow_server()
        try:
            candidates = [
                ("ours, baked model", self.baked()),
                (
                    "ours, fetch from mlflow server",
                    self.ours(MODEL_URI=self.model_uri, MLFLOW_TRACKING_URI=mlflow_server[1]),
                ),
                ("mlflow models serve", self.mlflow_serve()),
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
        self.results["cold"] = rows
        self.results["startup_breakdown"] = self.startup_breakdown()

    def start_mlflow_server(self) -> tuple[subprocess.Popen, str]:
        port = free_port()
        proc = subprocess.Popen(
            [
                shutil.which("mlflow") or "mlflow",
                "server",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--backend-store-uri={self.tracking_uri}",
                "--workers=1",
            ],
            env=self.env,
            stdout=(self.work / "mlflow-server.log").open("ab"),
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

    def startup_breakdown(self) -> dict[str, float]:
        """Seconds spent in a fresh interpreter: start, imports, model load (baked, prepared)."""
        code = (
            "import time, json, sys; t0 = time.perf_counter()\n"
            "import app.main\n"
            "t1 = time.perf_counter()\n"
            "from pathlib import Path\n"
            "from app.core.model import load_model_dir\n"
            "load_model_dir(Path(sys.argv[1]))\n"
            "t2 = time.perf_counter()\n"
            "print(json.dumps({'imports_s': t1 - t0, 'model_load_s': t2 - t1}))\n"
        )
        started = time.perf_counter()
        done = self.run(
            [sys.executable, "-c", code, str(self.model_dir)],
            capture_output=True,
            text=True,
            cwd=API_DIR,
        )
        total = time.perf_counter() - started
        parts = json.loads(done.stdout.strip().splitlines()[-1])
        interpreter = self.run(
            [sys.executable, "-c", "pass"], capture_output=True
        )  # warm the page cache
        del interpreter
        started = time.perf_counter()
        self.run([sys.executable, "-c", "pass"], capture_output=True)
        parts["interpreter_s"] = time.perf_counter() - started
        parts["total_s"] = total
        # What fetch mode adds: the MLflow client, and scikit-learn to read the MLflow format
        # (a fetched model has no compiled form: that is written at image build).
        for key, modules in (
            ("fetch_import_mlflow_s", "mlflow.artifacts, mlflow"),
            ("fetch_import_sklearn_s", "skops.io, sklearn.compose, lightgbm.sklearn"),
        ):
            code = f"import time; t = time.perf_counter(); import {modules}; print(time.perf_counter() - t)"
            done = self.run([sys.executable, "-c", code], capture_output=True, text=True)
            parts[key] = float(done.stdout.strip().splitlines()[-1])
        return parts

    def batch(self, size: int = 10_000, repeats: int = 15, warm_up: int = 3) -> None:
        sessions = [
            {**self.session, "price": round(5 + (i % 997) * 1.7, 2), "hour": i % 24}
            for i in range(size)
        ]
        body = json.dumps(sessions).encode()
        # Every core (one big request may use them all: LightGBM predicts on each), then one
        # core, as the serving benchmark's server and a one-vCPU Cloud Run instance have.
        runs = {}
        for label, cpu in (("all cores", None), ("one core", SERVER_CPU)):
            runs[label] = self.batch_run(body, size, cpu, repeats, warm_up)
            say(f"batch of {size}, {label}: server {runs[label]['server_ms_median']:.0f} ms")
        self.results["batch"] = {
            "breakdown_ms": self.batch_breakdown(body),
            "sessions": size,
            "body_mb": len(body) / 1e6,
            "requests": repeats,
            "warm_up_requests": warm_up,
            **runs["all cores"],
            "runs": runs,
        }

    def batch_run(
        self, body: bytes, size: int, cpu: int | None, repeats: int, warm_up: int
    ) -> dict[str, float]:
        """Server time and round trip of ``repeats`` batch requests after ``warm_up`` others."""
        server = self.ours(MODEL_PATH=str(self.model_dir), LOG_LEVEL="INFO")
        server.log = self.work / f"api-batch-{cpu}.log"
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
            for entry in _json_lines(server.log)
            if entry.get("path") == "/predict" and entry.get("sessions") == size
        ][warm_up:]
        return {
            "server_ms_median": statistics.median(server_ms),
            "server_ms_min": min(server_ms),
            "server_ms_max": max(server_ms),
            "round_trip_ms_median": statistics.median(trips) * 1000,
        }

    def batch_breakdown(self, body: bytes) -> dict[str, float]:
        """Best of 5, in one process: where a batch request's server time goes."""
        body_file = self.work / "batch.json"
        body_file.write_bytes(body)
        # The route's own steps: pydantic-core parses, validates and writes the answer.
        code = (
            "import json, sys, time\n"
            "from pathlib import Path\n"
            "from pydantic import TypeAdapter\n"
            "from pydantic_core import from_json, to_json\n"
            "from app.core.model import load_model_dir\n"
            "from app.models import PredictRequest\n"
            "model = load_model_dir(Path(sys.argv[1]))\n"
            "body = Path(sys.argv[2]).read_bytes()\n"
            "adapter = TypeAdapter(PredictRequest)\n"
            "def best(f):\n"
            "    times = []\n"
            "    for _ in range(5):\n"
            "        t = time.perf_counter(); out = f(); times.append(time.perf_counter() - t)\n"
            "    return out, min(times) * 1000\n"
            "raw, parse = best(lambda: from_json(body))\n"
            "sessions, validate = best(lambda: adapter.validate_python(raw))\n"
            "p, predict = best(lambda: model.purchase_probabilities(sessions))\n"
            "_, answer = best(lambda: to_json({'predictions': [{'probability': x,"
            " 'purchased': x >= 0.5} for x in p.tolist()]}))\n"
            "print(json.dumps({'JSON parse': parse, 'validation (pydantic)': validate,"
            " 'prediction': predict, 'answer JSON': answer}))\n"
        )
        done = self.run(
            [sys.executable, "-c", code, str(self.model_dir), str(body_file)],
            capture_output=True,
            text=True,
            cwd=API_DIR,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    def image(self, repeats: int = 3) -> None:
        from purchase_rig.local_cloud import DEFAULT_STATE, LocalCloud, LocalCloudError  # noqa: PLC0415

        if not shutil.which("dockerd"):
            self.results["image"] = {"skipped": "no dockerd on this machine"}
            return
        cloud = LocalCloud(DEFAULT_STATE)
        was_up = cloud.docker_ready()
        try:
            env = {**self.env, **cloud.up(["docker", "base"])}
        except LocalCloudError as err:
            self.results["image"] = {"skipped": f"no Docker engine could start: {err}"}
            return
        try:
            context = self.work / "context"
            shutil.copytree(
                API_DIR, context, ignore=shutil.ignore_patterns("tests", "model", "__pycache__")
            )
            shutil.copytree(self.model_dir, context / "model")
            tag = "purchase-predict-api:bench"
            say("building the API image (docker build)")
            started = time.perf_counter()
            self.run(
                [
                    "docker",
                    "build",
                    "--network=host",
                    f"--build-arg=BASE_IMAGE={env['BASE_IMAGE']}",
                    "--tag",
                    tag,
                    str(context),
                ],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            build_s = time.perf_counter() - started
            size = int(
                self.run(
                    ["docker", "image", "inspect", "--format", "{{.Size}}", tag],
                    env=env,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            base_size = int(
                self.run(
                    ["docker", "image", "inspect", "--format", "{{.Size}}", env["BASE_IMAGE"]],
                    env=env,
                    capture_output=True,
                    text=True,
                ).stdout
            )
            times = []
            for i in range(repeats):
                server = Server(
                    name="image",
                    cmd=[
                        "docker",
                        "run",
                        "--rm",
                        "--network=host",
                        f"--name=bench-cold-{i}",
                        "-e",
                        "PORT={port}",
                        tag,
                    ],
                    env=env,
                    path="/predict",
                    body=json.dumps(self.session).encode(),
                    log=self.work / "image.log",
                )
                times.append(server.start(cpu=None))
                self.run(["docker", "rm", "-f", f"bench-cold-{i}"], env=env, capture_output=True)
                server.stop()
            self.results["image"] = {
                "size_mb": size / 1e6,
                "base_size_mb": base_size / 1e6,
                "base_image": env["BASE_IMAGE"],
                "build_s": build_s,
                "cold_start_median_s": statistics.median(times),
                "cold_start_runs": times,
            }
            say(f"image {size / 1e6:.0f} MB, container cold start {statistics.median(times):.2f} s")
        finally:
            if not was_up:
                cloud.down()

    def feature(self) -> None:
        import yaml  # noqa: PLC0415 - the training environment has it

        rows = []
        for events in self.events:
            sessions = max(1, round(events / EVENTS_PER_SESSION))
            raw = self.work / f"events-{events}.parquet"
            say(f"generating ~{events:,} events")
            started = time.perf_counter()
            self.run(
                ["purchase-predict-generate", "--out", str(raw), "--sessions", str(sessions)],
                stderr=subprocess.DEVNULL,
            )
            generate_s = time.perf_counter() - started
            conf = self.work / f"conf-{events}"
            shutil.rmtree(conf, ignore_errors=True)
            shutil.copytree(TRAINING_DIR / "conf", conf)
            catalog_path = conf / "base" / "catalog_data_processing.yml"
            catalog = yaml.safe_load(catalog_path.read_text())
            catalog["raw_events"]["filepath"] = str(raw)
            catalog["primary@ibis"]["filepath"] = str(self.work / f"primary-{events}.parquet")
            catalog["primary@pandas"]["filepath"] = str(self.work / f"primary-{events}.parquet")
            for entry in ("raw_events", "primary@ibis"):
                catalog[entry]["connection"]["temp_directory"] = str(self.work / "spill")
            catalog_path.write_text(yaml.safe_dump(catalog))
            say(f"feature step on {raw.name}")
            started = time.perf_counter()
            proc = subprocess.Popen(
                [
                    "kedro",
                    "run",
                    "--pipeline",
                    "data_processing",
                    "--conf-source",
                    str(conf),
                ],
                cwd=TRAINING_DIR,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=(self.work / f"feature-{events}.log").open("wb"),
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - started
            proc.returncode = os.waitstatus_to_exitcode(status)
            if proc.returncode != 0:
                raise RuntimeError(f"feature step failed: see {self.work}/feature-{events}.log")
            import pyarrow.parquet as pq  # noqa: PLC0415

            rows.append(
                {
                    "events": pq.ParquetFile(raw).metadata.num_rows,
                    "raw_mb": raw.stat().st_size / 1e6,
                    "primary_rows": pq.ParquetFile(
                        self.work / f"primary-{events}.parquet"
                    ).metadata.num_rows,
                    "generate_s": generate_s,
                    "wall_s": wall,
                    "peak_rss_mb": usage.ru_maxrss / 1024,
                }
            )
            say(f"feature step: {wall:.1f} s, peak {usage.ru_maxrss / 1024:.0f} MB")
            raw.unlink()
        self.results["feature"] = rows

    def pipeline(self) -> None:
        """Local pipeline in a scratch copy: cold run, one-line API change, warm run."""
        copy = self.work / "repo"
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for name in filter(None, listed.split("\0")):
            if (ROOT / name).is_file():
                (copy / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, copy / name)
        for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
            subprocess.run(["git", *args], cwd=copy, check=True, capture_output=True)
        env = {k: v for k, v in self.env.items() if k != "MLFLOW_TRACKING_URI"}
        runs = {}
        try:
            for label in ("cold", "warm"):
                if label == "warm":
                    main = copy / "purchase_predict_api" / "app" / "main.py"
                    main.write_text(main.read_text() + "# one-line change (benchmark)\n")
                say(f"local pipeline, {label} run")
                started = time.perf_counter()
                done = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "purchase_rig.local_pipeline",
                        "--state",
                        str(self.work / "cloud"),
                    ],
                    cwd=copy,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
                total = time.perf_counter() - started
                (self.work / f"pipeline-{label}.log").write_text(done.stdout + done.stderr)
                if done.returncode != 0:
                    raise RuntimeError(
                        f"local pipeline failed: see {self.work}/pipeline-{label}.log"
                    )
                stages = next(
                    line.removeprefix("stages: ")
                    for line in done.stdout.splitlines()
                    if line.startswith("stages: ")
                )
                runs[label] = {"total_s": total, "stages": stages}
        finally:  # the stand-ins it started, whatever happened
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "purchase_rig.local_cloud",
                    "--state",
                    str(self.work / "cloud"),
                    "down",
                ],
                check=False,
                capture_output=True,
            )
        self.results["pipeline"] = runs


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            yield entry


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    found = {"python": platform.python_version()}
    for name in (
        "fastapi",
        "uvicorn",
        "lightgbm",
        "scikit-learn",
        "mlflow",
        "kedro",
        "ibis-framework",
        "duckdb",
    ):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        mem_kb = 0
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {mem_kb / 1024 / 1024:.0f} GiB RAM, {platform.platform()}"
    )


# ---- report ------------------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _target(ok: bool) -> str:
    return "met" if ok else "**missed**"


def _serving_section(bench: Bench, serving: list[dict[str, Any]]) -> list[str]:
    out = [
        "## Serving: our API vs `mlflow models serve`",
        "",
        f"Same registered model; each server pinned to CPU {SERVER_CPU}, one worker; the load "
        f"generator (keep-alive asyncio clients, `scripts/benchmark.py`) pinned to CPU "
        f"{LOAD_CPU}; single-session requests for {bench.duration:.0f} s after a 2 s warm-up.",
        "",
        "| server | connections | req/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    out += [
        f"| {row['server']} | {row['connections']} | {row['rps']:.0f} | "
        f"{_ms(row['p50_ms'])} | {_ms(row['p99_ms'])} | {row['errors']} |"
        for row in serving
    ]
    out.append("")
    for connections in bench.connections:
        at = [x for x in serving if x["connections"] == connections]
        ours = next(x for x in at if "api" in x["server"])
        theirs = next(x for x in at if "mlflow" in x["server"])
        ratio = ours["rps"] / theirs["rps"] if theirs["rps"] else float("inf")
        line = f"- {connections} connections: ours/MLflow throughput **{ratio:.1f}x**"
        if connections == 16:
            line += (
                f" (target >= 6x: {_target(ratio >= 6)}); our p99 {_ms(ours['p99_ms'])} ms"
                f" (target <= 10 ms: {_target((ours['p99_ms'] or 1e9) <= 10)})"
            )
        out.append(line)
    return [*out, ""]


def _cold_section(results: dict[str, Any]) -> list[str]:
    out = [
        "## Cold start: process start to first 200 on the prediction endpoint",
        "",
        "| what | median s | runs (s) |",
        "|---|---:|---|",
    ]
    rows = [(row["what"], row["median_s"], row["runs"]) for row in results["cold"]]
    image = results.get("image") or {}
    if "cold_start_median_s" in image:
        rows.append(
            (
                "ours, image (`docker run`, baked model)",
                image["cold_start_median_s"],
                image["cold_start_runs"],
            )
        )
    out += [
        f"| {what} | {median:.2f} | {', '.join(f'{t:.2f}' for t in runs)} |"
        for what, median, runs in rows
    ]
    ours = next(row for row in results["cold"] if row["what"] == "ours, baked model")
    out += ["", f"Target <= 1.5 s for ours (baked): {_target(ours['median_s'] <= 1.5)}.", ""]
    if b := results.get("startup_breakdown"):
        out += [
            "Where our start-up goes (fresh interpreter, baked model): interpreter "
            f"{b['interpreter_s'] * 1000:.0f} ms, imports of `app.main` "
            f"{b['imports_s'] * 1000:.0f} ms, model load {b['model_load_s'] * 1000:.0f} ms; "
            "the rest of the cold start is uvicorn binding the port and the first request.",
            "",
        ]
        if "fetch_import_mlflow_s" in b:
            out += [
                "Fetch mode adds importing the MLflow client "
                f"({b['fetch_import_mlflow_s'] * 1000:.0f} ms), the download, and scikit-learn "
                f"with skops to read the MLflow format ({b['fetch_import_sklearn_s'] * 1000:.0f} "
                "ms of imports): the compiled form that spares the image both is written at "
                "image build. It is the local-run mode; deployed revisions serve the baked model.",
                "",
            ]
    return out


def _batch_section(batch: dict[str, Any]) -> list[str]:
    lines = [
        "## Batch: 10,000 sessions in one request",
        "",
        f"A {batch['body_mb']:.1f} MB body; {batch.get('requests', '?')} requests after "
        f"{batch.get('warm_up_requests', 0)} unmeasured ones (the first grow the heap and start "
        "LightGBM's threads). Server time is the API's request log.",
        "",
        "| server | server time median | best | slowest | round trip median |",
        "|---|---:|---:|---:|---:|",
    ]
    runs = batch.get("runs") or {"all cores": batch}
    for label, run in runs.items():
        lines.append(
            f"| {label} | {run['server_ms_median']:.0f} ms | {run['server_ms_min']:.0f} ms | "
            f"{run.get('server_ms_max', float('nan')):.0f} ms | "
            f"{run['round_trip_ms_median']:.0f} ms |"
        )
    lines += [
        "",
        f"Target <= 60 ms (all cores): {_target(batch['server_ms_median'] <= 60)}.",
        "",
        "Where it goes (best of 5, in one process, all cores): "
        + ", ".join(f"{k} {v:.0f} ms" for k, v in batch.get("breakdown_ms", {}).items())
        + ".",
        "",
    ]
    return lines


def _image_section(image: dict[str, Any]) -> list[str]:
    if "skipped" in image:
        return ["## Image", "", f"Not measured: {image['skipped']}.", ""]
    return [
        "## Image",
        "",
        f"{image['size_mb']:.0f} MB (base `{image['base_image']}`: "
        f"{image['base_size_mb']:.0f} MB), built in {image['build_s']:.0f} s. "
        f"Target <= 400 MB: {_target(image['size_mb'] <= 400)}.",
        "",
        "The base is this machine's stand-in for `python:3.11-slim` (Debian bookworm's own "
        "Python built by `debootstrap`, as `scripts/local_cloud.py` does, since no public image "
        "can be pulled here); on the official base the total changes by the difference between "
        "the two bases.",
        "",
    ]


def _feature_section(feature: list[dict[str, Any]]) -> list[str]:
    out = [
        "## Feature step: raw events to primary table (Ibis on DuckDB)",
        "",
        "`kedro run --pipeline data_processing` on generated Parquet; peak memory is the "
        "maximum resident set of the process.",
        "",
        "| events | raw MB | primary rows | wall s | peak MB | (generation s) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    out += [
        f"| {row['events']:,} | {row['raw_mb']:.0f} | {row['primary_rows']:,} | "
        f"{row['wall_s']:.1f} | {row['peak_rss_mb']:.0f} | {row['generate_s']:.1f} |"
        for row in feature
    ]
    largest = max(feature, key=lambda x: x["events"])
    if largest["events"] >= 9_000_000:
        ok = largest["wall_s"] <= 30 and largest["peak_rss_mb"] <= 4096
        out += ["", f"Target 10 M in <= 30 s with <= 4 GB: {_target(ok)}."]
    return [*out, ""]


def _pipeline_section(pipeline: dict[str, Any]) -> list[str]:
    out = [
        "## Local pipeline (`scripts/local_pipeline.py`, what `nox -s pipeline` runs)",
        "",
        "In a scratch copy of the repository: a cold run, then a one-line change in the "
        "API's code and a warm run.",
        "",
        "| run | total s | stages |",
        "|---|---:|---|",
    ]
    out += [
        f"| {label} | {row['total_s']:.0f} | {row['stages']} |" for label, row in pipeline.items()
    ]
    return [*out, ""]


# Where the hand-measured part of docs/benchmarks.md starts: a regenerated report keeps it.
HAND_MEASURED = "<!-- measured by hand below: scripts/benchmark.py keeps this part -->"


def kept_by_hand(report_path: Path) -> str:
    """The hand-measured tail of an existing report (from HAND_MEASURED on), or ""."""
    text = report_path.read_text(encoding="utf-8") if report_path.exists() else ""
    start = text.find(HAND_MEASURED)
    return "\n" + text[start:] if start >= 0 else ""


def report(bench: Bench, command: str) -> str:
    """docs/benchmarks.md for the sections that ran."""
    r = bench.results
    out = [
        "# Benchmarks",
        "",
        "Generated by `scripts/benchmark.py` (do not edit by hand). Reproduce with:",
        "",
        f"    {command}",
        "",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {_machine()}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
        "",
        "The machine is a shared virtual machine: the same code measures tens of percent apart "
        "from one run to the next (serving throughput and p99 most). Compare figures within "
        "one run (ours against MLflow's) rather than across runs.",
        "",
    ]
    if "serving" in r:
        out += _serving_section(bench, r["serving"])
    if "cold" in r:
        out += _cold_section(r)
    if "batch" in r:
        out += _batch_section(r["batch"])
    if "image" in r:
        out += _image_section(r["image"])
    if "feature" in r:
        out += _feature_section(r["feature"])
    if "pipeline" in r:
        out += _pipeline_section(r["pipeline"])
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_load":  # the load generator's child process
        url, body_file, connections, duration, warmup = argv[1:6]
        result = asyncio.run(
            _load(
                url, Path(body_file).read_bytes(), int(connections), float(duration), float(warmup)
            )
        )
        print(json.dumps(result))
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Run inside `nox -s bench` (it installs the training project and the API).",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per point")
    parser.add_argument(
        "--connections", default="16,64", help="connection counts (default: %(default)s)"
    )
    parser.add_argument(
        "--events",
        default="1000000,10000000",
        help="feature-step sizes in events (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="report file"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    work = Path(tempfile.mkdtemp(prefix="purchase-predict-bench-"))
    bench = Bench(
        work=work,
        duration=args.duration,
        connections=[int(c) for c in args.connections.split(",")],
        events=[int(e) for e in args.events.split(",")],
    )
    command = "nox -s bench" + (f" -- {' '.join(argv)}" if argv else "")
    say(f"scratch directory {work}")
    failures: dict[str, str] = {}
    try:
        if {"serving", "cold", "batch", "image"} & set(sections):
            bench.model()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as err:
        print(f"benchmark: no model to serve: {err}; logs in {work}", file=sys.stderr)
        return 1
    for section in SECTIONS:
        if section not in sections:
            continue
        say(f"== {section}")
        try:
            getattr(bench, section)()
        except (RuntimeError, subprocess.CalledProcessError, OSError, ValueError) as err:
            # One section failing must not lose the others' figures.
            failures[section] = f"{type(err).__name__}: {err}"
            say(f"{section} failed: {failures[section]} (logs in {work})")
    text = report(bench, command)
    if failures:
        text += "\n## Not measured in this run\n\n" + "".join(
            f"- {section}: {reason}\n" for section, reason in failures.items()
        )
    args.out.write_text(text + "\n" + kept_by_hand(args.out))
    (work / "results.json").write_text(json.dumps(bench.results, indent=2))
    print(text)
    say(f"wrote {args.out}")
    if not args.keep and not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
