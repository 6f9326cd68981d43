"""Repository-level fixtures: MLflow isolation, a throw-away SQLite store, a real MLflow server,
the project's settings and the act executable (workflow and end-to-end suites).

The code under test comes from its installed packages (contract, delivery, rig, the Kedro
project): nothing is imported from a path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS_DIR = REPO_ROOT / "scripts"

from purchase_contract.testing import isolated_mlflow, running_mlflow_server  # noqa: E402
from purchase_rig.act import act_executable, project_settings  # noqa: E402
from purchase_rig.cloud_run_standin import free_port  # noqa: E402


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
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), free_port()) as uri:
        yield uri
