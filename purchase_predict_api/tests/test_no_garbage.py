"""A prediction leaves no reference cycle behind.

The API tunes the collector for latency (app/main.py: the young generation is collected every
100,000 allocations), so a cycle made per request is freed late: numpy's ``ndarray.ctypes.
data_as`` ties the array into a cycle with its pointer, and under the soak (``nox -s soak``)
the matrices and answers of 20,000 requests piled up, resident memory climbing 15 % before a
collection freed them.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.model.loading import load_model_dir
from app.models import validate_session

CALLS = 50


@pytest.fixture
def cyclic_garbage() -> Iterator[Callable[[Callable[[], Any]], list[Any]]]:
    """What ``CALLS`` runs of ``work()`` leave for the cycle collector: nothing of their own
    when all is freed at once (what else the process frees meanwhile may show up: a few)."""

    def collect(work: Callable[[], Any]) -> list[Any]:
        work()  # once before: first calls import and cache (lazily built modules are cycles)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            for _ in range(CALLS):
                work()
            gc.collect()
            return [type(o).__name__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()

    yield collect


@pytest.mark.parametrize("trees", [True, False], ids=["compiled trees", "lib_lightgbm"])
def test_a_prediction_leaves_no_cycle(
    prepared_dir: Path, make_sessions, as_json_records, cyclic_garbage, trees: bool
) -> None:
    model = load_model_dir(prepared_dir, trees=trees)
    assert model.estimator is None  # the compiled form, as the image serves it
    sessions = [validate_session(r) for r in as_json_records(make_sessions(100, 3))]
    for batch in (sessions[:1], sessions):
        garbage = cyclic_garbage(lambda b=batch: model.purchase_probabilities(b))
        assert len(garbage) < CALLS, sorted(set(garbage))  # none per call
