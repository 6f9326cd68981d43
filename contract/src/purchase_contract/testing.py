"""What every test suite shares: MLflow isolation and a real ``mlflow server``.

Here because the contract is the one package every suite installs (the API suite has neither
tests/ nor the rig). Standard library only, and nothing heavy at import: MLflow is reset only
once a test has imported it, and pytest is never imported (conftest fixtures wrap these).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

MLFLOW_PREFIX = "MLFLOW_"
SERVER_START_TIMEOUT_S = 120.0


class EnvironmentPatch(Protocol):
    """What isolation needs of a ``pytest.MonkeyPatch``: deletions it undoes later."""

    def delenv(self, name: str, raising: bool = True) -> None: ...


class ServerNotReady(RuntimeError):
    """A server a test started exited, or did not answer 200, before it was ready."""


def reset_mlflow_state() -> None:
    """End active runs and forget the process-wide tracking URI, registry URI and experiment.

    Does nothing to MLflow when it was never imported, so suites without MLflow pay nothing.
    """
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        # No public call unsets the experiment chosen by mlflow.set_experiment().
        fluent = sys.modules.get("mlflow.tracking.fluent")
        if fluent is not None and hasattr(fluent, "_active_experiment_id"):
            fluent._active_experiment_id = None
    # set_tracking_uri/set_experiment export MLFLOW_* variables for subprocesses: drop them.
    for name in [name for name in os.environ if name.startswith(MLFLOW_PREFIX)]:
        del os.environ[name]


@contextmanager
def isolated_mlflow(patch: EnvironmentPatch, also: Collection[str] = ()) -> Iterator[None]:
    """Inside: no MLFLOW_* variable (nor one named in ``also``) from outside, and MLflow reset.

    The variables are deleted through ``patch``, whose undo brings them back; MLflow is reset
    again on the way out, before that undo, so nothing a test set is left behind.
    """
    for name in [n for n in os.environ if n.startswith(MLFLOW_PREFIX) or n in also]:
        patch.delenv(name)
    reset_mlflow_state()
    try:
        yield
    finally:
        reset_mlflow_state()


def wait_until_ok(
    url: str,
    timeout_s: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    poll_s: float = 0.5,
    request_timeout_s: float = 2.0,
) -> None:
    """Poll ``url`` until it answers 200; ServerNotReady if ``process`` exits first or time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise ServerNotReady(f"exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=request_timeout_s) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # URLError (refused, or not 200 yet), or a reset or timed-out connection
        if time.monotonic() > deadline:
            raise ServerNotReady(f"{url} did not answer 200 within {timeout_s:.0f} s")
        time.sleep(poll_s)


@contextmanager
def running_mlflow_server(
    home: Path, port: int, *, timeout_s: float = SERVER_START_TIMEOUT_S
) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1:``port`` (SQLite store, proxied artifacts, its log,
    all under ``home``), healthy; its URI. Stopped, worker processes included, on the way out.

    ServerNotReady, with the end of the server's log, when it does not become healthy.
    """
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which(
        "mlflow"
    )
    if mlflow_cli is None:
        raise ServerNotReady("the mlflow CLI is neither next to the test interpreter nor on PATH")
    uri = f"http://127.0.0.1:{port}"
    command = [
        mlflow_cli,
        "server",
        "--backend-store-uri",
        f"sqlite:///{home / 'mlflow.db'}",
        "--artifacts-destination",
        str(home / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    # The server must not inherit a test's tracking settings.
    env = {name: value for name, value in os.environ.items() if not name.startswith(MLFLOW_PREFIX)}
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        try:
            wait_until_ok(f"{uri}/health", timeout_s, process=process)
        except ServerNotReady as err:
            raise ServerNotReady(f"mlflow server {err}: {_tail(log_path)}") from None
        yield uri
    finally:
        stop_process_group(process)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Terminate the process's group (a server's workers included), kill it if it lingers, reap."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def _tail(log_path: Path, lines: int = 15) -> str:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    return " | ".join(text.strip().splitlines()[-lines:]) or "(no output)"
