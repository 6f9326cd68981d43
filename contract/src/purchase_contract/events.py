"""The raw shop events (REES46 layout): the columns the feature step reads and their types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# "timestamp": a timestamp, or text 'YYYY-MM-DD HH:MM:SS[ UTC]'.
RawKind = Literal["timestamp", "text", "integer", "number"]

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase")
EVENT_TIME_SHAPE = "'YYYY-MM-DD HH:MM:SS[ UTC]'"


@dataclass(frozen=True)
class RawColumn:
    """One raw event column: the kind of values it holds, and whether it may be missing."""

    name: str
    kind: RawKind
    nullable: bool
    description: str


RAW_COLUMNS: tuple[RawColumn, ...] = (
    RawColumn("event_time", "timestamp", False, f"When, UTC: a timestamp or {EVENT_TIME_SHAPE}."),
    RawColumn("event_type", "text", False, f"One of {', '.join(EVENT_TYPES)}."),
    RawColumn("product_id", "integer", False, "Product identifier."),
    RawColumn("category_id", "integer", True, "Category identifier."),
    RawColumn("category_code", "text", True, "Dotted category path, e.g. electronics.smartphone."),
    RawColumn("brand", "text", True, "Brand as the shop writes it."),
    RawColumn("price", "number", False, "Unit price, non-negative."),
    RawColumn("user_id", "integer", False, "User identifier."),
    RawColumn("user_session", "text", False, "Session identifier (a UUID)."),
)
RAW_COLUMN_NAMES: tuple[str, ...] = tuple(column.name for column in RAW_COLUMNS)


class EventValidationError(ValueError):
    """Raw events break value rules; ``failures`` holds one (column, rule, detail) per rule."""

    def __init__(self, failures: list[tuple[str, str, str]]) -> None:
        self.failures = failures
        broken = "; ".join(f"{column} [{rule}]: {detail}" for column, rule, detail in failures)
        super().__init__(f"raw events fail validation: {broken}")
