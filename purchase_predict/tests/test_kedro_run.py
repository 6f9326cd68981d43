"""``kedro run`` itself, in a copy of the project in tmp_path: its exit status and what it prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from purchase_predict.config_loader import ProjectConfigLoader
from purchase_predict.datagen import generate_events
from purchase_predict.settings import CONFIG_LOADER_ARGS

PROJECT_DIR = Path(__file__).resolve().parents[1]
ROOT_PYPROJECT = PROJECT_DIR.parent / "pyproject.toml"
KEDRO = Path(sys.executable).parent / "kedro"
DEPRECATION = "register_new_resolver() is deprecated"


def test_config_loader_loads_the_project_config_without_omegaconf_warnings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PURCHASE_PREDICT_CONFIG", str(ROOT_PYPROJECT))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loader = ProjectConfigLoader(
            conf_source=str(PROJECT_DIR / "conf"),
            runtime_params={"seed": 7},
            **CONFIG_LOADER_ARGS,
        )
        parameters, catalog = loader["parameters"], loader["catalog"]

    assert [str(w.message) for w in caught if "resolver" in str(w.message)] == []
    assert parameters["seed"] == 7  # runtime_params (`kedro run --params`) through the loader
    assert parameters["mlflow_logging"]["registered_model_name"]  # ${project:...} resolved
    assert "raw_events" in catalog


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The Kedro project's pyproject and conf/ in tmp_path (the package is installed)."""
    shutil.copy(PROJECT_DIR / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(PROJECT_DIR / ".telemetry", tmp_path / ".telemetry")  # opted out: no network
    shutil.copytree(PROJECT_DIR / "conf", tmp_path / "conf")
    (tmp_path / "src").mkdir()  # Kedro adds it to sys.path and wants it to exist
    return tmp_path


def _kedro_run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PURCHASE_PREDICT_CONFIG": str(ROOT_PYPROJECT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlruns' / 'mlflow.db'}",
        "COLUMNS": "200",  # rich wraps log lines at the terminal width
    }
    return subprocess.run(
        [str(KEDRO), "run", *args],
        check=False,
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_events_without_a_cart_stop_kedro_run_before_training(project_copy: Path) -> None:
    events = pq.read_table(generate_events(project_copy / "all.parquet", sessions=200).path)
    raw = project_copy / "data" / "01_raw" / "events.parquet"
    raw.parent.mkdir(parents=True)
    pq.write_table(events.filter(pc.not_equal(events["event_type"], "cart")), raw)

    run = _kedro_run(project_copy)

    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "event_type [at least one cart]: no 'cart' event at all" in output
    assert "nothing to learn" in output
    assert not (project_copy / "data" / "03_primary").exists()
    assert not (project_copy / "data" / "08_reporting").exists()  # no training_run.json
    assert not (project_copy / "mlruns").exists()  # no MLflow store: nothing registered
    assert DEPRECATION not in output


def test_kedro_run_trains_on_my_csv_with_one_parameter(project_copy: Path) -> None:
    # The data contract's command: generate (or bring) a CSV, point the run at it.
    generate_events(project_copy / "mine" / "events.csv", sessions=300)

    run = _kedro_run(
        project_copy, "--pipeline", "data_processing", "--params", "raw_events_path=mine/events.csv"
    )

    assert run.returncode == 0, run.stderr[-2000:]
    assert "RawEventsDataset" in run.stdout
    assert pq.read_table(project_copy / "data" / "03_primary" / "primary.parquet").num_rows > 10
    assert not (project_copy / "data" / "01_raw").exists()  # the default input was not read
    assert DEPRECATION not in run.stdout + run.stderr
