"""The compiled form of the training pipeline: ``predict_proba`` without scikit-learn.

Written at image build next to the model (``COMPILED_FILE``) when the estimator is the training
pipeline, and checked there against ``predict_proba`` on sessions covering known, unknown and
missing categories; a start then needs neither scikit-learn nor pandas.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from app.model.frame import sessions_frame
from app.models import SESSION_EXAMPLE, Session, validate_session
from purchase_contract.features import FEATURE_DTYPES

logger = logging.getLogger(__name__)


class CompiledPipeline:
    """``predict_proba`` of the training pipeline without scikit-learn's per-call overhead.

    The training pipeline is ``Pipeline([ColumnTransformer([OrdinalEncoder(categoricals),
    passthrough(numbers)], remainder="drop"), LGBMClassifier])``. Per call, scikit-learn
    validates, builds frames and dispatches through each step: about 4 ms for one session,
    against 0.03 ms for the LightGBM booster itself. Compiled, the encoder becomes one dict
    lookup per categorical value and the sessions go straight into a float matrix for the
    booster. :meth:`compile` accepts exactly that structure and nothing else, and the result is
    checked against ``predict_proba`` at load (:func:`compile_checked`), so any other model
    simply keeps the scikit-learn path.
    """

    def __init__(
        self,
        categorical: list[tuple[str, dict[Any, float]]],
        numeric: list[str],
        booster: Any,
        num_iteration: int = 0,
    ) -> None:
        self.categorical = categorical
        self.numeric = numeric
        self.booster = booster  # lightgbm.Booster or app.model.native.NativeBooster
        self.num_iteration = num_iteration
        self.width = len(categorical) + len(numeric)
        self._numbers = (
            itemgetter(*numeric) if len(numeric) > 1 else lambda s: tuple(s[n] for n in numeric)
        )
        # The trees compiled to machine code (app.model.trees.CompiledTrees), once verified.
        self.trees: Any = None

    def trees_text(self) -> str:
        """The booster's text model cut at the iteration served: what the trees compile from."""
        return self.booster.model_to_string(num_iteration=self.num_iteration or -1)

    def save(self, path: Path) -> None:
        """The compiled form as JSON: code tables, numeric columns, the booster's text model."""
        document = {
            "format": 1,
            "categorical": [[name, codes] for name, codes in self.categorical],
            "numeric": self.numeric,
            "num_iteration": self.num_iteration,
            "booster": self.booster.model_to_string(),
        }
        path.write_text(json.dumps(document), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CompiledPipeline:
        """Read :meth:`save`'s file; the booster runs on lib_lightgbm directly (no sklearn)."""
        from app.model.native import NativeBooster  # noqa: PLC0415

        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != 1:
            raise ValueError(f"unknown format {document.get('format')!r}")
        booster = NativeBooster(document["booster"], document["num_iteration"])
        categorical = [(str(name), dict(codes)) for name, codes in document["categorical"]]
        compiled = cls(categorical, list(document["numeric"]), booster, document["num_iteration"])
        if compiled.width != booster.num_feature():
            raise ValueError(f"{compiled.width} columns for {booster.num_feature()} features")
        return compiled

    @classmethod
    def compile(cls, estimator: Any) -> CompiledPipeline | None:
        """The compiled form of ``estimator``, or None when it is not the training pipeline."""
        steps = getattr(estimator, "steps", None)
        if not isinstance(steps, list) or len(steps) != 2:
            return None
        columns, classifier = steps[0][1], steps[1][1]
        booster = getattr(classifier, "booster_", None)
        if type(classifier).__name__ != "LGBMClassifier" or booster is None:
            return None
        plan = _column_plan(columns)
        if plan is None:
            return None
        categorical, numeric = plan
        names = [n for n, _ in categorical] + numeric
        if len(names) != booster.num_feature() or any(n not in FEATURE_DTYPES for n in names):
            return None
        return cls(categorical, numeric, booster, max(0, int(booster.best_iteration or 0)))

    def predict(self, sessions: Sequence[Session]) -> np.ndarray:
        """Purchase probabilities: one float matrix, one booster call."""
        # Small requests: one thread (no OpenMP start-up); big batches: every core.
        return self._evaluate(self._matrix(sessions), 1 if len(sessions) < 1000 else 0)

    def predict_chunks(self, chunks: Iterable[Sequence[Session]]) -> np.ndarray:
        """:meth:`predict` of every chunk's sessions, in order, as the chunks are produced.

        With compiled trees and two CPUs or more, the trees of each chunk run on a C thread of
        their own (app.model.trees) while the caller produces the next chunk: a batch's
        validation and its trees overlap. (Python threads did not: the one evaluating a chunk
        waited for the GIL at every start and end, and the batch got slower.) An exception from
        ``chunks`` propagates once the trees already started are done.
        """
        chunks = iter(chunks)
        first = list(next(chunks, ()))
        second = next(chunks, None)
        if second is None or not self._overlaps():  # nothing to overlap with
            rest = [] if second is None else [*second, *(s for chunk in chunks for s in chunk)]
            return self.predict(first + rest)
        return self.trees.predict_chunks(map(self._matrix, chain([first, second], chunks)))

    def _overlaps(self) -> bool:
        """Whether the trees can run beside the caller: compiled, asynchronous, two CPUs."""
        return (
            self.trees is not None
            and getattr(self.trees, "asynchronous", False)
            and len(os.sched_getaffinity(0)) > 1
        )

    def _matrix(self, sessions: Sequence[Session]) -> np.ndarray:
        """The booster's float matrix: the categorical codes, then the numbers."""
        rows, nan = len(sessions), np.nan
        if rows == 1:  # a single session: one list, one array (a third of the time)
            [session] = sessions
            codes = [codes.get(session.get(name), nan) for name, codes in self.categorical]
            return np.array([[*codes, *self._numbers(session)]], dtype=np.float64)
        matrix = np.empty((rows, self.width), dtype=np.float64)
        for column, (name, codes) in enumerate(self.categorical):
            # Absent, null, "" and values training never saw: all NaN (unknown) to the model.
            code = codes.get
            matrix[:, column] = np.fromiter([code(s.get(name), nan) for s in sessions], float, rows)
        # The numbers row by row, in one pass: a column at a time took twice as long.
        numbers = chain.from_iterable(map(self._numbers, sessions))
        matrix[:, len(self.categorical) :] = np.fromiter(
            numbers, float, rows * len(self.numeric)
        ).reshape(rows, len(self.numeric))
        return matrix

    def _evaluate(self, matrix: np.ndarray, threads: int) -> np.ndarray:
        if self.trees is not None:
            return self.trees.predict(matrix, num_threads=threads)
        if self.num_iteration > 0:
            return self.booster.predict(
                matrix, num_iteration=self.num_iteration, num_threads=threads
            )
        return self.booster.predict(matrix, num_threads=threads)


def _column_plan(columns: Any) -> tuple[list[tuple[str, dict[Any, float]]], list[str]] | None:
    """Categorical code tables and numeric columns of the ColumnTransformer, in output order.

    None unless it is ordinal encoders (unknown and missing -> NaN) followed by pass-throughs.
    """
    if type(columns).__name__ != "ColumnTransformer":
        return None
    categorical: list[tuple[str, dict[Any, float]]] = []
    numeric: list[str] = []
    for _name, transformer, names in getattr(columns, "transformers_", []):
        kind = type(transformer).__name__
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if (isinstance(transformer, str) and transformer == "passthrough") or (
            kind == "FunctionTransformer" and getattr(transformer, "func", 0) is None
        ):
            numeric.extend(str(n) for n in names)
        elif kind == "OrdinalEncoder" and not numeric and _nan_for_unknown(transformer):
            for name, values in zip(names, transformer.categories_, strict=True):
                # "" is a missing value to the API (as in the data contract), never a code.
                codes = {
                    value: float(code)
                    for code, value in enumerate(values.tolist())
                    if not (isinstance(value, float) and np.isnan(value)) and value != ""
                }
                categorical.append((str(name), codes))
        else:
            return None
    return categorical, numeric


def _nan_for_unknown(encoder: Any) -> bool:
    unknown = getattr(encoder, "unknown_value", None)
    missing = getattr(encoder, "encoded_missing_value", None)
    return (
        getattr(encoder, "handle_unknown", "") == "use_encoded_value"
        and isinstance(unknown, float)
        and np.isnan(unknown)
        and isinstance(missing, float)
        and np.isnan(missing)
    )


def _check_sessions() -> list[Session]:
    """Sessions covering known, unknown and missing categories and a spread of numbers."""
    variants = [
        {},
        {"brand": None, "category": None, "sub_category": None},
        {"brand": "no-such-brand", "category": "no-such-category", "sub_category": "x"},
        {"price": 0.0, "duration": 0.0, "num_views_session": 0, "num_views_product": 0},
        {"price": 12_345.0, "hour": 23, "minute": 59, "weekday": 6, "num_prev_sessions": 50},
    ]
    return [validate_session({**SESSION_EXAMPLE, **v}) for v in variants]


# Largest difference between the compiled form's answer and predict_proba's on the same row.
SAME_ANSWER_ATOL = 1e-9


def check_answers(estimator: Any) -> list[float]:
    """``predict_proba``'s answers on the check sessions: recorded when the compiled form is
    written, compared with the compiled form's own at every start."""
    sessions = _check_sessions()
    return [float(p) for p in estimator.predict_proba(sessions_frame(sessions))[:, 1]]


def disagreement(
    compiled: CompiledPipeline,
    expected: Sequence[float],
    sessions: Sequence[Session] | None = None,
    atol: float = SAME_ANSWER_ATOL,
) -> str:
    """Why ``compiled`` does not answer ``expected`` on ``sessions`` (the check sessions by
    default), or "" when every answer is within ``atol``."""
    sessions = _check_sessions() if sessions is None else sessions
    if len(expected) != len(sessions):
        return f"{len(expected)} stored answers for {len(sessions)} sessions"
    gaps = np.abs(compiled.predict(sessions) - np.asarray(expected, dtype=np.float64))
    gaps = np.where(np.isnan(gaps), np.inf, gaps)  # NaN answers never agree
    wrong = int(np.count_nonzero(gaps > atol))
    if not wrong:
        return ""
    return (
        f"{wrong} of {len(sessions)} answers differ from the stored ones (largest gap "
        f"{float(gaps.max()):.3g}, allowed {atol:g})"
    )


def same_answers(compiled: CompiledPipeline, estimator: Any) -> bool:
    return not disagreement(compiled, check_answers(estimator))


def compile_checked(estimator: Any) -> CompiledPipeline | None:
    """The compiled pipeline when it gives ``predict_proba``'s answers, else None (logged)."""
    try:
        compiled = CompiledPipeline.compile(estimator)
        if compiled is None:
            logger.info("model served through scikit-learn (no compiled form for its structure)")
            return None
        if not same_answers(compiled, estimator):
            logger.warning("model not compiled: it disagrees with predict_proba")
            return None
    except Exception as err:  # the scikit-learn path stays available
        logger.warning("model not compiled: %s: %s", type(err).__name__, err)
        return None
    return compiled
