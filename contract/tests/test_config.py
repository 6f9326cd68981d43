"""Which pyproject is read, and what the embedded MLflow store defaults to."""

from __future__ import annotations

from pathlib import Path

import pytest

from purchase_contract import config

TABLE = """
[tool.purchase-predict]
model_name = "m"
experiment_name = "e"
image_name = "i"
fallback_environment = "staging"
gate_f1_tolerance = 0.01
{extra}
[tool.purchase-predict.environments.staging]
branch = "staging"
alias = "staging"
service = "svc"
region = "europe-west1"
artifact_repository = "repo"
min_instances = 0
max_instances = 1
memory = "1Gi"
cpu = "1"
concurrency = 8
"""


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.CONFIG_ENV_VAR, raising=False)
    monkeypatch.delenv(config.TRACKING_URI_ENV_VAR, raising=False)


def _project(root: Path, extra: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "pyproject.toml"
    path.write_text(TABLE.format(extra=extra))
    return path


def test_the_nearest_pyproject_with_the_table_wins(tmp_path: Path, monkeypatch) -> None:
    root = _project(tmp_path / "repo")
    inner = tmp_path / "repo" / "purchase_predict"
    inner.mkdir()
    (inner / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # no table: skipped
    monkeypatch.chdir(inner)
    assert config.config_path() == root


def test_the_environment_variable_overrides_the_search(tmp_path: Path, monkeypatch) -> None:
    chosen = _project(tmp_path / "elsewhere")
    monkeypatch.setenv(config.CONFIG_ENV_VAR, str(chosen))
    assert config.load_config().path == chosen


def test_the_embedded_store_is_relative_to_the_pyproject(tmp_path: Path, monkeypatch) -> None:
    path = _project(tmp_path / "repo")
    loaded = config.load_config(path)
    assert loaded.local_mlflow_store == tmp_path / "repo/purchase_predict/mlruns/mlflow.db"
    assert loaded.tracking_uri() == f"sqlite:///{loaded.local_mlflow_store}"
    monkeypatch.setenv(config.TRACKING_URI_ENV_VAR, "http://127.0.0.1:5000")
    assert loaded.tracking_uri() == "http://127.0.0.1:5000"


def test_the_store_path_can_be_configured(tmp_path: Path) -> None:
    path = _project(tmp_path, extra='local_mlflow_store = "state/mlflow.db"')
    assert config.load_config(path).local_mlflow_store == tmp_path / "state" / "mlflow.db"


def test_settings_by_name_for_the_kedro_resolver(tmp_path: Path) -> None:
    loaded = config.load_config(_project(tmp_path))
    assert loaded.setting("model_name") == "m"
    with pytest.raises(config.ConfigError, match="no key 'environments'"):
        loaded.setting("environments")


def test_no_pyproject_anywhere_says_what_to_set(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config, "__file__", str(tmp_path / "config.py"))
    with pytest.raises(config.ConfigError, match="set PURCHASE_PREDICT_CONFIG"):
        config.config_path()
