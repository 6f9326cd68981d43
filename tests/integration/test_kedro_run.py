"""``kedro run`` of the whole project, as a user runs it: generated data in, a registered model out.

Each test copies the project's configuration into ``tmp_path`` and runs the real CLI there, so
the repository's own ``data/`` and ``mlruns/`` are never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow import MlflowClient

from purchase_contract.features import IDENTIFIERS, LABEL, PRIMARY_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
PROJECT = ROOT / "purchase_predict"
BIN = Path(sys.executable).parent
MODEL_NAME = "purchase_predict"
# Small but real: ~2,300 carted pairs, a 3-trial search; the whole run takes well under a minute.
SESSIONS = "6000"
FAST = ["--params", "automl_max_evals=3"]


def _project(tmp_path: Path) -> Path:
    """A copy of the Kedro project's settings with an empty data tree."""
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT / "pyproject.toml", project)
    shutil.copy(PROJECT / ".telemetry", project)  # kedro-telemetry's opt-out: no network call
    shutil.copytree(PROJECT / "conf", project / "conf", ignore=shutil.ignore_patterns("local"))
    (project / "conf" / "local").mkdir()
    (project / "src").mkdir()  # kedro checks it exists; the package itself is installed
    return project


def _generate(path: Path, sessions: str = SESSIONS) -> Path:
    subprocess.run(
        [BIN / "purchase-predict-generate", "--out", path, "--sessions", sessions, "--seed", "11"],
        check=True,
        capture_output=True,
    )
    return path


def _kedro_run(project: Path, tracking_uri: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, GIT_COMMIT="0" * 40, GIT_BRANCH="feature/test")
    env["COLUMNS"] = "500"  # Kedro's rich traceback would wrap paths and messages at 80
    started = time.monotonic()
    done = subprocess.run(
        [BIN / "kedro", "run", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    _progress(
        f"kedro run in {project.parent.name}: exit {done.returncode}, {time.monotonic() - started:.0f} s"
    )
    return done


_config: list[pytest.Config] = []  # set by the autouse fixture below


@pytest.fixture(autouse=True)
def _terminal(pytestconfig: pytest.Config) -> None:
    _config[:] = [pytestconfig]


def _progress(message: str) -> None:
    """A progress line on the terminal, past pytest's capture (kedro runs take a while)."""
    if not _config:
        return
    plugins = _config[0].pluginmanager
    capture, reporter = plugins.get_plugin("capturemanager"), plugins.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(f"    [integration] {message}")


def _versions(tracking_uri: str) -> list:
    return MlflowClient(tracking_uri).search_model_versions(f"name = '{MODEL_NAME}'")


def _assert_trained_and_registered(project: Path, tracking_uri: str, result) -> dict:
    assert result.returncode == 0, result.stderr[-3000:]
    run_info = json.loads((project / "data/08_reporting/training_run.json").read_text())
    client = MlflowClient(tracking_uri)
    version = client.get_model_version(MODEL_NAME, run_info["model_version"])
    assert version.run_id == run_info["run_id"]
    assert version.tags["git_commit"] == "0" * 40
    run = client.get_run(run_info["run_id"])
    metrics = run.data.metrics
    for name in ("f1", "precision", "recall", "roc_auc", "pr_auc", "baseline_f1"):
        assert 0.0 <= metrics[name] <= 1.0, name
    # Real signal: clearly better than predicting "purchase" for every carted product.
    assert metrics["f1"] >= metrics["baseline_f1"] + 0.05, metrics
    assert run.data.params["automl_max_evals"] == "3"
    assert run.data.tags["git_branch"] == "feature/test"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/pr_curve.png", "plots/feature_importance.png"} <= artifacts
    # The registered model is self-contained: raw primary columns in, probabilities out.
    primary = pd.read_parquet(project / "data/03_primary/primary.parquet")
    features = primary.drop(columns=[*IDENTIFIERS, LABEL]).head(50)
    mlflow.set_tracking_uri(tracking_uri)
    proba = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version.version}").predict(features)
    assert proba.shape == (50, 2)
    assert ((proba >= 0) & (proba <= 1)).all()
    return run_info


def test_kedro_run_trains_logs_and_registers_in_sqlite(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _generate(project / "data/01_raw/events.parquet")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    first = _assert_trained_and_registered(project, uri, _kedro_run(project, uri, *FAST))
    primary = pq.read_table(project / "data/03_primary/primary.parquet")
    assert primary.num_rows > 1000
    assert tuple(primary.column_names) == PRIMARY_COLUMNS

    # A second run is a new version of the same model.
    second = _assert_trained_and_registered(project, uri, _kedro_run(project, uri, *FAST))
    assert int(second["model_version"]) == int(first["model_version"]) + 1


@pytest.mark.slow
def test_kedro_run_against_a_real_mlflow_server(tmp_path: Path, mlflow_server: str) -> None:
    project = _project(tmp_path)
    _generate(project / "data/01_raw/events.parquet")
    run_info = _assert_trained_and_registered(
        project, mlflow_server, _kedro_run(project, mlflow_server, *FAST)
    )
    # Artifacts went through the server, not to a local path of this process.
    assert not (project / "mlruns").exists()
    assert (
        MlflowClient(mlflow_server)
        .get_run(run_info["run_id"])
        .info.artifact_uri.startswith("mlflow-artifacts:")
    )


def _corrupt(events: pa.Table, case: str) -> pa.Table:
    if case == "missing column":
        return events.drop_columns(["price"])
    if case == "unparseable event_time":
        times = events["event_time"].to_pylist()
        times[3] = "yesterday at noon"
        return events.set_column(
            events.schema.get_field_index("event_time"), "event_time", pa.array(times)
        )
    if case == "negative price":
        prices = events["price"].to_pylist()
        prices[5] = -12.5
        return events.set_column(events.schema.get_field_index("price"), "price", pa.array(prices))
    if case == "no purchase":
        return events.filter(pa.compute.not_equal(events["event_type"], "purchase"))
    raise ValueError(case)


BAD_INPUTS = {
    # case: words the error must contain (file, column or rule)
    "missing file": ["events.parquet", "does not exist"],
    "empty file": ["events.parquet", "empty"],
    "missing column": ["events.parquet", "price"],
    "unparseable event_time": ["event_time", "yesterday at noon"],
    "negative price": ["price", "-12.5"],
    "no purchase": ["event_type", "purchase"],
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_stops_the_run_and_registers_nothing(tmp_path: Path, case: str) -> None:
    project = _project(tmp_path)
    raw = project / "data/01_raw/events.parquet"
    if case == "empty file":
        raw.parent.mkdir(parents=True)
        raw.touch()
    elif case != "missing file":
        good = pq.read_table(_generate(tmp_path / "good.parquet", sessions="300"))
        raw.parent.mkdir(parents=True)
        pq.write_table(_corrupt(good, case), raw)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    result = _kedro_run(project, uri, *FAST)

    assert result.returncode != 0
    for word in BAD_INPUTS[case]:
        assert word in result.stderr, f"{word!r} not in: {result.stderr[-2000:]}"
    assert not (project / "data/08_reporting/training_run.json").exists()
    assert not (tmp_path / "mlflow.db").exists() or _versions(uri) == []
