"""Raw REES46 events -> primary table: one row per (user_session, product_id) that was carted.

The nodes build Ibis expressions and never pull rows into Python: the backend named in the
catalog (DuckDB locally, BigQuery or Spark elsewhere) runs the whole plan when the output
dataset saves it, so a file larger than memory streams through DuckDB, spilling to disk.
docs/data-contract.md defines every column and rule implemented here.
"""

from __future__ import annotations

from collections.abc import Callable

import ibis
import ibis.expr.datatypes as dt
import ibis.expr.types as ir

from purchase_predict.datagen import EVENT_TYPES

PRIMARY_COLUMNS: tuple[str, ...] = (
    "product_id",
    "brand",
    "price",
    "user_id",
    "user_session",
    "purchased",
    "num_views_session",
    "num_views_product",
    "category",
    "sub_category",
    "hour",
    "minute",
    "weekday",
    "duration",
    "num_prev_sessions",
    "num_prev_product_views",
)
_PAIR_KEYS = ("user_session", "product_id")
# Physical types each raw column may have: (name of the rule, test on the Ibis type).
_RAW_TYPE_RULES: dict[str, tuple[str, Callable[[dt.DataType], bool]]] = {
    "event_time": ("string or timestamp", lambda t: t.is_string() or t.is_timestamp()),
    "event_type": ("string", lambda t: t.is_string()),
    "product_id": ("integer", lambda t: t.is_integer()),
    "category_id": ("integer", lambda t: t.is_integer()),
    "category_code": ("string", lambda t: t.is_string() or t.is_null()),
    "brand": ("string", lambda t: t.is_string() or t.is_null()),
    "price": ("number", lambda t: t.is_numeric()),
    "user_id": ("integer", lambda t: t.is_integer()),
    "user_session": ("string", lambda t: t.is_string() or t.is_uuid()),
}
_EVENT_TIME_SHAPE = "'YYYY-MM-DD HH:MM:SS[ UTC]'"


class EventValidationError(ValueError):
    """Raw events break value rules; ``failures`` holds one (column, rule, detail) per rule."""

    def __init__(self, failures: list[tuple[str, str, str]]) -> None:
        self.failures = failures
        broken = "; ".join(f"{column} [{rule}]: {detail}" for column, rule, detail in failures)
        super().__init__(f"raw events fail validation: {broken}")


def _event_timestamp(event_time: ir.Value) -> ir.TimestampValue:
    """``event_time`` as a timestamp without zone (UTC wall clock), NULL when unparseable."""
    if event_time.type().is_timestamp():
        # Zoned timestamps become UTC wall-clock time (Ibis sets DuckDB's session zone to UTC).
        return event_time.cast(dt.Timestamp())
    # REES46 writes "2019-10-01 00:00:07 UTC"; a plain cast reads it once the zone is gone.
    return event_time.cast(dt.string).replace(" UTC", "").try_cast(dt.Timestamp())


def _quoted(value: object) -> str:
    return "NULL" if value is None else repr(value)


def validate_events(events: ir.Table) -> ir.Table:
    """Check the value rules of the raw events in one aggregate query; return them unchanged.

    Raises:
        EventValidationError: listing every broken rule with its column, the number of
            offending rows and an example value (or the wrong column types, which are
            checked first, on the schema alone).
    """
    wrong_types = [
        (column, f"type {kind}", f"column is {events[column].type()}")
        for column, (kind, accepts) in _RAW_TYPE_RULES.items()
        if not accepts(events[column].type())
    ]
    if wrong_types:  # checked on the schema alone: the value rules below need these types
        raise EventValidationError(wrong_types)

    timestamp = _event_timestamp(events.event_time)
    bad_time = timestamp.isnull()
    bad_price = events.price.isnull() | (events.price < 0)
    bad_type = events.event_type.isnull() | ~events.event_type.isin(EVENT_TYPES)
    stats = (
        events.aggregate(
            rows=events.count(),
            bad_time=events.count(where=bad_time),
            bad_time_example=events.event_time.cast(dt.string).min(where=bad_time),
            bad_price=events.count(where=bad_price),
            lowest_price=events.price.min(),
            bad_type=events.count(where=bad_type),
            bad_type_example=events.event_type.min(where=bad_type),
            purchases=events.count(where=events.event_type == "purchase"),
        )
        .to_pyarrow()
        .to_pylist()[0]
    )
    if stats["rows"] == 0:
        raise EventValidationError([("events", "not empty", "zero rows")])
    failures = []
    if stats["bad_time"]:
        failures.append(
            (
                "event_time",
                "parseable timestamp",
                f"{stats['bad_time']} row(s) not parseable as {_EVENT_TIME_SHAPE} "
                f"(e.g. {_quoted(stats['bad_time_example'])})",
            )
        )
    if stats["bad_price"]:
        failures.append(
            (
                "price",
                "non-negative",
                f"{stats['bad_price']} row(s) negative or missing (lowest {stats['lowest_price']})",
            )
        )
    if stats["bad_type"]:
        failures.append(
            (
                "event_type",
                f"one of {'|'.join(EVENT_TYPES)}",
                f"{stats['bad_type']} row(s) with another value "
                f"(e.g. {_quoted(stats['bad_type_example'])})",
            )
        )
    if not stats["purchases"] and not stats["bad_type"]:
        failures.append(
            ("event_type", "at least one purchase", "no 'purchase' event at all: no label")
        )
    if failures:
        raise EventValidationError(failures)
    return events


def _count(column: ir.NumericColumn) -> ir.IntegerScalar:
    """Integer sum of counts, typed int64 on every backend."""
    # Summed as float: DuckDB sums BIGINT to HUGEINT, and Ibis drops an int64 cast it deems a no-op.
    return column.cast(dt.float64).sum().cast(dt.int64)


def build_primary_table(events: ir.Table) -> ir.Table:
    """One row per carted (user_session, product_id) with its label and features.

    Exact duplicate events are dropped first; events without ``user_session``,
    ``product_id`` or a parseable ``event_time`` cannot be placed and are ignored.
    The events are read in one pass (one aggregate per session-product pair); later steps
    work on pairs and sessions only. Rows are ordered by (user_session, product_id).
    """
    clean = (
        events.distinct()
        .mutate(ts=lambda t: _event_timestamp(t.event_time))
        .filter(
            lambda t: t.user_session.notnull() & t.product_id.notnull() & t.ts.notnull(),
        )
    )
    is_cart = clean.event_type == "cart"
    pairs = clean.group_by(_PAIR_KEYS).aggregate(
        pair_user=clean.user_id.min(),
        pair_start=clean.ts.min(),
        pair_end=clean.ts.max(),
        num_views_product=clean.count(where=clean.event_type == "view"),
        purchases=clean.count(where=clean.event_type == "purchase"),
        cart_time=clean.ts.min(where=is_cart),
        cart_price=clean.price.argmin(clean.ts, where=is_cart),
        cart_brand=clean.brand.argmin(clean.ts, where=is_cart),
        cart_category_code=clean.category_code.argmin(clean.ts, where=is_cart),
    )

    session_stats = pairs.group_by("user_session").aggregate(
        # A session belongs to one user; should the data disagree, the smallest id wins.
        session_user=pairs.pair_user.min(),
        session_start=pairs.pair_start.min(),
        session_end=pairs.pair_end.max(),
        num_views_session=_count(pairs.num_views_product),
    )
    sessions = session_stats.mutate(
        # rank() is 0-based and ties share the lowest rank: sessions started strictly before.
        num_prev_sessions=ibis.rank().over(
            group_by=session_stats.session_user, order_by=session_stats.session_start
        ),
        duration=(
            session_stats.session_end.epoch_seconds() - session_stats.session_start.epoch_seconds()
        ).cast(dt.float64),
    )

    # Views of the product by the user in sessions started strictly before: the running
    # total up to this session start, minus the sessions that started at the same time.
    # Windows, not a self-join: the planner cannot turn them into a join on product alone.
    pair_sessions = pairs.join(sessions, "user_session")
    views = pair_sessions.num_views_product.cast(dt.float64)
    user_product = [pair_sessions.session_user, pair_sessions.product_id]
    up_to_start = ibis.window(
        group_by=user_product, order_by=pair_sessions.session_start, range=(None, 0)
    )
    same_start = ibis.window(group_by=[*user_product, pair_sessions.session_start])
    joined = pair_sessions.mutate(
        num_prev_product_views=views.sum().over(up_to_start) - views.sum().over(same_start)
    ).filter(lambda t: t.cart_time.notnull())  # after the windows: earlier views need no cart
    category_parts = joined.cart_category_code.strip().nullif("").split(".")
    primary = joined.select(
        product_id=joined.product_id.cast(dt.int64),
        brand=joined.cart_brand.strip().lower().nullif(""),
        price=joined.cart_price.cast(dt.float64),
        user_id=joined.session_user.cast(dt.int64),
        user_session=joined.user_session.cast(dt.string),
        purchased=(joined.purchases > 0).cast(dt.int64),
        num_views_session=joined.num_views_session,
        num_views_product=joined.num_views_product.cast(dt.int64),
        category=category_parts[0].nullif(""),
        sub_category=category_parts[1].nullif(""),
        hour=joined.cart_time.hour().cast(dt.int64),
        minute=joined.cart_time.minute().cast(dt.int64),
        weekday=joined.cart_time.day_of_week.index().cast(dt.int64),
        duration=joined.duration,
        num_prev_sessions=joined.num_prev_sessions.cast(dt.int64),
        num_prev_product_views=joined.num_prev_product_views.cast(dt.int64),
    )
    return primary.order_by(["user_session", "product_id"])
