"""Training nodes: split, hyper-parameter search, final fit, evaluation, plots, MLflow logging.

Every node is a pure function of its inputs except ``log_training_run``, whose job is to record
the run in MLflow and register the model. The model is a self-contained scikit-learn
``Pipeline`` (raw feature columns in, purchase probability out) so the API can load it from
MLflow without this package.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import subprocess
import tempfile
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from lightgbm import LGBMClassifier
from matplotlib.figure import Figure
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    precision_recall_curve,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

logger = logging.getLogger(__name__)

LABEL = "purchased"
# One primary row per carted (session, product): the key gives the table a canonical row order.
ROW_KEY = ["user_session", "product_id"]
CATEGORICAL_FEATURES = ["brand", "category", "sub_category"]
# Model input columns and the dtype each is cast to (the data contract's types).
FEATURE_DTYPES: dict[str, str] = {
    "product_id": "int64",
    "brand": "object",
    "price": "float64",
    "num_views_session": "int64",
    "num_views_product": "int64",
    "category": "object",
    "sub_category": "object",
    "hour": "int64",
    "minute": "int64",
    "weekday": "int64",
    "duration": "float64",
    "num_prev_sessions": "int64",
    "num_prev_product_views": "int64",
}
FEATURE_COLUMNS = list(FEATURE_DTYPES)
# product_id is an identifier, not a quantity: the model ignores it.
NUMERIC_FEATURES = [
    column
    for column in FEATURE_COLUMNS
    if column not in CATEGORICAL_FEATURES and column != "product_id"
]
PRIMARY_COLUMNS = [*FEATURE_COLUMNS, "user_id", "user_session", LABEL]
PLOT_FILES = ("pr_curve.png", "feature_importance.png")
# Types inside the fitted Pipeline that skops does not trust by default; MLflow stores the list
# in the MLmodel file so loading needs no extra argument.
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
]
# Distributions the logged model needs at load time (pinned to the training versions).
MODEL_REQUIREMENTS = ("mlflow", "scikit-learn", "lightgbm", "skops", "pandas", "numpy", "scipy")


# --------------------------------------------------------------------------------------------
# Split and fingerprint
# --------------------------------------------------------------------------------------------


def _check_primary_columns(primary: pd.DataFrame) -> None:
    missing = [column for column in PRIMARY_COLUMNS if column not in primary.columns]
    if missing:
        raise ValueError(f"primary table is missing columns {missing}")


def _canonical(primary: pd.DataFrame) -> pd.DataFrame:
    """Contract columns in contract order, rows sorted by the key (the source order may vary)."""
    _check_primary_columns(primary)
    return primary[PRIMARY_COLUMNS].sort_values(ROW_KEY, kind="mergesort").reset_index(drop=True)


def _model_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Feature columns cast to the contract types, plus the 0/1 label as int64."""
    frame = pd.DataFrame(index=rows.index)
    for column, dtype in FEATURE_DTYPES.items():
        values = rows[column]
        try:
            if dtype == "object":
                # Missing categories become NaN (not None or pd.NA): the encoder maps NaN to NaN.
                frame[column] = values.astype(object).where(values.notna(), np.nan)
            else:
                frame[column] = values.astype(dtype)
        except (TypeError, ValueError) as error:
            raise ValueError(
                f"primary column {column!r} cannot be read as {dtype}: {error}"
            ) from error
    frame[LABEL] = rows[LABEL].astype("int64")
    return frame.reset_index(drop=True)


def data_fingerprint(primary: pd.DataFrame) -> str:
    """Hex sha256 of the primary table content (contract columns, rows in key order)."""
    canonical = _canonical(primary)
    digest = hashlib.sha256(json.dumps(list(canonical.columns)).encode())
    digest.update(pd.util.hash_pandas_object(canonical, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def split_train_test(
    primary: pd.DataFrame, test_ratio: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified, seeded train/test split of the primary table into feature columns + label.

    Raises ``ValueError`` when the label is not 0/1, has a single class, or a split would miss
    a class (too few rows).
    """
    if not 0 < test_ratio < 1:
        raise ValueError(f"test_ratio must be between 0 and 1 (exclusive), got {test_ratio}")
    rows = _canonical(primary)
    if rows[LABEL].isna().any() or not rows[LABEL].isin([0, 1]).all():
        raise ValueError(f"column {LABEL!r} must hold only 0 and 1")
    class_counts = rows[LABEL].value_counts()
    if len(class_counts) < 2:
        raise ValueError(
            f"column {LABEL!r} has a single class ({int(class_counts.index[0])} in all "
            f"{len(rows)} rows): cannot train a purchase model"
        )
    if class_counts.min() < 2:
        raise ValueError(
            f"too few rows: column {LABEL!r}={int(class_counts.idxmin())} occurs "
            f"{class_counts.min()} time(s), a stratified split needs at least 2"
        )
    test_rows = math.ceil(test_ratio * len(rows))
    if min(test_rows, len(rows) - test_rows) < 2:
        raise ValueError(
            f"too few rows: {len(rows)} rows with test_ratio={test_ratio} leave a split "
            "with fewer than 2 rows, one per class is needed"
        )
    frame = _model_frame(rows)
    train_set, test_set = train_test_split(
        frame, test_size=test_ratio, random_state=seed, stratify=frame[LABEL]
    )
    for name, part in (("train", train_set), ("test", test_set)):
        if part[LABEL].nunique() < 2:
            raise ValueError(
                f"too few rows: the {name} split of {len(rows)} rows (test_ratio={test_ratio}) "
                f"has a single {LABEL!r} class"
            )
    return train_set.reset_index(drop=True), test_set.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Model and hyper-parameter search
# --------------------------------------------------------------------------------------------


def _features_and_label(rows: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    return rows[FEATURE_COLUMNS], rows[LABEL].to_numpy()


def build_model(
    hyperparameters: dict[str, Any], model_fixed_params: dict[str, Any], seed: int
) -> Pipeline:
    """Unfitted Pipeline: OrdinalEncoder for the categories (unknown/missing -> NaN), LightGBM."""
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    columns = ColumnTransformer(
        [
            ("categories", encoder, CATEGORICAL_FEATURES),
            ("numbers", "passthrough", NUMERIC_FEATURES),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    classifier = LGBMClassifier(random_state=seed, **{**model_fixed_params, **hyperparameters})
    return Pipeline([("columns", columns), ("classifier", classifier)])


def _fit(model: Pipeline, features: pd.DataFrame, label: np.ndarray) -> Pipeline:
    # The encoded category columns are LightGBM categorical features, not ordered numbers.
    return model.fit(features, label, classifier__categorical_feature=CATEGORICAL_FEATURES)


def _suggest(trial: optuna.Trial, name: str, spec: dict[str, Any]) -> int | float:
    """One hyper-parameter from its search-space entry ``{type, low, high, [log], [step]}``."""
    kind = spec.get("type")
    log = bool(spec.get("log", False))
    if kind == "int":
        return trial.suggest_int(
            name, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)), log=log
        )
    if kind == "float":
        return trial.suggest_float(name, float(spec["low"]), float(spec["high"]), log=log)
    raise ValueError(f"search_space.{name}: type must be 'int' or 'float', got {kind!r}")


def _out_of_fold_proba(
    features: pd.DataFrame,
    label: np.ndarray,
    *,
    folds: list[tuple[np.ndarray, np.ndarray]],
    hyperparameters: dict[str, Any],
    model_fixed_params: dict[str, Any],
    seed: int,
) -> np.ndarray:
    proba = np.empty(len(label), dtype=float)
    for fit_rows, held_out_rows in folds:
        model = _fit(
            build_model(hyperparameters, model_fixed_params, seed),
            features.iloc[fit_rows],
            label[fit_rows],
        )
        proba[held_out_rows] = model.predict_proba(features.iloc[held_out_rows])[:, 1]
    return proba


def best_f1_threshold(label: np.ndarray, purchase_proba: np.ndarray) -> float:
    """Probability threshold (predict positive when ``proba >= threshold``) maximising F1."""
    precision, recall, thresholds = precision_recall_curve(label, purchase_proba)
    # The curve's last point (recall 0) has no threshold.
    precision, recall = precision[:-1], recall[:-1]
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(thresholds[int(np.argmax(f1))])


def search_hyperparameters(
    train_set: pd.DataFrame,
    *,
    search_space: dict[str, dict[str, Any]],
    model_fixed_params: dict[str, Any],
    automl_max_evals: int,
    cv_folds: int,
    seed: int,
) -> tuple[dict[str, Any], float]:
    """Optuna TPE search maximising out-of-fold PR AUC with stratified k-fold CV on the train set.

    Returns the best trial's hyper-parameters and the decision threshold maximising F1 on that
    trial's out-of-fold predictions.
    """
    if automl_max_evals < 1:
        raise ValueError(f"automl_max_evals must be at least 1, got {automl_max_evals}")
    if cv_folds < 2:
        raise ValueError(f"cv_folds must be at least 2, got {cv_folds}")
    features, label = _features_and_label(train_set)
    minority = int(np.bincount(label, minlength=2).min())
    if minority < cv_folds:
        raise ValueError(
            f"too few rows: the train split has {minority} row(s) of the rarer {LABEL!r} class, "
            f"cv_folds={cv_folds} needs at least that many"
        )
    folds = list(StratifiedKFold(cv_folds, shuffle=True, random_state=seed).split(features, label))
    out_of_fold: dict[int, np.ndarray] = {}

    def objective(trial: optuna.Trial) -> float:
        hyperparameters = {name: _suggest(trial, name, spec) for name, spec in search_space.items()}
        proba = _out_of_fold_proba(
            features,
            label,
            folds=folds,
            hyperparameters=hyperparameters,
            model_fixed_params=model_fixed_params,
            seed=seed,
        )
        out_of_fold[trial.number] = proba
        return float(average_precision_score(label, proba))

    # Short searches still get TPE-guided trials after a few random ones.
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(10, max(2, automl_max_evals // 2))
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=automl_max_evals)
    best = study.best_trial
    threshold = best_f1_threshold(label, out_of_fold[best.number])
    logger.info(
        "Best of %d trials: CV PR AUC %.4f, F1 threshold %.3f, %s",
        automl_max_evals,
        best.value,
        threshold,
        best.params,
    )
    return dict(best.params), threshold


def train_model(
    train_set: pd.DataFrame,
    best_hyperparameters: dict[str, Any],
    model_fixed_params: dict[str, Any],
    seed: int,
) -> Pipeline:
    """Fit the final Pipeline on the whole train split with the chosen hyper-parameters."""
    features, label = _features_and_label(train_set)
    return _fit(build_model(best_hyperparameters, model_fixed_params, seed), features, label)


# --------------------------------------------------------------------------------------------
# Evaluation and plots
# --------------------------------------------------------------------------------------------


def classification_metrics(
    label: np.ndarray, purchase_proba: np.ndarray, threshold: float
) -> dict[str, float]:
    """Test metrics at ``threshold``, plus the F1 of predicting a purchase for every row."""
    predicted = (purchase_proba >= threshold).astype(int)
    return {
        "f1": float(f1_score(label, predicted, zero_division=0)),
        "precision": float(precision_score(label, predicted, zero_division=0)),
        "recall": float(recall_score(label, predicted, zero_division=0)),
        "roc_auc": float(roc_auc_score(label, purchase_proba)),
        "pr_auc": float(average_precision_score(label, purchase_proba)),
        "baseline_f1": float(f1_score(label, np.ones_like(label), zero_division=0)),
    }


def evaluate_model(
    model: Pipeline, test_set: pd.DataFrame, decision_threshold: float
) -> dict[str, float]:
    """Metrics of the fitted model on the test split at the decision threshold."""
    features, label = _features_and_label(test_set)
    return classification_metrics(label, model.predict_proba(features)[:, 1], decision_threshold)


def _pr_curve_figure(label: np.ndarray, purchase_proba: np.ndarray, threshold: float) -> Figure:
    precision, recall, _ = precision_recall_curve(label, purchase_proba)
    predicted = purchase_proba >= threshold
    figure = Figure(figsize=(6, 5))
    axes = figure.subplots()
    axes.plot(
        recall,
        precision,
        label=f"model (PR AUC {average_precision_score(label, purchase_proba):.3f})",
    )
    axes.axhline(label.mean(), linestyle="--", color="grey", label="all-positive baseline")
    axes.scatter(
        [recall_score(label, predicted, zero_division=0)],
        [precision_score(label, predicted, zero_division=0)],
        color="red",
        zorder=3,
        label=f"decision threshold {threshold:.3f}",
    )
    axes.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.02),
        title="Precision-recall on the test set",
    )
    axes.legend(loc="lower left")
    figure.tight_layout()
    return figure


def _feature_importance_figure(model: Pipeline) -> Figure:
    booster = model.named_steps["classifier"].booster_
    importance = pd.Series(
        booster.feature_importance(importance_type="gain"), index=booster.feature_name()
    )
    importance = importance.sort_values()
    figure = Figure(figsize=(6, 0.4 * len(importance) + 1.2))
    axes = figure.subplots()
    axes.barh(importance.index, importance.to_numpy())
    axes.set(xlabel="total gain", title="LightGBM feature importance")
    figure.tight_layout()
    return figure


def plot_model_reports(
    model: Pipeline, test_set: pd.DataFrame, decision_threshold: float
) -> dict[str, Figure]:
    """The PR curve on the test split and the feature importance, keyed by PNG file name."""
    features, label = _features_and_label(test_set)
    purchase_proba = model.predict_proba(features)[:, 1]
    pr_curve, importance = PLOT_FILES
    return {
        pr_curve: _pr_curve_figure(label, purchase_proba, decision_threshold),
        importance: _feature_importance_figure(model),
    }


# --------------------------------------------------------------------------------------------
# MLflow logging
# --------------------------------------------------------------------------------------------


def _tracking_uri(local_store_dir: str) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the embedded SQLite store in ``local_store_dir``."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    store = Path(local_store_dir).resolve()
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _local_artifact_root(tracking_uri: str) -> str | None:
    """Artifacts beside a local SQLite store; None lets a server (or MLflow) choose."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///")).resolve()
    return (database.parent / "artifacts").as_uri()


def _experiment_id(name: str, tracking_uri: str) -> str:
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(name, artifact_location=_local_artifact_root(tracking_uri))


def _git(*args: str) -> str:
    """One git value, or "" outside a checkout (or before the first commit)."""
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def _first_env(*names: str) -> str:
    return next((value for name in names if (value := os.environ.get(name, "").strip())), "")


def _lineage_tags(fingerprint: str) -> dict[str, str]:
    tags = {
        "git_commit": _first_env("GIT_COMMIT", "GITHUB_SHA")
        or _git("rev-parse", "HEAD")
        or "unknown",
        "data_fingerprint": fingerprint,
    }
    # GITHUB_HEAD_REF is the source branch of a pull request (GITHUB_REF_NAME is then "<n>/merge").
    if branch := _first_env("GIT_BRANCH", "GITHUB_HEAD_REF", "GITHUB_REF_NAME") or _git(
        "branch", "--show-current"
    ):
        tags["git_branch"] = branch
    return tags


def _pip_requirements() -> list[str]:
    # Pinned explicitly: inferring them makes MLflow load the model in a subprocess (~10 s).
    return [f"{name}=={metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def _log_test_set(test_set: pd.DataFrame) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "test_set.parquet"
        test_set.to_parquet(path, index=False)
        mlflow.log_artifact(str(path), artifact_path="test_set")


def log_training_run(
    model: Pipeline,
    train_set: pd.DataFrame,
    test_set: pd.DataFrame,
    *,
    best_hyperparameters: dict[str, Any],
    decision_threshold: float,
    metrics: dict[str, float],
    plots: dict[str, Figure],
    data_fingerprint: str,
    automl_max_evals: int,
    test_ratio: float,
    seed: int,
    mlflow_settings: dict[str, str],
) -> dict[str, Any]:
    """Log the run to MLflow, register the model last, return the ``training_run.json`` record.

    ``mlflow_settings`` holds ``experiment_name``, ``registered_model_name`` and
    ``local_store_dir`` (the embedded store used when ``MLFLOW_TRACKING_URI`` is unset). Any
    failure before registration ends the run FAILED with no model version.
    """
    tracking_uri = _tracking_uri(mlflow_settings["local_store_dir"])
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = _experiment_id(mlflow_settings["experiment_name"], tracking_uri)
    model_name = mlflow_settings["registered_model_name"]
    tags = _lineage_tags(data_fingerprint)
    test_features = test_set[FEATURE_COLUMNS]
    signature_sample = test_features.head(200)

    # The run context ends the run FAILED on any exception, FINISHED otherwise.
    with warnings.catch_warnings(), mlflow.start_run(experiment_id=experiment_id, tags=tags) as run:
        # The contract's integer columns have no missing values: MLflow's schema hint does not apply.
        warnings.filterwarnings(
            "ignore", message=".*Integer columns in Python cannot represent missing"
        )
        signature = infer_signature(signature_sample, model.predict_proba(signature_sample))
        mlflow.log_params(
            {
                **best_hyperparameters,
                "automl_max_evals": automl_max_evals,
                "test_ratio": test_ratio,
                "seed": seed,
                "decision_threshold": decision_threshold,
            }
        )
        mlflow.log_metrics(metrics)
        for file_name, figure in plots.items():
            mlflow.log_figure(figure, f"plots/{file_name}")
        _log_test_set(test_set)
        mlflow.log_input(
            mlflow.data.from_pandas(train_set, name="train", targets=LABEL), context="training"
        )
        mlflow.log_input(
            mlflow.data.from_pandas(test_set, name="test", targets=LABEL), context="testing"
        )
        model_info = mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=test_features.head(5),
            pyfunc_predict_fn="predict_proba",
            metadata={"decision_threshold": decision_threshold},
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=_pip_requirements(),
        )
        # Registration comes last, with its tag in the same call: a failure above leaves no version.
        version = mlflow.register_model(
            model_info.model_uri, model_name, tags={"git_commit": tags["git_commit"]}
        )

    record = {
        "run_id": run.info.run_id,
        "model_uri": f"runs:/{run.info.run_id}/model",
        "registered_model_name": model_name,
        "model_version": str(version.version),
        "metrics": metrics,
        "decision_threshold": decision_threshold,
        "data_fingerprint": data_fingerprint,
        "git_commit": tags["git_commit"],
    }
    logger.info(
        "MLflow run %s: %s version %s, test F1 %.3f vs all-positive baseline %.3f (threshold %.3f)",
        record["run_id"],
        model_name,
        record["model_version"],
        metrics["f1"],
        metrics["baseline_f1"],
        decision_threshold,
    )
    return record
