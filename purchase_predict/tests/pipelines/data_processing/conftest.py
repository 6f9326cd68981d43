"""Hand-made events and the primary rows computed from them by hand.

Calendar: 2019-10-01 was a Tuesday, so 10-02 is a Wednesday (weekday 2), 10-05 a Saturday
(5) and 10-07 a Monday (0). Times are UTC, as in REES46.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from kedro.io import DataCatalog

from purchase_predict.config_loader import ProjectConfigLoader
from purchase_predict.datagen import RAW_EVENT_COLUMNS, RAW_EVENT_SCHEMA

CONF_DIR = Path(__file__).parents[3] / "conf"

PHONE = {
    "product_id": 100,
    "category_id": 2053013555631882655,
    "category_code": "electronics.smartphone",
    "brand": "Samsung",
    "price": 200.0,
}
WASHER = {
    "product_id": 200,
    "category_id": 2053013563810775923,
    "category_code": "appliances.kitchen.washer",
    "brand": None,
    "price": 300.0,
}
TOY = {
    "product_id": 300,
    "category_id": 2053013555262783469,
    "category_code": "kids",
    "brand": "lego",
    "price": 30.0,
}
TV = {
    "product_id": 400,
    "category_id": 2053013554658804075,
    "category_code": "electronics.video.tv",
    "brand": "lg",
    "price": 400.0,
}
USER_OF = {"s1": 10, "s2": 10, "s3": 10, "s4": 20}


def _event(time: str, kind: str, product: dict, session: str | None, **changes: Any) -> tuple:
    """One raw event (a tuple of the nine columns); ``changes`` override product fields."""
    fields = {**product, "user_id": USER_OF.get(session), **changes}
    return (f"{time} UTC", kind, *(fields[c] for c in RAW_EVENT_COLUMNS[2:-1]), session)


# User 10: session s1 spans midnight; s2 and s3 start in the same second, days later.
# User 20: session s4, with a purchase that skipped the cart and an event without session.
HANDMADE_EVENTS: list[tuple] = [
    _event("2019-10-01 23:58:00", "view", PHONE, "s1"),
    _event("2019-10-01 23:59:00", "view", PHONE, "s1"),
    _event("2019-10-01 23:59:00", "view", PHONE, "s1"),  # exact duplicate
    _event("2019-10-01 23:59:30", "view", WASHER, "s1"),
    _event("2019-10-02 00:01:00", "cart", PHONE, "s1", price=190.0),  # first cart
    _event("2019-10-02 00:01:00", "cart", PHONE, "s1", price=190.0),  # exact duplicate
    _event("2019-10-02 00:03:00", "cart", PHONE, "s1", price=180.0),  # second cart
    _event("2019-10-02 00:05:00", "purchase", PHONE, "s1", price=190.0),
    _event("2019-10-05 18:30:00", "view", WASHER, "s2"),
    _event("2019-10-05 18:31:00", "view", PHONE, "s2"),
    _event("2019-10-05 18:32:10", "view", WASHER, "s2"),
    _event("2019-10-05 18:33:00", "cart", WASHER, "s2"),
    _event("2019-10-05 18:30:00", "view", PHONE, "s3", price=210.0),
    _event(
        "2019-10-05 18:30:20",
        "cart",
        PHONE,
        "s3",
        price=210.0,
        category_code=None,
        brand="SAMSUNG ",
    ),
    _event("2019-10-05 18:31:00", "purchase", PHONE, "s3", price=210.0),
    _event("2019-10-07 09:00:00", "view", TOY, "s4"),
    _event("2019-10-07 09:00:10", "view", TOY, None, user_id=20),  # no session: ignored
    _event("2019-10-07 09:00:45", "cart", TOY, "s4"),
    _event("2019-10-07 09:01:00", "view", TV, "s4"),
    _event("2019-10-07 09:01:30", "purchase", TV, "s4"),  # bought, never carted
    _event("2019-10-07 09:02:00", "purchase", TOY, "s4"),
]

# The physical forms of ``event_time`` the data step accepts (see ``event_time_as``).
EVENT_TIME_FORMS = [
    "rees46 string",
    "string without zone",
    "naive timestamp",
    "UTC timestamp",
    "Moscow timestamp",
]

# One row per carted (session, product), ordered by (user_session, product_id), by hand:
# s1/100: views 23:58 + 23:59 (duplicate dropped) -> 2 of 3 session views (washer 23:59:30);
#   first cart 00:01:00 at 190.0 (later cart at 180.0 ignored), Wednesday; purchased;
#   duration 23:58:00 -> 00:05:00 = 420 s across midnight; first session of user 10.
# s2/200: washer viewed twice of 3 session views; cart 18:33 on Saturday, not bought;
#   duration 18:30:00 -> 18:33:00 = 180 s; brand missing; one earlier session (s1, where
#   the washer was viewed once); s3 started in the same second, so it is not "before".
# s3/100: 1 view; the cart event has no category_code and brand "SAMSUNG " -> "samsung";
#   duration 60 s; earlier sessions: s1 only (s2 ties), whose 2 phone views count.
# s4/300: category_code "kids" has no second part; 2 session views (toy, tv); duration
#   09:00:00 -> 09:02:00 = 120 s; the event without session is not counted.
PRIMARY_ROWS: list[dict[str, Any]] = [
    {"product_id": 100, "brand": "samsung", "price": 190.0, "user_id": 10, "user_session": "s1",
     "purchased": 1, "num_views_session": 3, "num_views_product": 2, "category": "electronics",
     "sub_category": "smartphone", "hour": 0, "minute": 1, "weekday": 2, "duration": 420.0,
     "num_prev_sessions": 0, "num_prev_product_views": 0},
    {"product_id": 200, "brand": None, "price": 300.0, "user_id": 10, "user_session": "s2",
     "purchased": 0, "num_views_session": 3, "num_views_product": 2, "category": "appliances",
     "sub_category": "kitchen", "hour": 18, "minute": 33, "weekday": 5, "duration": 180.0,
     "num_prev_sessions": 1, "num_prev_product_views": 1},
    {"product_id": 100, "brand": "samsung", "price": 210.0, "user_id": 10, "user_session": "s3",
     "purchased": 1, "num_views_session": 1, "num_views_product": 1, "category": None,
     "sub_category": None, "hour": 18, "minute": 30, "weekday": 5, "duration": 60.0,
     "num_prev_sessions": 1, "num_prev_product_views": 2},
    {"product_id": 300, "brand": "lego", "price": 30.0, "user_id": 20, "user_session": "s4",
     "purchased": 1, "num_views_session": 2, "num_views_product": 1, "category": "kids",
     "sub_category": None, "hour": 9, "minute": 0, "weekday": 0, "duration": 120.0,
     "num_prev_sessions": 0, "num_prev_product_views": 0},
]  # fmt: skip


def _events_table(rows: list[tuple]) -> pa.Table:
    columns = list(zip(*rows, strict=True)) if rows else [[] for _ in RAW_EVENT_COLUMNS]
    return pa.Table.from_arrays(
        [pa.array(values, f.type) for values, f in zip(columns, RAW_EVENT_SCHEMA, strict=True)],
        schema=RAW_EVENT_SCHEMA,
    )


def _write_parquet(table: pa.Table, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture
def handmade_rows() -> list[tuple]:
    """The hand-made events as tuples of the nine raw columns (a copy, safe to edit)."""
    return list(HANDMADE_EVENTS)


@pytest.fixture
def make_events() -> Callable[[list[tuple]], pa.Table]:
    """Rows of the nine raw columns -> an Arrow table with the REES46 types."""
    return _events_table


@pytest.fixture
def handmade_events() -> pa.Table:
    return _events_table(HANDMADE_EVENTS)


@pytest.fixture
def expected_primary_rows() -> list[dict[str, Any]]:
    return [dict(row) for row in PRIMARY_ROWS]


@pytest.fixture
def write_parquet() -> Callable[[pa.Table, Path], Path]:
    """Write an Arrow table to a Parquet file (parents created) and return its path."""
    return _write_parquet


@pytest.fixture
def duckdb_connection(tmp_path: Path) -> dict[str, Any]:
    """A DuckDB connection config of its own (the dataset connection cache is keyed by it)."""
    return {
        "backend": "duckdb",
        "database": ":memory:",
        "temp_directory": str(tmp_path / "spill"),
        "preserve_insertion_order": False,
    }


def _project_catalog(root: Path, env: str = "local", **runtime_params: str) -> DataCatalog:
    """The project's data_processing catalog as Kedro resolves it in ``env`` (``runtime_params``
    as ``kedro run --params`` gives them), with every relative path moved under ``root``."""
    loader = ProjectConfigLoader(
        conf_source=str(CONF_DIR),
        env=env,
        base_env="base",
        default_run_env="local",
        config_patterns={"catalog": ["catalog_data_processing*"]},
        runtime_params=runtime_params,
    )
    datasets = {}
    for name, entry in loader["catalog"].items():  # YAML anchors (_duckdb) are dropped
        entry["filepath"] = str(root / entry["filepath"])
        if "temp_directory" in entry.get("connection", {}):
            entry["connection"]["temp_directory"] = str(
                root / entry["connection"]["temp_directory"]
            )
        datasets[name] = entry
    return DataCatalog.from_config(datasets)


@pytest.fixture
def project_catalog() -> Callable[..., DataCatalog]:
    """``(root, env="local", **runtime_params)`` -> the project's data_processing catalog
    in that Kedro environment, its relative paths under ``root``."""
    return _project_catalog


def _event_time_as(events: pa.Table, form: str) -> pa.Table:
    """The same events with ``event_time`` in another physical form."""
    bare = pc.replace_substring(events["event_time"], " UTC", "")
    naive = bare.cast(pa.timestamp("s"))
    converted = {
        "rees46 string": events["event_time"],
        "string without zone": bare,
        "naive timestamp": naive,
        "UTC timestamp": pc.assume_timezone(naive, "UTC"),
        # Same instants seen from Moscow: features must still use UTC wall-clock time.
        "Moscow timestamp": pc.assume_timezone(naive, "UTC").cast(
            pa.timestamp("s", tz="Europe/Moscow")
        ),
    }[form]
    return events.set_column(0, "event_time", converted)


@pytest.fixture(params=EVENT_TIME_FORMS)
def event_time_form(request: pytest.FixtureRequest) -> str:
    """Each of EVENT_TIME_FORMS in turn."""
    return request.param


@pytest.fixture
def event_time_as() -> Callable[[pa.Table, str], pa.Table]:
    """``(events, form)`` -> the same events with ``event_time`` in one of EVENT_TIME_FORMS."""
    return _event_time_as
