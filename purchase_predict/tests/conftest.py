"""Shared fixtures: an isolated MLflow per test and a synthetic primary table with real signal."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from purchase_contract.features import FEATURE_NAMES
from purchase_contract.testing import isolated_mlflow as mlflow_isolation

BRANDS = ["acme", "globex", "initech", "umbrella", "hooli"]
CATEGORIES = {
    "electronics": ["smartphone", "headphone", "tv"],
    "appliances": ["kitchen", "vacuum"],
    "computers": ["notebook", "desktop"],
}


@pytest.fixture(autouse=True)
def isolated_mlflow(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MLFLOW_* variable or tracking URI leaks into or out of a test; no run stays active."""
    with mlflow_isolation(monkeypatch):
        yield


@pytest.fixture(scope="module")
def module_monkeypatch() -> Iterator[pytest.MonkeyPatch]:
    """A MonkeyPatch for module-scoped fixtures, with MLflow isolated like ``isolated_mlflow``."""
    with pytest.MonkeyPatch.context() as monkeypatch, mlflow_isolation(monkeypatch):
        yield monkeypatch


@pytest.fixture
def tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A SQLite MLflow store in tmp_path, announced the way CI does: ``MLFLOW_TRACKING_URI``."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def _sigmoid(values: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-values))


def build_primary(n_rows: int, seed: int = 0) -> pd.DataFrame:
    """Primary-table rows of the data contract whose ``purchased`` label depends on the features.

    Purchases are likelier after repeated views of the product, for returning users, for cheap
    items, during long sessions and for the ``acme`` brand; about a third of rows are purchases.
    """
    rng = np.random.default_rng(seed)
    category = rng.choice(list(CATEGORIES), n_rows)
    sub_category = np.array([rng.choice(CATEGORIES[c]) for c in category], dtype=object)
    brand = rng.choice(BRANDS, n_rows).astype(object)
    # Some events carry no brand or category, as in the real data.
    brand[rng.random(n_rows) < 0.1] = None
    category = category.astype(object)
    category[rng.random(n_rows) < 0.05] = None
    price = np.round(rng.lognormal(4.0, 0.8, n_rows), 2)
    num_views_product = rng.poisson(2.0, n_rows) + 1
    num_views_session = num_views_product + rng.poisson(4.0, n_rows)
    num_prev_sessions = rng.poisson(1.5, n_rows)
    duration = np.round(rng.exponential(600.0, n_rows), 1)
    logit = (
        -2.6
        + 1.1 * (num_views_product - 3)
        + 0.9 * np.minimum(num_prev_sessions, 4)
        - 1.2 * (np.log(price) - 4.0)
        + 0.002 * (duration - 600.0)
        + 1.5 * (brand == "acme")
    )
    purchased = (rng.random(n_rows) < _sigmoid(logit)).astype("int8")
    primary = pd.DataFrame(
        {
            "product_id": rng.integers(1_000_000, 1_000_400, n_rows).astype("int64"),
            "brand": pd.Series(brand, dtype="str"),
            "price": price,
            "user_id": rng.integers(500_000_000, 500_000_800, n_rows).astype("int64"),
            "user_session": [f"session-{i:06d}" for i in range(n_rows)],
            "purchased": purchased,
            "num_views_session": num_views_session.astype("int64"),
            "num_views_product": num_views_product.astype("int64"),
            "category": pd.Series(category, dtype="str"),
            "sub_category": pd.Series(sub_category, dtype="str"),
            "hour": rng.integers(0, 24, n_rows),
            "minute": rng.integers(0, 60, n_rows),
            "weekday": rng.integers(0, 7, n_rows),
            "duration": duration,
            "num_prev_sessions": num_prev_sessions.astype("int64"),
        }
    )
    # Every other contract feature is a count of earlier events, without signal.
    for name in FEATURE_NAMES:
        if name not in primary:
            primary[name] = rng.poisson(1.0, n_rows).astype("int64")
    return primary


@pytest.fixture(scope="session")
def make_primary() -> Callable[..., pd.DataFrame]:
    """The synthetic primary-table builder, for tests that need their own size or seed."""
    return build_primary


@pytest.fixture(scope="session")
def synthetic_primary() -> pd.DataFrame:
    """2,000 synthetic primary rows with real signal (treat as read-only)."""
    return build_primary(2_000, seed=7)
