"""Fixtures for the registry scripts: project configs, and training runs that follow the contract.

The training runs are logged by the Kedro training pipeline's own functions (the model, the
contract's metrics, ``purchase_predict.mlflow_logging``): an sklearn Pipeline (OrdinalEncoder ->
LGBMClassifier) logged with ``pyfunc_predict_fn="predict_proba"`` and a ``decision_threshold``
in its metadata, test metrics, the frozen test set artifact and the lineage tags, registered as
a version of the configured model. They are small and few-tree.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sqlite3
import tomllib
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.pipeline import Pipeline

from purchase_contract.features import FEATURE_DTYPES, FEATURE_NAMES, LABEL
from purchase_contract.testing import isolated_mlflow
from purchase_predict import mlflow_logging
from purchase_predict.pipelines.training.nodes import evaluate_model, run_params, train_model

REPO_ROOT = Path(__file__).resolve().parents[2]
ROOT_PYPROJECT = REPO_ROOT / "pyproject.toml"

LABEL_COLUMN = LABEL
TEST_RATIO = 0.3
# Fixed hyper-parameters (no search: the runs log automl_max_evals 0) of a small, few-tree model.
SMALL_MODEL = {"n_estimators": 25, "num_leaves": 8, "learning_rate": 0.2}
SPLIT_SEED = 7


@pytest.fixture(autouse=True)
def _no_github_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripts under test must not write to a CI runner's real $GITHUB_OUTPUT or read its refs."""
    for name in (
        "GITHUB_OUTPUT",
        "GITHUB_STEP_SUMMARY",
        "GITHUB_SHA",
        "GITHUB_REF_NAME",
        "GITHUB_SERVER_URL",
        "GITHUB_REPOSITORY",
        "GITHUB_RUN_ID",
        "GITHUB_EVENT_PATH",
        "PURCHASE_PREDICT_CONFIG",
    ):
        monkeypatch.delenv(name, raising=False)


def root_settings() -> dict[str, Any]:
    """``[tool.purchase-predict]`` of the root pyproject, read independently of the scripts."""
    return tomllib.loads(ROOT_PYPROJECT.read_text())["tool"]["purchase-predict"]


def write_project_config(path: Path, settings: dict[str, Any]) -> Path:
    """Write ``settings`` as the ``[tool.purchase-predict]`` table of a pyproject at ``path``."""
    environments = settings.get("environments", {})
    lines = ["[tool.purchase-predict]"]
    lines += [f"{key} = {_toml(value)}" for key, value in settings.items() if key != "environments"]
    for name, table in environments.items():
        lines += ["", f"[tool.purchase-predict.environments.{name}]"]
        lines += [f"{key} = {_toml(value)}" for key, value in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def project_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., dict[str, Any]]:
    """Factory: write a config derived from the root one (``**overrides`` of top-level keys)
    and point PURCHASE_PREDICT_CONFIG at it; returns the settings written."""

    def make(**overrides: Any) -> dict[str, Any]:
        settings = root_settings() | overrides
        path = write_project_config(tmp_path / "pyproject.toml", settings)
        monkeypatch.setenv("PURCHASE_PREDICT_CONFIG", str(path))
        return settings

    return make


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    return json.dumps(str(value))


# --- contract training runs ----------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRun:
    """A logged training run, as the training pipeline would report it."""

    run_id: str
    model_uri: str
    model_version: str | None
    decision_threshold: float
    data_fingerprint: str
    git_commit: str
    git_branch: str
    metrics: dict[str, float]


def synthetic_sessions(rows: int = 500, seed: int = 0) -> pd.DataFrame:
    """A primary-table-like frame (feature columns + purchased) with a learnable signal."""
    rng = np.random.default_rng(seed)
    brand = rng.choice(["acme", "globex", "initech", None], rows, p=[0.4, 0.3, 0.2, 0.1])
    columns = {
        "product_id": lambda: rng.integers(1_000, 1_050, rows),
        "brand": lambda: pd.Series(brand, dtype="str"),
        "price": lambda: rng.uniform(1, 300, rows).round(2),
        "num_views_session": lambda: rng.integers(1, 30, rows),
        "num_views_product": lambda: rng.integers(1, 8, rows),
        "category": lambda: pd.Series(
            rng.choice(["electronics", "apparel", None], rows), dtype="str"
        ),
        "sub_category": lambda: pd.Series(
            rng.choice(["phone", "shoes", "tv", None], rows), dtype="str"
        ),
        "hour": lambda: rng.integers(0, 24, rows),
        "minute": lambda: rng.integers(0, 60, rows),
        "weekday": lambda: rng.integers(0, 7, rows),
        "duration": lambda: rng.exponential(600, rows).round(1),
    }
    # Every other contract feature is a count of earlier things (sessions, views): 0 to 5.
    frame = pd.DataFrame(
        {name: columns.get(name, lambda: rng.integers(0, 6, rows))() for name in FEATURE_NAMES}
    ).astype({name: dtype for name, dtype in FEATURE_DTYPES.items() if dtype != "object"})
    score = (
        1.1 * (frame["num_views_product"] - 3)
        + 0.002 * (frame["duration"] - 600)
        - 0.01 * (frame["price"] - 150)
        + np.where(frame["brand"] == "acme", 1.0, 0.0)
        + rng.normal(0, 0.8, rows)
    )
    # A minority (about 40 %) of carted products is bought, as in the real data.
    frame[LABEL_COLUMN] = (score > 2.5).astype("int64")
    return frame


def split_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frozen train/test split every run of one data set shares."""
    test = frame.sample(frac=TEST_RATIO, random_state=SPLIT_SEED)
    return frame.drop(index=test.index), test


def fit_contract_model(
    train: pd.DataFrame, *, shuffle_labels: bool = False, seed: int = 0
) -> Pipeline:
    """The training pipeline's own model, small; ``shuffle_labels`` makes a deliberately worse one."""
    if shuffle_labels:
        train = train.assign(
            **{
                LABEL_COLUMN: np.random.default_rng(seed).permutation(
                    train[LABEL_COLUMN].to_numpy()
                )
            }
        )
    return train_model(train, SMALL_MODEL, {"n_jobs": 1, "verbose": -1}, seed)


def log_training_run(
    frame: pd.DataFrame,
    *,
    experiment_id: str,
    model_name: str,
    shuffle_labels: bool = False,
    register: bool = True,
    decision_threshold: float = 0.5,
    git_branch: str = "feature/registry-tests",
    git_commit: str = "0123456789abcdef0123456789abcdef01234567",
    with_test_set: bool = True,
    seed: int = 0,
) -> TrainingRun:
    """Train on ``frame``'s train split and log a run with the training pipeline's functions."""
    train, test = split_frame(frame)
    model = fit_contract_model(train, shuffle_labels=shuffle_labels, seed=seed)
    metrics = evaluate_model(model, test, decision_threshold)
    params = run_params(SMALL_MODEL, decision_threshold, 0, test_ratio=TEST_RATIO, seed=seed)
    fingerprint = hashlib.sha256(frame.to_csv(index=False).encode()).hexdigest()
    tags = {"git_commit": git_commit, "git_branch": git_branch, "data_fingerprint": fingerprint}
    with mlflow_logging.training_run(experiment_id, tags) as run:
        if with_test_set:
            content = mlflow_logging.RunContent(params, metrics, {}, train, test)
            mlflow_logging.log_run_content(content)
        else:
            mlflow.log_params(params)
            mlflow.log_metrics(metrics)
        info = mlflow_logging.log_model(model, test, decision_threshold)
        version = (
            mlflow.register_model(info.model_uri, model_name, tags={"git_commit": git_commit})
            if register
            else None
        )
    return TrainingRun(
        run_id=run.info.run_id,
        model_uri=f"runs:/{run.info.run_id}/model",
        model_version=str(version.version) if version is not None else None,
        decision_threshold=decision_threshold,
        data_fingerprint=fingerprint,
        git_commit=git_commit,
        git_branch=git_branch,
        metrics=metrics,
    )


def write_training_run_json(path: Path, run: TrainingRun, model_name: str) -> Path:
    """The training pipeline's ``training_run.json`` for ``run``."""
    document = {
        "run_id": run.run_id,
        "model_uri": run.model_uri,
        "registered_model_name": model_name,
        "model_version": run.model_version,
        "metrics": run.metrics,
        "decision_threshold": run.decision_threshold,
        "data_fingerprint": run.data_fingerprint,
        "git_commit": run.git_commit,
    }
    path.write_text(json.dumps(document, indent=2))
    return path


# --- a registry with contract runs, built once and copied per test ---------------------------


@dataclass(frozen=True)
class Registry:
    """A per-test copy of the template registry: its URI, client, model name and runs."""

    uri: str
    client: mlflow.MlflowClient
    model_name: str
    runs: dict[str, TrainingRun]

    def versions_of(self, run_id: str) -> list[str]:
        """Registered versions of the model created from ``run_id``."""
        found = self.client.search_model_versions(
            f"name = '{self.model_name}' and run_id = '{run_id}'"
        )
        return [str(v) for v in sorted(int(v.version) for v in found)]

    def holder(self, alias: str) -> str | None:
        """The version ``alias`` points at, or None."""
        version = self.client.get_registered_model(self.model_name).aliases.get(alias)
        return None if version is None else str(version)

    def tags(self, version: str) -> dict[str, str]:
        """The tags of one model version."""
        return self.client.get_model_version(self.model_name, version).tags


@dataclass(frozen=True)
class RegistryTemplate:
    db_path: Path
    model_name: str
    runs: dict[str, TrainingRun]


@pytest.fixture(scope="session")
def registry_template(
    tmp_path_factory: pytest.TempPathFactory,
    create_sqlite_store: Callable[[Path, Path], str],
    sessions_frame: pd.DataFrame,
) -> RegistryTemplate:
    """Contract runs logged once per session into a SQLite store that tests copy.

    good        real labels, decision_threshold 0.4, registered (version 1)
    good_twin   the same training again, registered (version 2): the same F1 as good
    worse       shuffled labels: deliberately worse, registered (version 3)
    unregistered  a good model the pipeline did not register
    no_test_set   a good model without the frozen test set artifact, not registered
    Artifacts stay in the template directory; copies only read them.
    """
    home = tmp_path_factory.mktemp("registry-template")
    uri = create_sqlite_store(home / "mlflow.db", home / "artifacts")
    model_name = root_settings()["model_name"]
    data = sessions_frame
    # Built before the first test's isolation: isolated here too, MLflow reset on the way out.
    with pytest.MonkeyPatch.context() as patch, isolated_mlflow(patch):
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        experiment_id = mlflow.MlflowClient(uri).create_experiment(
            root_settings()["experiment_name"], artifact_location=(home / "artifacts").as_uri()
        )
        common = {"experiment_id": experiment_id, "model_name": model_name}
        runs = {
            "good": log_training_run(data, decision_threshold=0.4, **common),
            "good_twin": log_training_run(data, decision_threshold=0.4, **common),
            "worse": log_training_run(data, shuffle_labels=True, **common),
            "unregistered": log_training_run(data, register=False, **common),
            "no_test_set": log_training_run(data, register=False, with_test_set=False, **common),
        }
    return RegistryTemplate(db_path=home / "mlflow.db", model_name=model_name, runs=runs)


@pytest.fixture
def registry(
    registry_template: RegistryTemplate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Registry:
    """A private copy of the template registry, set as MLFLOW_TRACKING_URI."""
    db_path = tmp_path / "mlflow.db"
    # sqlite's backup API copies a consistent snapshot even if a connection is still open.
    with (
        closing(sqlite3.connect(registry_template.db_path)) as source,
        closing(sqlite3.connect(db_path)) as target,
    ):
        source.backup(target)
    uri = f"sqlite:///{db_path}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return Registry(
        uri=uri,
        client=mlflow.MlflowClient(uri),
        model_name=registry_template.model_name,
        runs=registry_template.runs,
    )


@pytest.fixture(scope="session")
def sessions_frame() -> pd.DataFrame:
    """The synthetic primary table the template runs were trained on."""
    return synthetic_sessions()


@pytest.fixture
def log_contract_run(sessions_frame: pd.DataFrame) -> Callable[..., TrainingRun]:
    """Factory: log a contract training run on ``sessions_frame`` (see ``log_training_run``)."""
    return functools.partial(log_training_run, sessions_frame)


@pytest.fixture
def training_run_json(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write ``training_run.json`` for a run (``registered_model_name`` overridable)."""

    def write(run: TrainingRun, model_name: str) -> Path:
        return write_training_run_json(tmp_path / "training_run.json", run, model_name)

    return write
