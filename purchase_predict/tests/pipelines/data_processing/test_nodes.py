"""Node tests: hand-made events executed on a real DuckDB backend through Ibis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pytest

from purchase_contract.features import FEATURE_DTYPES, FEATURE_NAMES, LABEL, PRIMARY_COLUMNS
from purchase_predict.pipelines.data_processing.nodes import (
    FEATURE_EXPRESSIONS,
    EventValidationError,
    build_primary_table,
    validate_events,
)

# The contract's pandas dtypes as Ibis types: text columns are strings.
_IBIS_TYPES = {"int64": "int64", "float64": "float64", "object": "string"}
PRIMARY_SCHEMA = ibis.schema(
    {
        **{name: _IBIS_TYPES[dtype] for name, dtype in FEATURE_DTYPES.items()},
        "user_id": "int64",
        "user_session": "string",
        LABEL: "int64",
    }
)


@pytest.fixture
def con() -> ibis.BaseBackend:
    return ibis.duckdb.connect()


@pytest.fixture
def compiled_queries() -> Iterator[list[str]]:
    """Every SQL query Ibis compiles (one per execution) while the test runs."""
    queries: list[str] = []
    previous = (ibis.options.verbose, ibis.options.verbose_log)
    ibis.options.verbose, ibis.options.verbose_log = True, queries.append
    yield queries
    ibis.options.verbose, ibis.options.verbose_log = previous


def test_primary_table_matches_hand_computed_rows(
    con: ibis.BaseBackend,
    handmade_events: pa.Table,
    expected_primary_rows: list[dict[str, Any]],
    event_time_as: Callable[[pa.Table, str], pa.Table],
    event_time_form: str,
) -> None:
    events = ibis.memtable(event_time_as(handmade_events, event_time_form))

    primary = build_primary_table(events)

    assert primary.schema() == PRIMARY_SCHEMA
    assert tuple(primary.columns) == PRIMARY_COLUMNS
    assert con.to_pyarrow(primary).to_pylist() == expected_primary_rows


def test_primary_table_is_lazy_and_never_executes(
    handmade_events: pa.Table, compiled_queries: list[str]
) -> None:
    events = ibis.memtable(handmade_events)

    primary = build_primary_table(events)

    assert isinstance(primary, ir.Table)
    assert compiled_queries == []


def test_duplicates_change_nothing(
    con: ibis.BaseBackend, handmade_rows: list[tuple], make_events: Callable, expected_primary_rows
) -> None:
    tripled = make_events(handmade_rows * 3)

    primary = build_primary_table(ibis.memtable(tripled))

    assert con.to_pyarrow(primary).to_pylist() == expected_primary_rows


def test_events_without_any_cart_give_an_empty_primary_table(
    con: ibis.BaseBackend, handmade_rows: list[tuple], make_events: Callable
) -> None:
    no_carts = make_events([row for row in handmade_rows if row[1] != "cart"])

    primary = build_primary_table(ibis.memtable(no_carts))

    assert con.to_pyarrow(primary).num_rows == 0


def test_validate_passes_good_events_through_with_one_query(
    handmade_events: pa.Table, compiled_queries: list[str]
) -> None:
    events = ibis.memtable(handmade_events)
    compiled_queries.clear()

    assert validate_events(events) is events
    assert len(compiled_queries) == 1
    assert compiled_queries[0].lstrip().upper().startswith("SELECT")


def _validation_error(events: pa.Table) -> EventValidationError:
    with pytest.raises(EventValidationError) as caught:
        validate_events(ibis.memtable(events))
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)
    return caught.value


def test_unparseable_event_time_is_counted_with_an_example(
    handmade_rows: list[tuple], make_events: Callable
) -> None:
    handmade_rows[3] = ("yesterday", *handmade_rows[3][1:])
    handmade_rows[5] = ("2019-13-45 00:00:00 UTC", *handmade_rows[5][1:])

    error = _validation_error(make_events(handmade_rows))

    assert error.failures == [
        (
            "event_time",
            "parseable timestamp",
            "2 row(s) not parseable as 'YYYY-MM-DD HH:MM:SS[ UTC]' "
            "(e.g. '2019-13-45 00:00:00 UTC')",
        )
    ]
    assert str(error).startswith("raw events fail validation: event_time [parseable timestamp]")


def test_negative_price_is_refused(handmade_rows: list[tuple], make_events: Callable) -> None:
    handmade_rows[0] = (*handmade_rows[0][:6], -5.0, *handmade_rows[0][7:])

    error = _validation_error(make_events(handmade_rows))

    assert error.failures == [
        ("price", "non-negative", "1 row(s) negative or missing (lowest -5.0)")
    ]
    assert "price [non-negative]" in str(error)


def test_unknown_event_type_is_refused(handmade_rows: list[tuple], make_events: Callable) -> None:
    handmade_rows[1] = (handmade_rows[1][0], "remove_from_cart", *handmade_rows[1][2:])

    error = _validation_error(make_events(handmade_rows))

    assert error.failures == [
        (
            "event_type",
            "one of view|cart|purchase",
            "1 row(s) with another value (e.g. 'remove_from_cart')",
        )
    ]


def test_zero_rows_are_refused(make_events: Callable) -> None:
    error = _validation_error(make_events([]))

    assert error.failures == [("events", "not empty", "zero rows")]
    assert str(error) == "raw events fail validation: events [not empty]: zero rows"


def test_events_without_any_purchase_are_refused(
    handmade_rows: list[tuple], make_events: Callable
) -> None:
    no_purchase = make_events([row for row in handmade_rows if row[1] != "purchase"])

    error = _validation_error(no_purchase)

    assert error.failures == [
        ("event_type", "at least one purchase", "no 'purchase' event at all: no label")
    ]


def test_events_without_any_cart_are_refused(
    handmade_rows: list[tuple], make_events: Callable
) -> None:
    no_carts = make_events([row for row in handmade_rows if row[1] != "cart"])

    error = _validation_error(no_carts)

    assert error.failures == [
        (
            "event_type",
            "at least one cart",
            "no 'cart' event at all: no carted product, nothing to learn",
        )
    ]


def test_every_broken_rule_is_reported_at_once(
    handmade_rows: list[tuple], make_events: Callable
) -> None:
    handmade_rows[0] = ("soon", "click", *handmade_rows[0][2:6], -1.0, *handmade_rows[0][7:])

    error = _validation_error(make_events(handmade_rows))

    assert [(column, rule) for column, rule, _ in error.failures] == [
        ("event_time", "parseable timestamp"),
        ("price", "non-negative"),
        ("event_type", "one of view|cart|purchase"),
    ]


def test_wrong_column_types_are_refused_before_any_scan(
    handmade_events: pa.Table, compiled_queries: list[str]
) -> None:
    as_text = handmade_events.set_column(6, "price", handmade_events["price"].cast(pa.string()))

    error = _validation_error(as_text)

    assert error.failures == [("price", "type number", "column is string")]
    assert compiled_queries == []


def test_every_contract_feature_has_one_expression_in_contract_order() -> None:
    assert tuple(FEATURE_EXPRESSIONS) == FEATURE_NAMES
