"""Raw REES46 events -> primary table: one row per (user_session, product_id) that was carted.

The nodes build Ibis expressions and never pull rows into Python: the backend named in the
catalog (DuckDB locally, BigQuery or Spark elsewhere) runs the whole plan when the output
dataset saves it, so a file larger than memory streams through DuckDB, spilling to disk.
docs/data-contract.md defines every column and rule implemented here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from purchase_contract.events import (
    EVENT_TIME_SHAPE,
    EVENT_TYPES,
    RAW_COLUMN_NAMES,
    RAW_COLUMNS,
    EventValidationError,
)
from purchase_contract.features import LABEL, PRIMARY_COLUMNS, ROW_KEY

# The contract's error, raised here (and importable from here, as before).
__all__ = ["EventValidationError", "build_primary_table", "validate_events", "value_stats_query"]

TypeRule = tuple[str, Callable[[dt.DataType], bool]]
# Physical types each kind of raw column may have: (name of the rule, test on the Ibis type).
# A column that may be missing may also be all NULL (typed null by some readers).
_KIND_RULES: dict[str, TypeRule] = {
    "timestamp": ("string or timestamp", lambda t: t.is_string() or t.is_timestamp()),
    "text": ("string", lambda t: t.is_string()),
    "integer": ("integer", lambda t: t.is_integer()),
    "number": ("number", lambda t: t.is_numeric()),
}
# Session identifiers are UUIDs: a reader may type them so.
_UUID_COLUMNS = frozenset({"user_session"})


def _type_rule(name: str, kind: str, nullable: bool) -> TypeRule:
    rule, accepts = _KIND_RULES[kind]
    text_or_null = kind == "text" and nullable
    uuid = name in _UUID_COLUMNS
    return rule, lambda t: accepts(t) or (text_or_null and t.is_null()) or (uuid and t.is_uuid())


_RAW_TYPE_RULES: dict[str, TypeRule] = {
    column.name: _type_rule(column.name, column.kind, column.nullable) for column in RAW_COLUMNS
}


def _event_timestamp(event_time: ir.Value) -> ir.TimestampValue:
    """``event_time`` as a timestamp without zone (UTC wall clock), NULL when unparseable."""
    if event_time.type().is_timestamp():
        # Zoned timestamps become UTC wall-clock time (Ibis sets DuckDB's session zone to UTC).
        return event_time.cast(dt.Timestamp())
    # REES46 writes "2019-10-01 00:00:07 UTC"; a plain cast reads it once the zone is gone.
    return event_time.cast(dt.string).replace(" UTC", "").try_cast(dt.Timestamp())


def _quoted(value: object) -> str:
    return "NULL" if value is None else repr(value)


def _check_types(events: ir.Table) -> None:
    """The raw columns' physical types, on the schema alone (the value rules need them)."""
    wrong_types = [
        (column, f"type {kind}", f"column is {events[column].type()}")
        for column, (kind, accepts) in _RAW_TYPE_RULES.items()
        if not accepts(events[column].type())
    ]
    if wrong_types:
        raise EventValidationError(wrong_types)


# DuckDB's CSV reader stops at the first value it cannot convert to the column's type, with
# the file, the line and the value in its message (the rules below need the first three).
_CSV_ERROR_PARTS = {
    "line": re.compile(r"CSV Error on Line: (\d+)"),
    "original": re.compile(r"^Original Line: (.*)$", re.MULTILINE),
    "column": re.compile(r'converting column "([^"]+)"'),
    "value": re.compile(r'Could not convert string "(.*)" to'),
    "file": re.compile(r"^\s*file = (.+)$", re.MULTILINE),
}


def _csv_read_failure(error: Exception) -> tuple[str, str, str] | None:
    """A backend's CSV conversion error as the contract's (column, rule, detail), else None."""
    found = {name: pattern.search(str(error)) for name, pattern in _CSV_ERROR_PARTS.items()}
    if not (found["line"] and found["column"] and found["file"]):
        return None
    part = {name: match.group(1) if match else "" for name, match in found.items()}
    where = f"{part['file'].strip()} line {part['line']}"
    column, value = part["column"], part["value"]
    if set(RAW_COLUMN_NAMES) <= {field.strip() for field in part["original"].split(",")}:
        return ("events", "header once", f"{where} repeats the header")
    if column == "event_time":
        return (
            column,
            "parseable timestamp",
            f"{where}: {value!r} not parseable as {EVENT_TIME_SHAPE}",
        )
    kind = _RAW_TYPE_RULES[column][0] if column in _RAW_TYPE_RULES else "its type"
    article = "an" if kind[0] in "aeiou" else "a"
    return (column, f"type {kind}", f"{where}: {value!r} is not {article} {kind}")


def _run_stats(query: ir.Table) -> dict[str, object]:
    """The one-row result of ``query``; a CSV value the reader cannot convert is the
    contract's error, wherever it is in the file."""
    try:
        return query.to_pyarrow().to_pylist()[0]
    except Exception as error:
        failure = _csv_read_failure(error)
        if failure is None:
            raise
        raise EventValidationError([failure]) from error


def value_stats_query(events: ir.Table) -> ir.Table:
    """The one aggregate query of ``validate_events`` (unexecuted): row count, and per value
    rule its offenders and an example."""
    bad_time = _event_timestamp(events.event_time).isnull()
    bad_price = events.price.isnull() | (events.price < 0)
    bad_type = events.event_type.isnull() | ~events.event_type.isin(EVENT_TYPES)
    return events.aggregate(
        rows=events.count(),
        bad_time=events.count(where=bad_time),
        bad_time_example=events.event_time.cast(dt.string).min(where=bad_time),
        bad_price=events.count(where=bad_price),
        lowest_price=events.price.min(),
        bad_type=events.count(where=bad_type),
        bad_type_example=events.event_type.min(where=bad_type),
        purchases=events.count(where=events.event_type == "purchase"),
        carts=events.count(where=events.event_type == "cart"),
        # Read every typed column: a CSV value that does not convert then fails here.
        **{f"{c}_values": events[c].count() for c in ("product_id", "category_id", "user_id")},
    )


def _value_failures(stats: dict[str, object]) -> list[tuple[str, str, str]]:
    """The broken value rules, as (column, rule, detail)."""
    failures = []
    if stats["bad_time"]:
        detail = (
            f"{stats['bad_time']} row(s) not parseable as {EVENT_TIME_SHAPE} "
            f"(e.g. {_quoted(stats['bad_time_example'])})"
        )
        failures.append(("event_time", "parseable timestamp", detail))
    if stats["bad_price"]:
        detail = f"{stats['bad_price']} row(s) negative or missing (lowest {stats['lowest_price']})"
        failures.append(("price", "non-negative", detail))
    if stats["bad_type"]:
        detail = (
            f"{stats['bad_type']} row(s) with another value "
            f"(e.g. {_quoted(stats['bad_type_example'])})"
        )
        failures.append(("event_type", f"one of {'|'.join(EVENT_TYPES)}", detail))
    if not stats["bad_type"]:
        failures.extend(_missing_event_types(stats))
    return failures


def _missing_event_types(stats: dict[str, object]) -> list[tuple[str, str, str]]:
    """The event types training cannot do without: a cart makes a row, a purchase a label."""
    failures = []
    if not stats["carts"]:
        detail = "no 'cart' event at all: no carted product, nothing to learn"
        failures.append(("event_type", "at least one cart", detail))
    if not stats["purchases"]:
        failures.append(
            ("event_type", "at least one purchase", "no 'purchase' event at all: no label")
        )
    return failures


def validate_events(events: ir.Table) -> ir.Table:
    """Check the value rules of the raw events in one aggregate query; return them unchanged.

    Raises:
        EventValidationError: listing every broken rule with its column, the number of
            offending rows and an example value (or the wrong column types, which are
            checked first, on the schema alone).
    """
    _check_types(events)
    stats = _run_stats(value_stats_query(events))
    if stats["rows"] == 0:
        raise EventValidationError([("events", "not empty", "zero rows")])
    if failures := _value_failures(stats):
        raise EventValidationError(failures)
    return events


def _int64(value: ir.NumericValue) -> ir.IntegerValue:
    """``value`` typed int64 on every backend (exact for integers below 2**53)."""
    # Through float64: Ibis drops a cast to the type it already assumes, and engines disagree
    # with it (DuckDB sums BIGINT to HUGEINT; Spark's rank() is INT where Ibis assumes int64).
    return value.cast(dt.float64).cast(dt.int64)


def _count(column: ir.NumericColumn) -> ir.IntegerScalar:
    """Integer sum of counts, typed int64 on every backend."""
    return _int64(column.cast(dt.float64).sum())


def _pairs(events: ir.Table) -> ir.Table:
    """One row per (user_session, product_id): the one pass over the (deduplicated) events."""
    clean = (
        events.distinct()
        .mutate(ts=lambda t: _event_timestamp(t.event_time))
        .filter(
            lambda t: t.user_session.notnull() & t.product_id.notnull() & t.ts.notnull(),
        )
    )
    is_cart = clean.event_type == "cart"
    return clean.group_by(list(ROW_KEY)).aggregate(
        pair_user=clean.user_id.min(),
        pair_start=clean.ts.min(),
        pair_end=clean.ts.max(),
        product_views=clean.count(where=clean.event_type == "view"),
        purchases=clean.count(where=clean.event_type == "purchase"),
        cart_time=clean.ts.min(where=is_cart),
        cart_price=clean.price.argmin(clean.ts, where=is_cart),
        cart_brand=clean.brand.argmin(clean.ts, where=is_cart),
        cart_category_code=clean.category_code.argmin(clean.ts, where=is_cart),
    )


def _sessions(pairs: ir.Table) -> ir.Table:
    """One row per session: its user, start, end, views, and its rank among the user's."""
    stats = pairs.group_by("user_session").aggregate(
        # A session belongs to one user; should the data disagree, the smallest id wins.
        session_user=pairs.pair_user.min(),
        session_start=pairs.pair_start.min(),
        session_end=pairs.pair_end.max(),
        session_views=_count(pairs.product_views),
    )
    # rank() is 0-based and ties share the lowest rank: sessions started strictly before.
    return stats.mutate(
        session_rank=ibis.rank().over(group_by=stats.session_user, order_by=stats.session_start)
    )


# The first and second parts of a dotted category code. Patterns, not split("."): Spark's
# split() takes a regular expression (there "." splits at every character), and [^.] means the
# same in RE2 (DuckDB, BigQuery) and in Java's syntax (Spark).
_CATEGORY_PART_PATTERNS = (r"^([^.]*)", r"^[^.]*\.([^.]*)")


def _category_part(t: ir.Table, index: int) -> ir.StringValue:
    """Part ``index`` (0 or 1) of the cart event's dotted category code, NULL when missing or
    empty."""
    code = t.cart_category_code.strip().nullif("")
    return code.re_extract(_CATEGORY_PART_PATTERNS[index], 1).nullif("")


def _epoch_seconds(wall_clock: ir.TimestampValue) -> ir.IntegerValue:
    """Seconds since 1970 of a UTC wall-clock timestamp."""
    # As a zoned timestamp: BigQuery's UNIX_SECONDS takes a TIMESTAMP, never a DATETIME.
    return wall_clock.cast(dt.Timestamp(timezone="UTC")).epoch_seconds()


def _earlier_product_views(t: ir.Table) -> ir.IntegerValue:
    """Views of the product by the user in sessions started strictly before this one."""
    # The running total up to this session start, minus the sessions that started at the same
    # time. Windows, not a self-join: the planner cannot turn them into a join on product alone.
    views = t.product_views.cast(dt.float64)
    user_product = [t.session_user, t.product_id]
    up_to_start = ibis.window(group_by=user_product, order_by=t.session_start, range=(None, 0))
    same_start = ibis.window(group_by=[*user_product, t.session_start])
    return (views.sum().over(up_to_start) - views.sum().over(same_start)).cast(dt.int64)


# Every feature of the contract, one expression each, over a (pair x session) row.
FEATURE_EXPRESSIONS: dict[str, Callable[[ir.Table], ir.Value]] = {
    "product_id": lambda t: t.product_id.cast(dt.int64),
    "brand": lambda t: t.cart_brand.strip().lower().nullif(""),
    "price": lambda t: t.cart_price.cast(dt.float64),
    "num_views_session": lambda t: t.session_views,
    "num_views_product": lambda t: t.product_views.cast(dt.int64),
    "category": lambda t: _category_part(t, 0),
    "sub_category": lambda t: _category_part(t, 1),
    "hour": lambda t: t.cart_time.hour().cast(dt.int64),
    "minute": lambda t: t.cart_time.minute().cast(dt.int64),
    "weekday": lambda t: t.cart_time.day_of_week.index().cast(dt.int64),
    "duration": lambda t: (_epoch_seconds(t.session_end) - _epoch_seconds(t.session_start)).cast(
        dt.float64
    ),
    "num_prev_sessions": lambda t: _int64(t.session_rank),
    "num_prev_product_views": _earlier_product_views,
}
# The identifiers and the label, likewise.
ROW_EXPRESSIONS: dict[str, Callable[[ir.Table], ir.Value]] = {
    "user_id": lambda t: t.session_user.cast(dt.int64),
    "user_session": lambda t: t.user_session.cast(dt.string),
    LABEL: lambda t: (t.purchases > 0).cast(dt.int64),
}
# The contract's list is the order; a feature added there without its expression (or the other
# way round) stops the import.
if (*FEATURE_EXPRESSIONS, *ROW_EXPRESSIONS) != PRIMARY_COLUMNS:
    raise ImportError(
        "data_processing computes the columns "
        f"{[*FEATURE_EXPRESSIONS, *ROW_EXPRESSIONS]}, the contract lists {list(PRIMARY_COLUMNS)}"
    )


def build_primary_table(events: ir.Table) -> ir.Table:
    """One row per carted (user_session, product_id) with its label and features.

    Exact duplicate events are dropped first; events without ``user_session``,
    ``product_id`` or a parseable ``event_time`` cannot be placed and are ignored.
    The events are read in one pass (one aggregate per session-product pair); later steps
    work on pairs and sessions only. Columns are the contract's PRIMARY_COLUMNS, in order;
    rows are ordered by (user_session, product_id).
    """
    pairs = _pairs(events)
    rows = pairs.join(_sessions(pairs), "user_session")
    expressions = {**FEATURE_EXPRESSIONS, **ROW_EXPRESSIONS}
    primary = (
        rows.mutate(**{name: expression(rows) for name, expression in expressions.items()})
        # After the windows: earlier views of a product need no cart.
        .filter(lambda t: t.cart_time.notnull())
        .select(*PRIMARY_COLUMNS)
    )
    return primary.order_by(list(ROW_KEY))
