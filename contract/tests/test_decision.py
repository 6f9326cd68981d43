"""The contract's metrics agree with scikit-learn's, ties and edge cases included."""

from __future__ import annotations

import random

import pytest

from purchase_contract.decision import METRIC_NAMES, classification_metrics, is_purchase

sklearn_metrics = pytest.importorskip("sklearn.metrics")
np = pytest.importorskip("numpy")


def _sklearn(labels: list[int], scores: list[float], threshold: float) -> dict[str, float]:
    y, p = np.array(labels), np.array(scores)
    predicted = (p >= threshold).astype(int)
    return {
        "f1": sklearn_metrics.f1_score(y, predicted, zero_division=0),
        "precision": sklearn_metrics.precision_score(y, predicted, zero_division=0),
        "recall": sklearn_metrics.recall_score(y, predicted, zero_division=0),
        "roc_auc": sklearn_metrics.roc_auc_score(y, p),
        "pr_auc": sklearn_metrics.average_precision_score(y, p),
        "baseline_f1": sklearn_metrics.f1_score(y, np.ones_like(y), zero_division=0),
    }


@pytest.mark.parametrize("seed", range(12))
def test_metrics_match_scikit_learn(seed: int) -> None:
    rng = random.Random(seed)
    rows = rng.randint(4, 400)
    labels = [rng.random() < rng.uniform(0.05, 0.8) for _ in range(rows)]
    labels[0], labels[1] = True, False  # both classes
    # Coarse scores make many ties, the case the rank formulas must get right.
    grid = rng.choice([5, 20, 1000])
    scores = [round(rng.random() * grid) / grid for _ in range(rows)]
    threshold = rng.choice([0.0, 0.3, 0.5, 0.97, 1.0])
    ours = classification_metrics(labels, scores, threshold)
    theirs = _sklearn([int(x) for x in labels], scores, threshold)
    assert list(ours) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        assert ours[name] == pytest.approx(theirs[name], abs=1e-12), name


def test_numpy_inputs_and_the_rule_elementwise() -> None:
    labels = np.array([1, 0, 1, 0])
    proba = np.array([0.9, 0.4, 0.5, 0.6])
    assert is_purchase(proba, 0.5).tolist() == [True, False, True, True]
    assert is_purchase(0.5, 0.5) is True
    metrics = classification_metrics(labels, proba, 0.5)
    assert metrics["precision"] == pytest.approx(2 / 3)
    assert metrics["recall"] == 1.0


def test_one_class_has_no_ranking_metrics() -> None:
    metrics = classification_metrics([0, 0, 0], [0.1, 0.2, 0.9], 0.5)
    assert metrics["roc_auc"] is None
    assert metrics["pr_auc"] is None
    assert metrics["f1"] == 0.0


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [([1, 0], [0.5], "2 labels but 1 probabilities"), ([2, 0], [0.1, 0.2], "0 or 1")],
)
def test_bad_input_is_refused(labels: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        classification_metrics(labels, scores, 0.5)
