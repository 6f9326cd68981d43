"""Training nodes: split, hyper-parameter search, final fit, evaluation, plots, MLflow logging.

Every node is a pure function of its inputs except ``log_training_run``, whose job is to record
the run in MLflow and register the model. The model is a self-contained scikit-learn
``Pipeline`` (raw feature columns in, purchase probability out) so the API can load it from
MLflow without this package. Columns, the decision rule and the metrics are the contract's
(``purchase_contract``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from typing import Any

import mlflow
import numpy as np
import optuna
import pandas as pd
from lightgbm import LGBMClassifier
from matplotlib.figure import Figure
from sklearn.compose import ColumnTransformer

# The contract has no curve nor a stand-alone average-precision scorer: these stay sklearn's.
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

from purchase_contract.decision import classification_metrics
from purchase_contract.features import (
    CATEGORICAL_FEATURES,
    FEATURE_DTYPES,
    FEATURE_NAMES,
    LABEL,
    NUMERIC_FEATURES,
    PRIMARY_COLUMNS,
    ROW_KEY,
)
from purchase_predict import mlflow_logging
from purchase_predict.lineage import lineage_tags

logger = logging.getLogger(__name__)

# The contract's column lists, as the lists pandas and scikit-learn index with (a tuple is one key).
_FEATURES = list(FEATURE_NAMES)
_CATEGORICAL = list(CATEGORICAL_FEATURES)
_NUMERIC = list(NUMERIC_FEATURES)
_PRIMARY = list(PRIMARY_COLUMNS)
_ROW_KEY = list(ROW_KEY)
PLOT_FILES = ("pr_curve.png", "feature_importance.png")


# --------------------------------------------------------------------------------------------
# Split and fingerprint
# --------------------------------------------------------------------------------------------


def _check_primary_columns(primary: pd.DataFrame) -> None:
    missing = [column for column in _PRIMARY if column not in primary.columns]
    if missing:
        raise ValueError(f"primary table is missing columns {missing}")


def _canonical(primary: pd.DataFrame) -> pd.DataFrame:
    """Contract columns in contract order, rows sorted by the key (the source order may vary)."""
    _check_primary_columns(primary)
    return primary[_PRIMARY].sort_values(_ROW_KEY, kind="mergesort").reset_index(drop=True)


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

    Raises ``ValueError`` when the table is empty, the label is not 0/1, has a single class, or
    a split would miss a class (too few rows).
    """
    if not 0 < test_ratio < 1:
        raise ValueError(f"test_ratio must be between 0 and 1 (exclusive), got {test_ratio}")
    rows = _canonical(primary)
    if rows.empty:
        # validate_events refuses events without a cart; carts that cannot be placed remain.
        raise ValueError(
            "primary table has no rows: no carted product in the events, nothing to learn"
        )
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
    return rows[_FEATURES], rows[LABEL].to_numpy()


def build_model(
    hyperparameters: dict[str, Any], model_fixed_params: dict[str, Any], seed: int
) -> Pipeline:
    """Unfitted Pipeline: OrdinalEncoder for the categories (unknown/missing -> NaN), LightGBM."""
    encoder = OrdinalEncoder(
        handle_unknown="use_encoded_value", unknown_value=np.nan, encoded_missing_value=np.nan
    )
    columns = ColumnTransformer(
        [
            ("categories", encoder, _CATEGORICAL),
            ("numbers", "passthrough", _NUMERIC),
        ],
        remainder="drop",
        verbose_feature_names_out=False,
    ).set_output(transform="pandas")
    classifier = LGBMClassifier(random_state=seed, **{**model_fixed_params, **hyperparameters})
    return Pipeline([("columns", columns), ("classifier", classifier)])


def _fit(model: Pipeline, features: pd.DataFrame, label: np.ndarray) -> Pipeline:
    # The encoded category columns are LightGBM categorical features, not ordered numbers.
    return model.fit(features, label, classifier__categorical_feature=_CATEGORICAL)


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


def evaluate_model(
    model: Pipeline, test_set: pd.DataFrame, decision_threshold: float
) -> dict[str, float]:
    """The contract's metrics of the fitted model on the test split at the decision threshold.

    Both classes are in the test split (``split_train_test`` makes sure), so no metric is None.
    """
    features, label = _features_and_label(test_set)
    return classification_metrics(label, model.predict_proba(features)[:, 1], decision_threshold)


def _pr_curve_figure(label: np.ndarray, purchase_proba: np.ndarray, threshold: float) -> Figure:
    precision, recall, _ = precision_recall_curve(label, purchase_proba)
    at_threshold = classification_metrics(label, purchase_proba, threshold)
    figure = Figure(figsize=(6, 5))
    axes = figure.subplots()
    axes.plot(recall, precision, label=f"model (PR AUC {at_threshold['pr_auc']:.3f})")
    axes.axhline(label.mean(), linestyle="--", color="grey", label="all-positive baseline")
    axes.scatter(
        [at_threshold["recall"]],
        [at_threshold["precision"]],
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
# MLflow logging (purchase_predict.mlflow_logging does the MLflow calls)
# --------------------------------------------------------------------------------------------


def run_params(
    best_hyperparameters: dict[str, Any],
    decision_threshold: float,
    automl_max_evals: int,
    test_ratio: float,
    seed: int,
) -> dict[str, Any]:
    """The params the run logs: the chosen hyper-parameters, the search and split settings and
    the decision threshold."""
    return {
        **best_hyperparameters,
        "automl_max_evals": automl_max_evals,
        "test_ratio": test_ratio,
        "seed": seed,
        "decision_threshold": decision_threshold,
    }


def log_training_run(
    model: Pipeline,
    train_set: pd.DataFrame,
    test_set: pd.DataFrame,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    plots: dict[str, Figure],
    data_fingerprint: str,
    mlflow_settings: dict[str, str],
) -> dict[str, Any]:
    """Log the run to MLflow, register the model last, return the ``training_run.json`` record.

    ``params`` come from ``run_params`` (the decision threshold among them);
    ``mlflow_settings`` holds ``experiment_name`` and ``registered_model_name``. The store is
    ``$MLFLOW_TRACKING_URI``, else the contract's embedded one. Any failure before registration
    ends the run FAILED with no model version.
    """
    uri = mlflow_logging.use_tracking_store()
    experiment = mlflow_logging.experiment_id(mlflow_settings["experiment_name"], uri)
    model_name = mlflow_settings["registered_model_name"]
    tags = lineage_tags(data_fingerprint)
    decision_threshold = params["decision_threshold"]
    content = mlflow_logging.RunContent(params, metrics, plots, train_set, test_set)
    with mlflow_logging.training_run(experiment, tags) as run:
        mlflow_logging.log_run_content(content)
        model_info = mlflow_logging.log_model(model, test_set, decision_threshold)
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
