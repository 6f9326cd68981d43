"""A real uvicorn (``python -m app``): requests not received in time, requests cut by shutdown."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.models import SESSION_EXAMPLE

REQUEST_TIMEOUT_S = 1.0
START_TIMEOUT_S = 120.0


def _serve(
    base: dict[str, str], baked_model_dir: Path, port: int, log: Path, **env: str
) -> subprocess.Popen[bytes]:
    """``python -m app`` on ``port`` in ``base`` (app_environment) plus ``env``, once /ready
    answers."""
    environment = {
        **base,
        "PORT": str(port),
        "MODEL_PATH": str(baked_model_dir),
        **env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "app"], env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    pytest.fail(f"server not ready: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def port(
    baked_model_dir: Path, free_port, app_environment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """A server whose requests must arrive whole within REQUEST_TIMEOUT_S."""
    chosen = free_port()
    log = tmp_path_factory.mktemp("limits") / "stdout.log"
    process = _serve(
        app_environment(), baked_model_dir, chosen, log, REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S)
    )
    yield chosen
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)


def _answer_of(port: int, sent: bytes) -> tuple[bytes, float]:
    """What the server writes back before it closes a connection on which ``sent`` was sent,
    and the seconds it took to close it."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        started = time.monotonic()
        sock.sendall(sent)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received, time.monotonic() - started


BODY = json.dumps(SESSION_EXAMPLE).encode()


def _one_response(sock: socket.socket) -> bytes:
    """One whole response read from a keep-alive connection (headers, then content-length)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += sock.recv(65536)
    head, body = received.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(body) < length:
        body += sock.recv(65536)
    return received


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: appl",
        b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY[:20]),
    ],
    ids=["nothing", "unfinished headers", "short body"],
)
def test_a_request_not_received_whole_in_time_is_408_and_closed(port: int, sent: bytes) -> None:
    received, seconds = _answer_of(port, sent)

    assert REQUEST_TIMEOUT_S <= seconds < REQUEST_TIMEOUT_S + 5
    assert received.startswith(b"HTTP/1.1 408 ")
    assert json.loads(received.split(b"\r\n\r\n", 1)[1])["detail"].startswith("request not")


def test_a_keep_alive_connection_gets_a_deadline_per_request(port: int) -> None:
    request = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
    )
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        for _ in range(2):
            sock.sendall(request)
            assert _one_response(sock).startswith(b"HTTP/1.1 200 ")
            time.sleep(REQUEST_TIMEOUT_S * 1.5)  # idle between requests: not a slow request
        sock.sendall(request[:30])
        started = time.monotonic()
        assert sock.recv(65536).startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < REQUEST_TIMEOUT_S + 5


def test_a_request_cut_by_shutdown_is_503_json(
    baked_model_dir: Path, free_port, app_environment, tmp_path: Path
) -> None:
    chosen = free_port()
    process = _serve(
        app_environment(),
        baked_model_dir,
        chosen,
        tmp_path / "stdout.log",
        INJECT_FAULTS="latency-ms=20000",
        GRACEFUL_SHUTDOWN_S="1",
    )
    try:
        with socket.create_connection(("127.0.0.1", chosen), timeout=30) as sock:
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(BODY), BODY)
            )
            time.sleep(0.5)  # the request is waiting on its injected latency
            process.send_signal(signal.SIGTERM)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        # uvicorn ends by re-raising the SIGTERM it handled.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
    finally:
        process.kill()
    head, body = received.split(b"\r\n\r\n", 1)

    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"detail": "the service is shutting down: retry"}
