"""MLflow for the training pipeline: the store, the experiment, the run's content and the model.

The tracking URI is the contract's (``purchase_contract.config.tracking_uri``):
``$MLFLOW_TRACKING_URI``, else the embedded SQLite store of ``[tool.purchase-predict]``.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from mlflow.models import infer_signature
from mlflow.models.model import ModelInfo
from sklearn.pipeline import Pipeline

from purchase_contract.config import tracking_uri
from purchase_contract.features import FEATURE_NAMES, LABEL
from purchase_contract.model_dir import REFERENCE_SAMPLE_ARTIFACT, ReferenceSample

# Types inside the fitted Pipeline that skops does not trust by default; MLflow stores the list
# in the MLmodel file so loading needs no extra argument.
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
]
# Distributions the logged model needs at load time (pinned to the training versions).
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "lightgbm", "skops", "pandas", "numpy", "scipy")
_SQLITE = "sqlite:///"
# The reference sample: the first rows of the frozen test set (so the same rows every time).
REFERENCE_SAMPLE_ROWS = 20


@dataclass(frozen=True)
class RunContent:
    """What one training run logs besides the model: params, metrics, plots, the two splits."""

    params: dict[str, Any]
    metrics: dict[str, float]
    plots: dict[str, Figure]
    train_set: pd.DataFrame
    test_set: pd.DataFrame


def use_tracking_store() -> str:
    """Point MLflow at the contract's tracking URI (creating the embedded store's directory)."""
    uri = tracking_uri()
    if uri.startswith(_SQLITE):
        Path(uri.removeprefix(_SQLITE)).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return uri


def _local_artifact_root(uri: str) -> str | None:
    """Artifacts beside a local SQLite store; None lets a server (or MLflow) choose."""
    if not uri.startswith(_SQLITE):
        return None
    database = Path(uri.removeprefix(_SQLITE)).resolve()
    return (database.parent / "artifacts").as_uri()


def experiment_id(name: str, uri: str) -> str:
    """The experiment called ``name``, created (artifacts beside a SQLite store) if missing."""
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=_local_artifact_root(uri))


@contextmanager
def training_run(experiment: str, tags: dict[str, str]) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FAILED on any exception, FINISHED otherwise."""
    with warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment, tags=tags) as run:
        # The contract's integer columns have no missing values: MLflow's schema hint does not apply.
        warnings.filterwarnings(
            "ignore", message=".*Integer columns in Python cannot represent missing"
        )
        yield run


def pip_requirements() -> list[str]:
    """Pinned explicitly: inferring them makes MLflow load the model in a subprocess (~10 s)."""
    return [f"{name}=={metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def log_test_set(test_set: pd.DataFrame) -> None:
    """The frozen test set artifact, at the contract's path ``test_set/test_set.parquet``."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "test_set.parquet"
        test_set.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="test_set")


def log_run_content(content: RunContent) -> None:
    """Params, metrics, plots, the frozen test set and both splits as inputs, in the active run."""
    mlflow.log_params(content.params)
    mlflow.log_metrics(content.metrics)
    for file_name, figure in content.plots.items():
        mlflow.log_figure(figure, f"plots/{file_name}")
    log_test_set(content.test_set)
    for name, rows, context in (
        ("train", content.train_set, "training"),
        ("test", content.test_set, "testing"),
    ):
        mlflow.log_input(mlflow.data.from_pandas(rows, name=name, targets=LABEL), context=context)


def _json_value(value: Any) -> Any:
    """A feature value as JSON has it: missing (NaN, None, pd.NA) is None, NumPy is Python."""
    if pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value


def reference_sample(model: Pipeline, test_set: pd.DataFrame, run_id: str) -> ReferenceSample:
    """The first test rows as JSON sessions and ``model``'s purchase probabilities for them."""
    features = test_set[list(FEATURE_NAMES)].head(REFERENCE_SAMPLE_ROWS)
    probabilities = model.predict_proba(features)[:, 1]
    sessions = [
        {name: _json_value(value) for name, value in row.items()}
        for row in features.astype(object).to_dict(orient="records")
    ]
    return ReferenceSample(
        model_uri="",
        run_id=run_id,
        sessions=sessions,
        probabilities=[float(p) for p in probabilities],
    )


def log_reference_sample(model: Pipeline, test_set: pd.DataFrame) -> None:
    """The reference sample of the active run, at the contract's ``REFERENCE_SAMPLE_ARTIFACT``."""
    sample = reference_sample(model, test_set, mlflow.active_run().info.run_id)
    artifact = PurePosixPath(REFERENCE_SAMPLE_ARTIFACT)
    with tempfile.TemporaryDirectory() as directory:
        path = sample.write(Path(directory) / artifact.name)
        mlflow.log_artifact(str(path), artifact_path=str(artifact.parent))


def log_model(model: Pipeline, test_set: pd.DataFrame, decision_threshold: float) -> ModelInfo:
    """The Pipeline as an MLflow model (``predict_proba`` as pyfunc), threshold in its metadata,
    and its reference sample (:func:`log_reference_sample`) from the same in-memory model."""
    log_reference_sample(model, test_set)
    test_features = test_set[list(FEATURE_NAMES)]
    signature_sample = test_features.head(200)
    signature = infer_signature(signature_sample, model.predict_proba(signature_sample))
    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=signature,
        input_example=test_features.head(5),
        pyfunc_predict_fn="predict_proba",
        metadata={"decision_threshold": decision_threshold},
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pip_requirements=pip_requirements(),
    )
