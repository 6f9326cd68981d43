"""The training pipeline end to end: real catalog config, SequentialRunner, SQLite MLflow."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from mlflow import MlflowClient

from purchase_contract.config import DEFAULT_LOCAL_MLFLOW_STORE
from purchase_contract.decision import METRIC_NAMES
from purchase_contract.features import FEATURE_DTYPES, FEATURE_NAMES, LABEL
from purchase_contract.model_dir import REFERENCE_SAMPLE_ARTIFACT, ReferenceSample
from purchase_predict.config_loader import ProjectConfigLoader
from purchase_predict.pipelines.training import create_pipeline
from purchase_predict.pipelines.training.nodes import (
    data_fingerprint,
    log_training_run,
    run_params,
    split_train_test,
)
from purchase_predict.settings import project_setting

PROJECT_DIR = Path(__file__).resolve().parents[3]
GIT_COMMIT = "0123456789abcdef0123456789abcdef01234567"
GIT_BRANCH = "feature/training-test"
METRICS = set(METRIC_NAMES)
FEATURE_COLUMNS = list(FEATURE_NAMES)
AUTOML_MAX_EVALS = 4  # the default is 8; fewer trials keep this module quick


@dataclass
class TrainingRun:
    """One pipeline run and where it left its outputs."""

    tracking_uri: str
    store_dir: Path
    data_dir: Path
    catalog: DataCatalog
    record: dict[str, Any]
    params: dict[str, Any]


def _training_params(**runtime_params: Any) -> dict[str, Any]:
    """parameters_training.yml through Kedro's loader, as `kedro run --params` would see it."""
    loader = ProjectConfigLoader(
        conf_source=str(PROJECT_DIR / "conf"),
        base_env="base",
        default_run_env="local",
        custom_resolvers={"project": project_setting},
        config_patterns={"parameters": ["parameters_training*"]},
        runtime_params=runtime_params,
    )
    return loader["parameters"]


def _catalog(root: Path, primary: pd.DataFrame, params: dict[str, Any]) -> DataCatalog:
    """catalog_training.yml with every file path moved under ``root``, plus inputs and params."""
    config = yaml.safe_load((PROJECT_DIR / "conf" / "base" / "catalog_training.yml").read_text())

    def relocate(entry: dict[str, Any]) -> None:
        if "filepath" in entry:
            entry["filepath"] = str(root / entry["filepath"])
        if isinstance(entry.get("dataset"), dict):
            relocate(entry["dataset"])

    for entry in config.values():
        relocate(entry)
    catalog = DataCatalog.from_config(config)
    catalog["primary@pandas"] = primary
    for name, value in params.items():
        catalog[f"params:{name}"] = value
    return catalog


def _run(root: Path, primary: pd.DataFrame) -> tuple[DataCatalog, dict[str, Any]]:
    params = _training_params(automl_max_evals=AUTOML_MAX_EVALS)
    catalog = _catalog(root, primary, params)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog, params


@pytest.fixture(scope="module")
def training_run(
    tmp_path_factory: pytest.TempPathFactory,
    module_monkeypatch: pytest.MonkeyPatch,
    synthetic_primary: pd.DataFrame,
) -> TrainingRun:
    root = tmp_path_factory.mktemp("training")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    (root / "mlruns").mkdir()
    module_monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    module_monkeypatch.setenv("GIT_COMMIT", GIT_COMMIT)
    module_monkeypatch.setenv("GIT_BRANCH", GIT_BRANCH)
    catalog, params = _run(root, synthetic_primary)
    record = catalog.load("training_run")
    return TrainingRun(uri, root / "mlruns", root / "data", catalog, record, params)


@pytest.fixture
def client(training_run: TrainingRun, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    """A client of the module's store; ``models:/`` URIs resolve against it too."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", training_run.tracking_uri)
    return MlflowClient(training_run.tracking_uri)


def test_config_names_come_from_the_root_pyproject(training_run: TrainingRun) -> None:
    settings = training_run.params["mlflow_logging"]

    assert settings["registered_model_name"] == project_setting("model_name")
    assert settings["experiment_name"] == project_setting("experiment_name")
    assert training_run.params["automl_max_evals"] == AUTOML_MAX_EVALS
    assert _training_params()["automl_max_evals"] == 8


def test_training_run_record_follows_the_contract(
    training_run: TrainingRun, synthetic_primary: pd.DataFrame
) -> None:
    record = training_run.record
    written = json.loads((training_run.data_dir / "08_reporting" / "training_run.json").read_text())

    assert written == record
    assert set(record) == {
        "run_id",
        "model_uri",
        "registered_model_name",
        "model_version",
        "metrics",
        "decision_threshold",
        "data_fingerprint",
        "git_commit",
    }
    assert record["model_uri"] == f"runs:/{record['run_id']}/model"
    assert record["registered_model_name"] == project_setting("model_name")
    assert record["model_version"] == "1"
    assert set(record["metrics"]) == METRICS
    assert 0 < record["decision_threshold"] < 1
    assert record["data_fingerprint"] == data_fingerprint(synthetic_primary)
    assert record["git_commit"] == GIT_COMMIT


def test_catalog_writes_model_metrics_and_plots(training_run: TrainingRun) -> None:
    reporting = training_run.data_dir / "08_reporting"
    model_versions = list(
        (training_run.data_dir / "06_models" / "purchase_model.pkl").glob("*/purchase_model.pkl")
    )

    assert len(model_versions) == 1
    assert json.loads((reporting / "metrics.json").read_text()) == training_run.record["metrics"]
    for name in ("pr_curve.png", "feature_importance.png"):
        assert (reporting / "plots" / name).read_bytes().startswith(b"\x89PNG")


def test_model_beats_the_all_positive_baseline(training_run: TrainingRun) -> None:
    metrics = training_run.record["metrics"]

    assert metrics["f1"] >= metrics["baseline_f1"] + 0.1
    assert metrics["roc_auc"] > 0.8


def test_run_has_params_metrics_tags_and_inputs(
    training_run: TrainingRun, client: MlflowClient
) -> None:
    run = client.get_run(training_run.record["run_id"])
    experiment = client.get_experiment(run.info.experiment_id)

    assert run.info.status == "FINISHED"
    assert experiment.name == project_setting("experiment_name")
    assert experiment.artifact_location == (training_run.store_dir / "artifacts").as_uri()
    assert run.data.metrics == pytest.approx(training_run.record["metrics"])
    assert set(training_run.params["search_space"]) <= set(run.data.params)
    assert run.data.params["automl_max_evals"] == str(AUTOML_MAX_EVALS)
    assert run.data.params["test_ratio"] == "0.2"
    assert run.data.params["seed"] == "42"
    assert float(run.data.params["decision_threshold"]) == training_run.record["decision_threshold"]
    assert run.data.tags["git_commit"] == GIT_COMMIT
    assert run.data.tags["git_branch"] == GIT_BRANCH
    assert run.data.tags["data_fingerprint"] == training_run.record["data_fingerprint"]
    contexts = {
        dataset_input.dataset.name: dataset_input.tags[0].value
        for dataset_input in run.inputs.dataset_inputs
    }
    assert contexts == {"train": "training", "test": "testing"}


def test_run_artifacts_hold_plots_and_the_frozen_test_set(
    training_run: TrainingRun, client: MlflowClient, synthetic_primary: pd.DataFrame, tmp_path: Path
) -> None:
    run_id = training_run.record["run_id"]
    plots = sorted(artifact.path for artifact in client.list_artifacts(run_id, "plots"))
    test_set_path = client.download_artifacts(run_id, "test_set/test_set.parquet", str(tmp_path))

    assert plots == ["plots/feature_importance.png", "plots/pr_curve.png"]
    frozen = pd.read_parquet(test_set_path)
    _, expected = split_train_test(synthetic_primary, 0.2, 42)
    assert list(frozen.columns) == [*FEATURE_COLUMNS, LABEL]
    assert len(frozen) == 400
    pd.testing.assert_frame_equal(frozen, expected, check_dtype=False)


def test_run_artifacts_hold_the_reference_sample_of_the_logged_model(
    training_run: TrainingRun, client: MlflowClient, synthetic_primary: pd.DataFrame, tmp_path: Path
) -> None:
    record = training_run.record
    path = client.download_artifacts(record["run_id"], REFERENCE_SAMPLE_ARTIFACT, str(tmp_path))
    sample = ReferenceSample.read(Path(path))
    _, test_set = split_train_test(synthetic_primary, 0.2, 42)
    first_rows = test_set[FEATURE_COLUMNS].head(20)
    logged = mlflow.sklearn.load_model(
        f"models:/{record['registered_model_name']}/{record['model_version']}"
    )
    # The sessions as the API receives them: JSON, null for a missing text.
    sessions = pd.DataFrame(sample.sessions, columns=FEATURE_COLUMNS).astype(FEATURE_DTYPES)

    assert (sample.model_uri, sample.run_id) == ("", record["run_id"])
    assert len(sample.sessions) == len(sample.probabilities) == 20
    assert [list(session) for session in sample.sessions] == [FEATURE_COLUMNS] * 20
    assert any(None in session.values() for session in sample.sessions)
    pd.testing.assert_frame_equal(
        sessions, first_rows.reset_index(drop=True).astype(FEATURE_DTYPES)
    )
    np.testing.assert_array_equal(sample.probabilities, logged.predict_proba(sessions)[:, 1])
    np.testing.assert_array_equal(sample.probabilities, logged.predict_proba(first_rows)[:, 1])


def test_registered_version_is_tagged_and_loads_as_pyfunc(
    training_run: TrainingRun, client: MlflowClient, synthetic_primary: pd.DataFrame
) -> None:
    name, version = (
        training_run.record["registered_model_name"],
        training_run.record["model_version"],
    )
    model_version = client.get_model_version(name, version)
    uri = f"models:/{name}/{version}"
    pyfunc_model = mlflow.pyfunc.load_model(uri)
    sklearn_model = training_run.catalog.load("purchase_model")
    _, test_set = split_train_test(synthetic_primary, 0.2, 42)
    features = test_set[FEATURE_COLUMNS]

    assert model_version.run_id == training_run.record["run_id"]
    assert model_version.tags == {"git_commit": GIT_COMMIT}
    assert pyfunc_model.metadata.metadata == {
        "decision_threshold": training_run.record["decision_threshold"]
    }
    assert pyfunc_model.metadata.get_input_schema().input_names() == FEATURE_COLUMNS
    assert pyfunc_model.metadata.saved_input_example_info is not None
    purchase_proba = pyfunc_model.predict(features)[:, 1]
    np.testing.assert_allclose(purchase_proba, sklearn_model.predict_proba(features)[:, 1])
    np.testing.assert_allclose(
        purchase_proba, mlflow.sklearn.load_model(uri).predict_proba(features)[:, 1]
    )


@pytest.mark.usefixtures("client")
def test_pyfunc_accepts_unknown_and_missing_categories(
    training_run: TrainingRun, synthetic_primary: pd.DataFrame
) -> None:
    record = training_run.record
    pyfunc_model = mlflow.pyfunc.load_model(
        f"models:/{record['registered_model_name']}/{record['model_version']}"
    )
    features = synthetic_primary[FEATURE_COLUMNS].head(3)
    # What an API request may carry: a brand the model never saw, nulls for the categories.
    request = features.assign(brand=["brand-from-the-future", None, None], category=[None] * 3)

    proba = pyfunc_model.predict(request)

    assert proba.shape == (3, 2)
    assert ((proba > 0) & (proba < 1)).all()


def test_failed_training_registers_nothing(
    tracking_uri: str, make_primary: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    primary = make_primary(200)
    primary[LABEL] = np.int8(0)  # nobody bought anything

    with pytest.raises(ValueError, match="column 'purchased' has a single class"):
        _run(tmp_path, primary)

    client = MlflowClient(tracking_uri)
    assert client.search_registered_models() == []
    assert (
        client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
        == []
    )
    assert not (tmp_path / "data" / "08_reporting" / "training_run.json").exists()


def test_logging_failure_ends_the_run_failed_without_a_version(
    training_run: TrainingRun,
    synthetic_primary: pd.DataFrame,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No MLFLOW_TRACKING_URI: the node falls back to the contract's embedded store, here the
    # default path under a copy of the root configuration in tmp_path.
    config = tmp_path / "pyproject.toml"
    config.write_text((PROJECT_DIR.parent / "pyproject.toml").read_text())
    monkeypatch.setenv("PURCHASE_PREDICT_CONFIG", str(config))
    store = (tmp_path / DEFAULT_LOCAL_MLFLOW_STORE).parent
    train_set, test_set = split_train_test(synthetic_primary, 0.2, 42)
    # A column parquet cannot hold (numbers mixed with text) fails after params/metrics/plots.
    broken_test_set = test_set.assign(brand=[1, *test_set["brand"].iloc[1:]])
    settings = training_run.params["mlflow_logging"]

    with pytest.raises(Exception, match="brand"):
        log_training_run(
            model=training_run.catalog.load("purchase_model"),
            train_set=train_set,
            test_set=broken_test_set,
            params=run_params({"num_leaves": 8}, 0.5, automl_max_evals=1, test_ratio=0.2, seed=42),
            metrics=training_run.record["metrics"],
            plots={},
            data_fingerprint="0" * 64,
            mlflow_settings=settings,
        )

    assert (store / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(settings["experiment_name"])
    assert experiment.artifact_location == (store / "artifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id])
    assert [run.info.status for run in runs] == ["FAILED"]
    assert runs[0].data.metrics == pytest.approx(training_run.record["metrics"])
    assert runs[0].data.params["decision_threshold"] == "0.5"
    assert client.search_model_versions(f"name = '{settings['registered_model_name']}'") == []
    assert mlflow.active_run() is None
