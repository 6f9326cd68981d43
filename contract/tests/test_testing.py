"""The suites' shared test helpers: MLflow isolation, waiting for a server, stopping it."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from purchase_contract.testing import (
    ServerNotReady,
    isolated_mlflow,
    reset_mlflow_state,
    stop_process_group,
    wait_until_ok,
)


class FakeMlflow(types.ModuleType):
    """Stands in for an imported ``mlflow``: a stack of active runs and the URIs last set."""

    def __init__(self, active_runs: int) -> None:
        super().__init__("mlflow")
        self.active_runs = active_runs
        self.uris = {"tracking": "sqlite:///left.db", "registry": "sqlite:///left.db"}

    def active_run(self) -> object | None:
        return object() if self.active_runs else None

    def end_run(self) -> None:
        self.active_runs -= 1

    def set_tracking_uri(self, uri: str | None) -> None:
        self.uris["tracking"] = uri

    def set_registry_uri(self, uri: str | None) -> None:
        self.uris["registry"] = uri


@pytest.fixture
def fake_mlflow(monkeypatch: pytest.MonkeyPatch) -> FakeMlflow:
    """A fake ``mlflow`` with two nested runs and an experiment set, in sys.modules."""
    fake = FakeMlflow(active_runs=2)
    monkeypatch.setitem(sys.modules, "mlflow", fake)
    fluent = types.SimpleNamespace(_active_experiment_id="7")
    monkeypatch.setitem(sys.modules, "mlflow.tracking.fluent", fluent)
    return fake


def test_reset_ends_runs_forgets_uris_experiment_and_variables(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///left.db")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "7")
    monkeypatch.setenv("NOT_MLFLOW", "kept")

    reset_mlflow_state()

    assert fake_mlflow.active_runs == 0
    assert fake_mlflow.uris == {"tracking": None, "registry": None}
    assert sys.modules["mlflow.tracking.fluent"]._active_experiment_id is None
    assert [name for name in os.environ if name.startswith("MLFLOW_")] == []
    assert os.environ["NOT_MLFLOW"] == "kept"


def test_reset_without_mlflow_imported_only_drops_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")

    reset_mlflow_state()

    assert "mlflow" not in sys.modules
    assert "MLFLOW_RUN_ID" not in os.environ


def test_isolation_hides_outside_variables_then_brings_them_back(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://outside:5000")
    monkeypatch.setenv("PORT", "8080")
    with pytest.MonkeyPatch.context() as patch:
        with isolated_mlflow(patch, also=("PORT",)):
            assert "MLFLOW_TRACKING_URI" not in os.environ
            assert "PORT" not in os.environ
            assert fake_mlflow.active_runs == 0
            # What a test leaves behind.
            os.environ["MLFLOW_EXPERIMENT_ID"] = "12"
            fake_mlflow.active_runs = 1
            fake_mlflow.uris["tracking"] = "sqlite:///test.db"
        assert "MLFLOW_EXPERIMENT_ID" not in os.environ
        assert fake_mlflow.active_runs == 0
        assert fake_mlflow.uris["tracking"] is None
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://outside:5000"
    assert os.environ["PORT"] == "8080"


def test_reset_of_a_real_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import fluent  # noqa: PLC0415

    # Not in the working directory: MLflow's default URI is ./mlflow.db there.
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    with isolated_mlflow(monkeypatch):
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        experiment_id = mlflow.set_experiment("contract-testing").experiment_id
        outer = mlflow.start_run()
        mlflow.start_run(nested=True)
        assert os.environ["MLFLOW_TRACKING_URI"] == uri
        assert os.environ["MLFLOW_EXPERIMENT_ID"] == experiment_id

        reset_mlflow_state()

        assert mlflow.active_run() is None
        assert mlflow.MlflowClient(uri).get_run(outer.info.run_id).info.status == "FINISHED"
        assert mlflow.get_tracking_uri() != uri
        assert mlflow.get_registry_uri() != uri
        assert fluent._active_experiment_id is None
        assert [name for name in os.environ if name.startswith("MLFLOW_")] == []


def test_importing_it_imports_neither_mlflow_nor_pytest() -> None:
    code = (
        "import sys, purchase_contract.testing\n"
        "print('mlflow' in sys.modules, 'pytest' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert result.stdout.split() == ["False", "False"]


@pytest.fixture
def answering_after() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server answering 503 twice, then 200: its URL and the statuses it gave."""
    statuses: list[int] = []
    pending = {"unavailable": 2}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = 503 if pending["unavailable"] > 0 else 200
            pending["unavailable"] -= 1
            statuses.append(status)
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/ready", statuses
    finally:
        server.shutdown()
        server.server_close()


def test_wait_until_ok_polls_until_200(answering_after: tuple[str, list[int]]) -> None:
    url, statuses = answering_after

    wait_until_ok(url, 10, poll_s=0.01)

    assert statuses == [503, 503, 200]


def test_wait_until_ok_gives_up_after_its_timeout() -> None:
    closed = f"http://127.0.0.1:{_closed_port()}/health"

    with pytest.raises(ServerNotReady, match=r"did not answer 200 within 0 s"):
        wait_until_ok(closed, 0.2, poll_s=0.01)


def test_wait_until_ok_stops_when_the_server_exits() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(timeout=60)

    with pytest.raises(ServerNotReady, match="exited with 3"):
        wait_until_ok(f"http://127.0.0.1:{_closed_port()}/health", 60, process=process)


def test_stop_process_group_terminates_and_reaps() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True
    )

    stop_process_group(process)

    assert process.returncode == -signal.SIGTERM
    stop_process_group(process)  # an ended process: nothing to do


def _closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
