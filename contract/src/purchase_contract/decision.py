"""The decision rule and the classification metrics: one definition for training, gate and API.

``is_purchase`` works on a float and, elementwise, on a NumPy array. The metrics are plain
Python (no NumPy or scikit-learn here) and agree with scikit-learn's ``f1_score``,
``precision_score``, ``recall_score`` (``zero_division=0``), ``roc_auc_score`` and
``average_precision_score`` (contract/tests check it).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import groupby
from typing import Any

METRIC_NAMES = ("f1", "precision", "recall", "roc_auc", "pr_auc", "baseline_f1")


def is_purchase(probability: Any, threshold: float) -> Any:
    """The model predicts a purchase when ``probability >= threshold``."""
    return probability >= threshold


def classification_metrics(
    labels: Iterable[Any], probabilities: Iterable[Any], threshold: float
) -> dict[str, float | None]:
    """F1, precision and recall at ``threshold``; ROC AUC and PR AUC (None with one class);
    and the F1 of predicting a purchase for every row (the baseline a model must beat)."""
    truth = [int(label) for label in labels]
    scores = [float(probability) for probability in probabilities]
    if len(truth) != len(scores):
        raise ValueError(f"{len(truth)} labels but {len(scores)} probabilities")
    if any(label not in (0, 1) for label in truth):
        raise ValueError("labels must be 0 or 1")
    positives = sum(truth)
    negatives = len(truth) - positives
    predicted = [is_purchase(score, threshold) for score in scores]
    true_pos = sum(1 for label, hit in zip(truth, predicted, strict=True) if hit and label)
    false_pos = sum(1 for label, hit in zip(truth, predicted, strict=True) if hit and not label)
    false_neg = positives - true_pos
    return {
        "f1": _f1(true_pos, false_pos, false_neg),
        "precision": _ratio(true_pos, true_pos + false_pos),
        "recall": _ratio(true_pos, positives),
        "roc_auc": _roc_auc(truth, scores, positives, negatives),
        "pr_auc": _average_precision(truth, scores, positives),
        "baseline_f1": _f1(positives, negatives, 0),
    }


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def _f1(true_pos: int, false_pos: int, false_neg: int) -> float:
    return _ratio(2 * true_pos, 2 * true_pos + false_pos + false_neg)


def _roc_auc(truth: list[int], scores: list[float], positives: int, negatives: int) -> float | None:
    """Mann-Whitney U over mid-ranks: the trapezoidal area under the ROC curve."""
    if not positives or not negatives:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__)
    rank_sum = 0.0
    start = 0
    for _, tied in groupby(order, key=scores.__getitem__):
        members = list(tied)
        mid_rank = start + (len(members) + 1) / 2
        rank_sum += mid_rank * sum(truth[i] for i in members)
        start += len(members)
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def _average_precision(truth: list[int], scores: list[float], positives: int) -> float | None:
    """Sum over distinct thresholds, highest first, of (recall gained) x precision there."""
    if not positives:
        return None
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    true_pos = seen = 0
    area = 0.0
    for _, tied in groupby(order, key=scores.__getitem__):
        members = list(tied)
        gained = sum(truth[i] for i in members)
        true_pos += gained
        seen += len(members)
        area += (gained / positives) * (true_pos / seen)
    return area
