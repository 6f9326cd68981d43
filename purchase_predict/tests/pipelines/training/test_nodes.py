"""Training nodes on small hand-made frames: split, search, fit, evaluation, plots."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn import metrics as sk
from sklearn.pipeline import Pipeline

from purchase_contract.decision import METRIC_NAMES, classification_metrics, is_purchase
from purchase_contract.features import FEATURE_NAMES, LABEL, NUMERIC_FEATURES
from purchase_predict.pipelines.training.nodes import (
    PLOT_FILES,
    best_f1_threshold,
    data_fingerprint,
    evaluate_model,
    plot_model_reports,
    search_hyperparameters,
    split_train_test,
    train_model,
)

SEARCH_SPACE = {
    "learning_rate": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
    "n_estimators": {"type": "int", "low": 20, "high": 60, "step": 20},
    "num_leaves": {"type": "int", "low": 4, "high": 16},
    "subsample": {"type": "float", "low": 0.6, "high": 1.0},
}
FIXED_PARAMS = {"subsample_freq": 1, "n_jobs": 1, "verbose": -1}
FEATURE_COLUMNS = list(FEATURE_NAMES)


def _labelled_primary(make_primary: Callable[..., pd.DataFrame], labels: list[int]) -> pd.DataFrame:
    """Synthetic primary rows with the given labels, in order."""
    primary = make_primary(len(labels), seed=3)
    primary[LABEL] = np.array(labels, dtype="int8")
    return primary


@pytest.fixture(scope="module")
def fitted(
    make_primary: Callable[..., pd.DataFrame],
) -> tuple[Pipeline, pd.DataFrame, pd.DataFrame]:
    """A small model fitted on 600 synthetic rows, with its train and test splits."""
    train_set, test_set = split_train_test(make_primary(600, seed=11), 0.25, 5)
    hyperparameters = {"n_estimators": 40, "num_leaves": 8, "learning_rate": 0.1}
    return train_model(train_set, hyperparameters, FIXED_PARAMS, 5), train_set, test_set


def test_split_is_stratified_with_exact_ratio(make_primary: Callable[..., pd.DataFrame]) -> None:
    primary = _labelled_primary(make_primary, [1] * 30 + [0] * 70)

    train_set, test_set = split_train_test(primary, test_ratio=0.2, seed=1)

    assert (len(train_set), len(test_set)) == (80, 20)
    assert (train_set[LABEL].sum(), test_set[LABEL].sum()) == (24, 6)
    assert list(test_set.columns) == [*FEATURE_COLUMNS, LABEL]
    # Every primary row lands in exactly one split (durations are distinct floats here).
    assert primary["duration"].is_unique
    assert sorted([*train_set["duration"], *test_set["duration"]]) == sorted(primary["duration"])


def test_split_is_seeded_and_ignores_row_order(make_primary: Callable[..., pd.DataFrame]) -> None:
    primary = _labelled_primary(make_primary, [1, 0, 0] * 20)
    shuffled = primary.sample(frac=1.0, random_state=9)

    _, test_set = split_train_test(primary, 0.25, seed=4)
    _, test_again = split_train_test(shuffled, 0.25, seed=4)
    _, other_seed = split_train_test(primary, 0.25, seed=5)

    pd.testing.assert_frame_equal(test_set, test_again)
    assert not test_set.equals(other_seed)


def test_split_casts_categories_with_missing_values_to_nan(
    make_primary: Callable[..., pd.DataFrame],
) -> None:
    primary = _labelled_primary(make_primary, [1, 0] * 10)
    primary["brand"] = pd.array([None, pd.NA, *["acme"] * 18], dtype="string")

    train_set, test_set = split_train_test(primary, 0.5, seed=0)

    brands = pd.concat([train_set["brand"], test_set["brand"]])
    assert brands.dtype == object
    assert brands.isna().sum() == 2
    # NaN, not None or pd.NA: the only missing marker OrdinalEncoder accepts when fitting.
    assert all(isinstance(value, str) or np.isnan(value) for value in brands)


def test_split_rejects_a_single_class_label(make_primary: Callable[..., pd.DataFrame]) -> None:
    primary = _labelled_primary(make_primary, [0] * 50)

    with pytest.raises(
        ValueError, match=r"column 'purchased' has a single class \(0 in all 50 rows\)"
    ):
        split_train_test(primary, 0.2, seed=1)


@pytest.mark.parametrize(
    ("labels", "test_ratio", "message"),
    [
        ([1] + [0] * 30, 0.2, r"too few rows: column 'purchased'=1 occurs 1 time"),
        ([1, 1] + [0] * 8, 0.1, r"too few rows: 10 rows with test_ratio=0.1 leave a split"),
        ([1, 1] + [0] * 18, 0.1, r"too few rows: the test split of 20 rows .* single 'purchased'"),
    ],
)
def test_split_rejects_too_few_rows(
    make_primary: Callable[..., pd.DataFrame], labels: list[int], test_ratio: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        split_train_test(_labelled_primary(make_primary, labels), test_ratio, seed=1)


def test_split_rejects_an_empty_primary_table(make_primary: Callable[..., pd.DataFrame]) -> None:
    empty = make_primary(20).iloc[0:0]

    with pytest.raises(ValueError, match=r"no rows: no carted product .*, nothing to learn"):
        split_train_test(empty, 0.2, seed=1)


def test_split_names_a_missing_column(make_primary: Callable[..., pd.DataFrame]) -> None:
    primary = make_primary(20).drop(columns=["duration"])

    with pytest.raises(ValueError, match=r"primary table is missing columns \['duration'\]"):
        split_train_test(primary, 0.2, seed=1)


def test_split_rejects_labels_other_than_zero_and_one(
    make_primary: Callable[..., pd.DataFrame],
) -> None:
    primary = _labelled_primary(make_primary, [0, 1, 2] * 5)

    with pytest.raises(ValueError, match="column 'purchased' must hold only 0 and 1"):
        split_train_test(primary, 0.2, seed=1)


def test_fingerprint_depends_on_content_not_row_order(
    make_primary: Callable[..., pd.DataFrame],
) -> None:
    primary = make_primary(50)
    changed = primary.copy()
    changed.loc[3, "price"] += 0.01

    fingerprint = data_fingerprint(primary)

    assert len(fingerprint) == 64
    assert int(fingerprint, 16) >= 0
    assert data_fingerprint(primary.sample(frac=1.0, random_state=2)) == fingerprint
    assert data_fingerprint(changed) != fingerprint


def test_best_f1_threshold_on_a_hand_computed_example() -> None:
    # Thresholds 0.8, 0.4, 0.35, 0.1 give F1 2/3, 1/2, 4/5, 2/3: the best is 0.35.
    label = np.array([0, 0, 1, 1])
    proba = np.array([0.1, 0.4, 0.35, 0.8])

    assert best_f1_threshold(label, proba) == 0.35


def test_search_returns_params_inside_the_space_and_a_threshold(
    make_primary: Callable[..., pd.DataFrame],
) -> None:
    train_set, _ = split_train_test(make_primary(400, seed=2), 0.2, seed=0)
    search = {
        "search_space": SEARCH_SPACE,
        "model_fixed_params": FIXED_PARAMS,
        "automl_max_evals": 3,
        "cv_folds": 3,
        "seed": 0,
    }

    best, threshold = search_hyperparameters(train_set, **search)
    again, same_threshold = search_hyperparameters(train_set, **search)

    assert set(best) == set(SEARCH_SPACE)
    assert 0.05 <= best["learning_rate"] <= 0.3
    assert best["n_estimators"] in {20, 40, 60}
    assert isinstance(best["num_leaves"], int)
    assert 4 <= best["num_leaves"] <= 16
    assert 0.6 <= best["subsample"] <= 1.0
    assert 0 < threshold < 1
    assert (again, same_threshold) == (best, threshold)


@pytest.mark.parametrize(
    ("space", "folds", "message"),
    [
        (
            {"max_depth": {"type": "str", "low": 1, "high": 2}},
            3,
            "search_space.max_depth: type must be",
        ),
        (SEARCH_SPACE, 1, "cv_folds must be at least 2, got 1"),
        (SEARCH_SPACE, 40, "rarer 'purchased' class, cv_folds=40 needs"),
    ],
)
def test_search_rejects_bad_settings(
    make_primary: Callable[..., pd.DataFrame], space: dict, folds: int, message: str
) -> None:
    train_set = _labelled_primary(make_primary, [1] * 10 + [0] * 30)
    train_set, _ = split_train_test(train_set, 0.25, seed=0)

    with pytest.raises(ValueError, match=message):
        search_hyperparameters(
            train_set,
            search_space=space,
            model_fixed_params=FIXED_PARAMS,
            automl_max_evals=1,
            cv_folds=folds,
            seed=0,
        )


def test_model_takes_raw_frames_with_unseen_and_missing_categories(
    fitted: tuple[Pipeline, pd.DataFrame, pd.DataFrame],
) -> None:
    model, _, test_set = fitted
    raw = test_set[FEATURE_COLUMNS].head(4).copy()
    unseen = raw.assign(brand="never-seen-brand", category="toys", sub_category="lego")
    # The missing-value markers a caller may send: pd.NA, None, NaN in a text column.
    missing = raw.assign(
        brand=pd.array([None] * 4, dtype="string"),
        category=pd.Series([None] * 4, dtype=object, index=raw.index),
        sub_category=pd.Series([np.nan] * 4, dtype="str", index=raw.index),
    )

    proba_unseen = model.predict_proba(unseen)
    proba_missing = model.predict_proba(missing)

    assert proba_unseen.shape == (4, 2)
    assert ((proba_unseen >= 0) & (proba_unseen <= 1)).all()
    np.testing.assert_allclose(proba_unseen.sum(axis=1), 1.0)
    # Unknown and missing categories are both encoded as NaN, so they score the same.
    np.testing.assert_allclose(proba_unseen, proba_missing)


def test_model_ignores_product_id_and_extra_columns(
    fitted: tuple[Pipeline, pd.DataFrame, pd.DataFrame],
) -> None:
    model, _, test_set = fitted
    raw = test_set[FEATURE_COLUMNS].head(5)
    other = raw.assign(product_id=raw["product_id"] + 1, user_id=1)

    np.testing.assert_array_equal(model.predict_proba(raw), model.predict_proba(other))
    assert list(model.named_steps["classifier"].feature_name_) == [
        "brand",
        "category",
        "sub_category",
        *NUMERIC_FEATURES,
    ]


# scikit-learn's value of each metric, from the labels, the scores and the predicted labels.
SKLEARN_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], float]] = {
    "f1": lambda y, _, predicted: sk.f1_score(y, predicted, zero_division=0),
    "precision": lambda y, _, predicted: sk.precision_score(y, predicted, zero_division=0),
    "recall": lambda y, _, predicted: sk.recall_score(y, predicted, zero_division=0),
    "roc_auc": lambda y, proba, _: sk.roc_auc_score(y, proba),
    "pr_auc": lambda y, proba, _: sk.average_precision_score(y, proba),
    "baseline_f1": lambda y, _, __: sk.f1_score(y, np.ones_like(y), zero_division=0),
}


@pytest.mark.parametrize("metric", SKLEARN_METRICS)
def test_evaluate_model_logs_the_metric_scikit_learn_gave(
    fitted: tuple[Pipeline, pd.DataFrame, pd.DataFrame], metric: str
) -> None:
    # The node used to compute these with scikit-learn: the contract's must give the same values.
    model, _, test_set = fitted
    label = test_set[LABEL].to_numpy()
    proba = model.predict_proba(test_set[FEATURE_COLUMNS])[:, 1]
    predicted = is_purchase(proba, 0.4).astype(int)

    metrics = evaluate_model(model, test_set, 0.4)

    assert tuple(metrics) == METRIC_NAMES
    assert tuple(SKLEARN_METRICS) == METRIC_NAMES
    sklearn_value = SKLEARN_METRICS[metric](label, proba, predicted)
    assert metrics[metric] == pytest.approx(sklearn_value, rel=1e-12)


def test_evaluate_model_scores_the_test_split(
    fitted: tuple[Pipeline, pd.DataFrame, pd.DataFrame],
) -> None:
    model, _, test_set = fitted
    proba = model.predict_proba(test_set[FEATURE_COLUMNS])[:, 1]

    metrics = evaluate_model(model, test_set, 0.4)

    assert metrics == classification_metrics(test_set[LABEL].to_numpy(), proba, 0.4)
    assert metrics["roc_auc"] > 0.7


def test_plots_are_png_ready_figures(fitted: tuple[Pipeline, pd.DataFrame, pd.DataFrame]) -> None:
    model, _, test_set = fitted

    plots = plot_model_reports(model, test_set, 0.4)

    assert tuple(plots) == PLOT_FILES
    pr_axes = plots["pr_curve.png"].axes[0]
    assert (pr_axes.get_xlabel(), pr_axes.get_ylabel()) == ("recall", "precision")
    bars = [label.get_text() for label in plots["feature_importance.png"].axes[0].get_yticklabels()]
    assert sorted(bars) == sorted(["brand", "category", "sub_category", *NUMERIC_FEATURES])
    for figure in plots.values():
        assert isinstance(figure, Figure)
        png = io.BytesIO()
        figure.savefig(png, format="png")
        assert png.getvalue().startswith(b"\x89PNG")
