"""A real uvicorn process (``python -m app``) started with PORT set, over HTTP."""

from __future__ import annotations

import http.client
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.models import MAX_REPORTED_ERRORS, MAX_SESSIONS, SESSION_EXAMPLE

START_TIMEOUT_S = 120.0
SECRET = "s3cret-token-value"
# A concurrent /health answers within this while a large bad request is processed (issue 16:
# 50 ms); more only if an idle /health of the same run is already slow (a loaded machine).
HEALTH_BOUND_MS = 50.0
HEALTH_BOUND_IDLE_FACTOR = 20


@dataclass
class Server:
    """A running server: its base URL, the seconds it took to be ready, its log file."""

    url: str
    ready_after_s: float
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_lines(self) -> list[dict]:
        """The JSON log lines written so far (every line must parse)."""
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]


def _request(url: str, body: object | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.fixture(scope="module")
def server(
    baked_model_dir: Path, free_port, app_environment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """``python -m app`` serving the baked model on a free port chosen through $PORT."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("server") / "stdout.log"
    env = {
        **app_environment(),
        "PORT": str(port),
        "MODEL_PATH": str(baked_model_dir),
        "GIT_SHA": "feedc0de",
        "IMAGE_TAG": "local-test",
    }
    started = time.monotonic()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"server exited {process.returncode}: {log_path.read_text()[-2000:]}")
            if time.monotonic() - started > START_TIMEOUT_S:
                pytest.fail(f"server not ready after {START_TIMEOUT_S} s: {log_path.read_text()}")
            try:
                if _request(f"{url}/ready")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.05)
        yield Server(url, time.monotonic() - started, process, log_path)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_server_listens_on_port_and_predicts(server: Server, registered_model) -> None:
    status, body = _request(f"{server.url}/predict", [SESSION_EXAMPLE, SESSION_EXAMPLE])

    assert status == 200
    assert body["model_version"] == registered_model.version
    assert len(body["predictions"]) == 2
    assert 0 <= body["predictions"][0]["probability"] <= 1
    assert _request(f"{server.url}/version")[1]["git_sha"] == "feedc0de"


def test_one_json_log_line_per_request_without_secrets(server: Server) -> None:
    status, _ = _request(
        f"{server.url}/predict?token={SECRET}",
        [SESSION_EXAMPLE] * 3,
        headers={"Authorization": f"Bearer {SECRET}"},
    )
    assert status == 200
    time.sleep(0.2)  # the log line is written after the response

    lines = server.log_lines()
    [loaded] = [line for line in lines if line["logger"] == "app.main"]
    assert loaded["model_version"] == "1"
    requests = [line for line in lines if line["logger"] == "app.request"]
    [predict] = [r for r in requests if r["path"] == "/predict" and r.get("sessions") == 3]
    assert predict["method"] == "POST"
    assert predict["status"] == 200
    assert predict["severity"] == "INFO"
    assert predict["latency_ms"] > 0
    assert SECRET not in server.log_path.read_text()


def test_a_model_that_cannot_load_stops_the_process(
    baked_model_dir: Path, free_port, app_environment, tmp_path: Path
) -> None:
    env = {
        **app_environment(),
        "PORT": str(free_port()),
        "MODEL_PATH": str(tmp_path / "no-model-here"),
    }
    # A model that cannot load stops the process with an error instead of serving 503s.
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode != 0
    errors = [json.loads(line) for line in result.stdout.splitlines() if '"ERROR"' in line]
    assert any("model_meta.json is missing" in e["message"] for e in errors)


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


def _post_raw(url: str, body: bytes) -> tuple[int, dict, float]:
    """Status, JSON answer and seconds of one POST /predict."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    started = time.perf_counter()
    connection.request("POST", "/predict", body, {"content-type": "application/json"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    return response.status, answer, time.perf_counter() - started


def _timed_health_ms(url: str) -> float:
    started = time.perf_counter()
    assert _request(f"{url}/health")[0] == 200
    return (time.perf_counter() - started) * 1000


def _health_latencies_ms(url: str, stop: threading.Event, out: list[float]) -> None:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    while not stop.is_set():
        started = time.perf_counter()
        connection.request("GET", "/health")
        connection.getresponse().read()
        out.append((time.perf_counter() - started) * 1000)
        time.sleep(0.002)


@pytest.mark.parametrize("bad", ["empty sessions", "unknown keys"])
def test_a_large_bad_request_leaves_the_event_loop_free(server: Server, bad: str) -> None:
    session = {} if bad == "empty sessions" else {f"x{i:02d}": 1 for i in range(60)}
    body = json.dumps([session] * MAX_SESSIONS).encode()
    valid = json.dumps([SESSION_EXAMPLE] * MAX_SESSIONS).encode()
    assert _post_raw(server.url, valid)[0] == 200  # warm-up: heap and LightGBM's threads
    anchor_s = min(_post_raw(server.url, valid)[2] for _ in range(3))
    idle_ms = statistics.median(_timed_health_ms(server.url) for _ in range(20))
    peak_before = _peak_rss_kib(server.process.pid)
    during: list[float] = []
    stop = threading.Event()
    probe = threading.Thread(target=_health_latencies_ms, args=(server.url, stop, during))
    probe.start()
    time.sleep(0.05)
    already = len(during)
    status, answer, seconds = _post_raw(server.url, body)
    stop.set()
    probe.join()

    assert status == 422
    assert len(answer["detail"]) == MAX_REPORTED_ERRORS
    assert answer["error_count"] >= MAX_SESSIONS
    # Before the cap: 1.9 s and 16 s, 25x and 200x a valid batch; /health waited as long.
    assert seconds < 10 * anchor_s, (seconds, anchor_s)
    assert len(during) > already
    bound_ms = max(HEALTH_BOUND_MS, HEALTH_BOUND_IDLE_FACTOR * idle_ms)
    assert max(during[already:]) < bound_ms, (sorted(during[already:])[-5:], idle_ms)
    # Before: 1.1 GiB more for the unknown keys (a dict per error, a 68 MB answer).
    assert _peak_rss_kib(server.process.pid) - peak_before < 200 * 1024
