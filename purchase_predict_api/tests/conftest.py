"""Fixtures: a real LightGBM model trained, logged and registered in a SQLite MLflow, then baked.

The model follows the contract (a scikit-learn Pipeline: OrdinalEncoder for the categories,
LGBMClassifier; logged with ``pyfunc_predict_fn="predict_proba"`` and a decision threshold in
its metadata). The registered name is a test name: the API knows no model name of its own.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from app.core.config import Settings
from app.main import create_app
from app.model.bake import bake
from app.model.loading import prepare_model_dir
from purchase_contract.features import (
    CATEGORICAL_FEATURES,
    FEATURE_NAMES,
    FEATURES,
    NUMERIC_FEATURES,
    Feature,
)
from purchase_contract.testing import isolated_mlflow, reset_mlflow_state

MODEL_NAME = "api-test-model"
ALIAS = "candidate"
DECISION_THRESHOLD = 0.37
CATEGORICAL = list(CATEGORICAL_FEATURES)
NUMERIC = list(NUMERIC_FEATURES)
# The contract's feature columns, in order: what every request and frame is checked against.
CONTRACT_FEATURES = list(FEATURE_NAMES)
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
]
# Variables the service reads: a developer's shell must not leak into the tests.
SERVICE_VARIABLES = (
    "MODEL_PATH",
    "MODEL_URI",
    "GIT_SHA",
    "IMAGE_TAG",
    "PORT",
    "HOST",
    "INJECT_FAULTS",
)


@dataclass(frozen=True)
class RegisteredModel:
    """The fixture model: where it is registered and the fitted Pipeline itself."""

    tracking_uri: str
    name: str
    alias: str
    version: str
    other_version: str
    run_id: str
    estimator: Pipeline
    threshold: float


@pytest.fixture(scope="session", autouse=True)
def _no_service_variables_from_the_shell() -> Iterator[None]:
    """The same for module-scoped fixtures (the servers started as subprocesses), which run
    before the per-test isolation below: the service's variables are unset for the session."""
    with pytest.MonkeyPatch.context() as patch:
        for name in SERVICE_VARIABLES:
            patch.delenv(name, raising=False)
        yield


@pytest.fixture(scope="session")
def app_environment() -> Callable[..., dict[str, str]]:
    """The environment of a ``python -m app`` subprocess: this one's without MLflow's or the
    model's variables, plus ``env`` (read when called: after the session's unsetting above)."""

    def build(**env: str) -> dict[str, str]:
        kept = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODEL_"))}
        return {**kept, **env}

    return build


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MLFLOW_* or service variables from outside, no active run left behind."""
    with isolated_mlflow(monkeypatch, also=SERVICE_VARIABLES):
        yield


def synthetic_sessions(rows: int, seed: int) -> pd.DataFrame:
    """Feature columns with the contract's dtypes (missing categories are NaN)."""
    rng = np.random.default_rng(seed)

    def categories(values: list[str], missing: float) -> pd.Series:
        picked = rng.choice(np.array(values, dtype=object), rows).astype(object)
        return pd.Series(picked, dtype=object).mask(rng.random(rows) < missing, np.nan)

    # The columns the label reads, with realistic values; any other contract feature from its
    # bounds (small counts), so a feature added to the contract needs nothing here.
    realistic = {
        "product_id": lambda: rng.integers(1_000, 2_000, rows).astype("int64"),
        "brand": lambda: categories(["apple", "samsung", "xiaomi", "huawei"], 0.15),
        "price": lambda: rng.gamma(2.0, 150.0, rows).round(2),
        "num_views_session": lambda: rng.integers(1, 40, rows).astype("int64"),
        "num_views_product": lambda: rng.integers(1, 10, rows).astype("int64"),
        "category": lambda: categories(["electronics", "appliances", "computers"], 0.1),
        "sub_category": lambda: categories(["smartphone", "tablet", "kitchen", "notebook"], 0.1),
        "duration": lambda: rng.exponential(600.0, rows).round(1),
    }

    def from_bounds(feature: Feature) -> Any:
        if feature.kind == "text":
            return categories([f"{feature.name}-{i}" for i in range(4)], 0.1)
        upper = feature.maximum if feature.maximum <= 100 else 20
        if feature.kind == "integer":
            return rng.integers(feature.minimum, upper + 1, rows).astype("int64")
        return rng.uniform(feature.minimum, upper, rows)

    # Drawn in contract order, one column after the other.
    return pd.DataFrame(
        {f.name: realistic[f.name]() if f.name in realistic else from_bounds(f) for f in FEATURES}
    )[CONTRACT_FEATURES]


def _train(features: pd.DataFrame, seed: int) -> Pipeline:
    """The contract's Pipeline on a label that depends on views, duration and brand."""
    from lightgbm import LGBMClassifier  # noqa: PLC0415
    from sklearn.compose import ColumnTransformer  # noqa: PLC0415
    from sklearn.preprocessing import OrdinalEncoder  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    score = (
        0.4 * features["num_views_product"]
        + features["duration"] / 600
        + (features["brand"] == "apple") * 1.5
        - 3.0
        + rng.normal(0, 1, len(features))
    )
    label = (score > 0).astype("int64").to_numpy()
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    columns = ColumnTransformer(
        [("categories", encoder, CATEGORICAL), ("numbers", "passthrough", NUMERIC)],
        remainder="drop",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    classifier = LGBMClassifier(
        n_estimators=30, num_leaves=8, min_child_samples=10, n_jobs=1, random_state=seed, verbose=-1
    )
    model = Pipeline([("columns", columns), ("classifier", classifier)])
    return model.fit(features, label, classifier__categorical_feature=CATEGORICAL)


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegisteredModel]:
    """The contract's model logged and registered twice in a SQLite MLflow; the alias -> v1."""
    import mlflow  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415
    from mlflow.models import infer_signature  # noqa: PLC0415
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # noqa: PLC0415

    home = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    artifacts = (home / "artifacts").as_uri()
    SqlAlchemyStore(uri, artifacts).engine.dispose()
    features = synthetic_sessions(800, seed=7)
    estimator = _train(features, seed=7)
    reset_mlflow_state()
    try:
        mlflow.set_tracking_uri(uri)
        experiment_id = mlflow.create_experiment("api-tests", artifact_location=artifacts)
        sample = features.head(50)
        with mlflow.start_run(experiment_id=experiment_id) as run:
            info = mlflow.sklearn.log_model(
                estimator,
                name="model",
                signature=infer_signature(sample, estimator.predict_proba(sample)),
                input_example=features.head(3),
                pyfunc_predict_fn="predict_proba",
                metadata={"decision_threshold": DECISION_THRESHOLD},
                skops_trusted_types=SKOPS_TRUSTED_TYPES,
                # Explicit: inferring them loads the model in a subprocess (seconds).
                pip_requirements=[
                    f"{name}=={metadata.version(name)}"
                    for name in ("scikit-learn", "lightgbm", "skops", "pandas", "numpy")
                ],
                registered_model_name=MODEL_NAME,
            )
        # A second, newer version of the same run: the alias must not mean "latest".
        other = mlflow.register_model(info.model_uri, MODEL_NAME)
        client = MlflowClient(tracking_uri=uri)
        client.set_registered_model_alias(MODEL_NAME, ALIAS, "1")
        yield RegisteredModel(
            tracking_uri=uri,
            name=MODEL_NAME,
            alias=ALIAS,
            version="1",
            other_version=str(other.version),
            run_id=run.info.run_id,
            estimator=estimator,
            threshold=DECISION_THRESHOLD,
        )
    finally:
        reset_mlflow_state()


@pytest.fixture(scope="session")
def baked_model_dir(
    registered_model: RegisteredModel, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The alias's model baked (app.model.bake, scripts/bake_model.py), as the image build does."""
    out = tmp_path_factory.mktemp("baked") / "model"
    bake(
        f"models:/{registered_model.name}@{registered_model.alias}",
        out,
        tracking_uri=registered_model.tracking_uri,
    )
    return out


@pytest.fixture(scope="session")
def prepared_source(baked_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baked directory prepared once, as the image build does (a C compiler is here), for
    tests that only read it: copy it to change it."""
    model_dir = tmp_path_factory.mktemp("prepared") / "model"
    shutil.copytree(baked_model_dir, model_dir)
    prepare_model_dir(model_dir)
    return model_dir


@pytest.fixture
def prepared_dir(baked_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the baked directory, prepared as the image build does (``app.prepare``)."""
    model_dir = tmp_path / "model"
    shutil.copytree(baked_model_dir, model_dir)
    prepare_model_dir(model_dir)
    return model_dir


@pytest.fixture
def baked_settings(baked_model_dir: Path) -> Settings:
    """Settings of the image: the baked directory, build information."""
    return Settings(model_path=baked_model_dir, git_sha="0123abc", image_tag="test-tag")


@pytest.fixture
def client(baked_settings: Settings) -> Iterator[TestClient]:
    """A client of an app whose lifespan has loaded the baked model."""
    with TestClient(create_app(baked_settings)) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def make_sessions() -> Callable[[int, int], pd.DataFrame]:
    """``make_sessions(rows, seed)``: synthetic feature rows in the contract's dtypes."""
    return synthetic_sessions


@pytest.fixture(scope="session")
def as_json_records() -> Callable[[pd.DataFrame], list[dict]]:
    """Feature rows as /predict JSON sessions (missing categories become null)."""

    def convert(frame: pd.DataFrame) -> list[dict]:
        return [
            {key: (None if isinstance(v, float) and np.isnan(v) else v) for key, v in row.items()}
            for row in frame.astype(object).to_dict(orient="records")
        ]

    return convert


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """A function returning a currently free TCP port on 127.0.0.1."""

    def pick() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    return pick
