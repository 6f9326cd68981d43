"""Fetch mode, a real ``python -m app``: SIGTERM and SIGINT end a start still fetching from an
MLflow server that never answers at once; a fetch that succeeds serves, and stops as usual."""

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

from app.core.startup import exit_status
from app.model.loading import FETCH_DIR_PREFIX

START_TIMEOUT_S = 120.0
# A process that answers the signal exits in milliseconds; one that waits for MLflow's client
# would take its request timeout (set far longer below).
STOP_BOUND_S = 3.0


@pytest.fixture
def silent_mlflow() -> Iterator[str]:
    """A URL whose server accepts connections (the kernel's backlog) and never replies."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _start(base: dict[str, str], tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    """``python -m app`` in fetch mode, in ``base`` (app_environment) plus ``env``; its
    temporary files stay under ``tmp_path``."""
    environment = {
        **base,
        "PORT": str(port),
        "TMPDIR": str(tmp_path),
        **env,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "app"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _lines_until(process: subprocess.Popen[str], prefix: str) -> list[dict]:
    """The JSON log lines up to the first whose message starts with ``prefix``."""
    assert process.stdout is not None
    lines = []
    for raw in process.stdout:
        lines.append(json.loads(raw))
        if lines[-1]["message"].startswith(prefix):
            return lines
    pytest.fail(f"exited {process.wait()} before logging {prefix!r}: {lines}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_during_the_fetch_ends_the_start_at_once(
    sig: signal.Signals, silent_mlflow: str, free_port, app_environment, tmp_path: Path
) -> None:
    uri = "models:/purchase_predict@staging"
    process = _start(
        app_environment(),
        tmp_path,
        free_port(),
        MODEL_URI=uri,
        MLFLOW_TRACKING_URI=silent_mlflow,
        MLFLOW_HTTP_REQUEST_TIMEOUT="60",
    )
    try:
        _lines_until(process, "fetching ")
        sent = time.monotonic()
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()

    assert took < STOP_BOUND_S
    assert process.returncode == exit_status(sig) == 128 + sig
    [last] = [json.loads(line) for line in stdout.splitlines()]
    assert last["severity"] == "WARNING"
    assert last["message"] == (
        f"start stopped while fetching {uri} from {silent_mlflow}: {sig.name} received"
    )
    assert (last["signal"], last["exit_status"]) == (sig.name, 128 + sig)
    assert stderr == ""  # no traceback
    # The abandoned fetch's directory is gone too.
    assert not list(tmp_path.glob(f"{FETCH_DIR_PREFIX}*")), list(tmp_path.iterdir())


def test_a_fetched_model_serves_and_sigterm_then_stops_it_as_usual(
    registered_model, free_port, app_environment, tmp_path: Path
) -> None:
    # The fetch ran in a worker thread: uvicorn's own signal handlers are back once it is done.
    port = free_port()
    process = _start(
        app_environment(),
        tmp_path,
        port,
        MODEL_URI=f"models:/{registered_model.name}@{registered_model.alias}",
        MLFLOW_TRACKING_URI=registered_model.tracking_uri,
    )
    try:
        _lines_until(process, "Uvicorn running on")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10) as ready:
            assert json.loads(ready.read())["model_version"] == registered_model.version
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()

    messages = [json.loads(line)["message"] for line in stdout.splitlines()]
    assert "Application shutdown complete." in messages
    assert not [m for m in messages if m.startswith("start stopped")]
