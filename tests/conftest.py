"""Repository-level fixtures: MLflow isolation, a throw-away SQLite store, a real MLflow server,
the project's settings and the act executable (workflow and end-to-end suites).

The code under test comes from its installed packages (contract, delivery, rig, the Kedro
project): nothing is imported from a path.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "scripts"

from purchase_contract.testing import isolated_mlflow  # noqa: E402
from purchase_rig.act import act_executable, project_settings  # noqa: E402
from purchase_rig.cloud_run_standin import free_port  # noqa: E402

SERVER_START_TIMEOUT_S = 120.0


@pytest.fixture(scope="session")
def project() -> dict[str, Any]:
    """``[tool.purchase-predict]`` of the root pyproject: the names tests expect."""
    return project_settings()


@pytest.fixture(scope="session")
def act_binary() -> str:
    """The act executable."""
    try:
        return act_executable()
    except FileNotFoundError as err:
        pytest.fail(str(err))


@pytest.fixture(autouse=True)
def _isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts without MLFLOW_* variables or an active run, and leaves none behind."""
    with isolated_mlflow(monkeypatch):
        yield


@pytest.fixture
def mlflow_sqlite_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh SQLite tracking + registry store in tmp_path, set as MLFLOW_TRACKING_URI.

    The store's default artifact root is ``tmp_path/artifacts`` (the Default experiment's
    location); experiments you create should also put their artifact_location under tmp_path.
    """
    uri = _create_sqlite_store(tmp_path / "mlflow.db", tmp_path / "artifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session")
def create_sqlite_store() -> Callable[[Path, Path], str]:
    """Factory for stores outliving one test: ``(db_path, artifact_root) -> tracking URI``."""
    return _create_sqlite_store


def _create_sqlite_store(db_path: Path, artifact_root: Path) -> str:
    """Create the tables and the Default experiment (artifacts under artifact_root); the URI."""
    # Imported here so suites that never use MLflow do not need it installed.
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: PLC0415

    uri = f"sqlite:///{db_path}"
    artifact_root.mkdir(parents=True, exist_ok=True)
    # Without an explicit root the Default experiment would write to ./mlruns of the cwd.
    SqlAlchemyStore(uri, artifact_root.as_uri()).engine.dispose()
    return uri


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite store, proxied artifacts); its URI.

    Shared by the whole session: tests isolate themselves with their own experiment and
    registered-model names. Point MLflow at it with ``monkeypatch.setenv("MLFLOW_TRACKING_URI",
    mlflow_server)``.
    """
    mlflow_cli = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or shutil.which(
        "mlflow"
    )
    if mlflow_cli is None:
        pytest.fail("the mlflow_server fixture needs the mlflow CLI next to the test interpreter")
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
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
    env = {name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_")}
    log_path = home / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_healthy(uri, process, log_path)
        yield uri
    finally:
        _stop(process)


def _wait_healthy(uri: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"mlflow server exited with {process.returncode}: {_tail(log_path)}", pytrace=False
            )
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    _stop(process)
    pytest.fail(
        f"mlflow server not healthy after {SERVER_START_TIMEOUT_S:.0f} s: {_tail(log_path)}",
        pytrace=False,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server's process group (uvicorn workers included), then reap it."""
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
