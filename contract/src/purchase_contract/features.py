"""The feature columns: the one list the Kedro nodes, the API's request model and the docs read.

A primary-table row is one carted (session, product): the features below, the identifiers
``user_id`` and ``user_session``, and the label ``purchased``. Adding a feature is one entry
here plus the expression that computes it (``purchase_predict/pipelines/data_processing``);
the request model, the example session and ``docs/features.md`` follow from this list.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

Kind = Literal["integer", "number", "text"]

LABEL = "purchased"
IDENTIFIERS: tuple[str, ...] = ("user_id", "user_session")
# One primary row per carted (session, product): the key gives the table a canonical row order.
ROW_KEY: tuple[str, ...] = ("user_session", "product_id")

# Text is at most this long (longer is refused by the API, not cut).
MAX_TEXT_LENGTH = 100
# Generous upper bounds that keep every number well inside int64 / float64 arithmetic.
MAX_COUNT = 1_000_000_000
MAX_PRICE = 1_000_000.0
MAX_DURATION_SECONDS = 1_000_000_000.0
# The largest integer every JSON client (and JSON Schema validator) represents exactly.
MAX_PRODUCT_ID = 2**53 - 1

_PANDAS_DTYPES = {"integer": "int64", "number": "float64", "text": "object"}


@dataclass(frozen=True)
class Feature:
    """One model input column: its type, its bounds and what it means."""

    name: str
    kind: Kind
    description: str
    example: int | float | str
    minimum: int | float | None = None
    maximum: int | float | None = None
    # True: values must stay below ``maximum`` (a price of exactly MAX_PRICE is refused).
    maximum_exclusive: bool = False
    # Text is trimmed and lower-cased before use, in training and in the API alike.
    lowercase: bool = False
    # False for identifiers the model receives but ignores (product_id).
    model_input: bool = True
    # How the feature step computes it from the raw events of a pair (docs/features.md).
    definition: str = ""

    @property
    def categorical(self) -> bool:
        """Text columns are categories: encoded, unknown and missing values alike."""
        return self.kind == "text"

    @property
    def required(self) -> bool:
        """Numbers must be present; a missing text is an unknown category."""
        return self.kind != "text"

    @property
    def dtype(self) -> str:
        """The pandas dtype of the column in the model frame (text stays object)."""
        return _PANDAS_DTYPES[self.kind]

    def bounds_text(self) -> str:
        """The accepted values in one phrase, for docs and error messages."""
        if self.kind == "text":
            return f"text, at most {MAX_TEXT_LENGTH} characters, or null"
        upper = "<" if self.maximum_exclusive else "<="
        return f"{self.minimum} <= {self.kind} {upper} {self.maximum}"


def _count(name: str, description: str, example: int, definition: str) -> Feature:
    return Feature(
        name, "integer", description, example, minimum=0, maximum=MAX_COUNT, definition=definition
    )


FEATURES: tuple[Feature, ...] = (
    Feature(
        "product_id",
        "integer",
        "Product identifier.",
        1005115,
        minimum=0,
        maximum=MAX_PRODUCT_ID,
        model_input=False,
        definition="The pair's product.",
    ),
    Feature(
        "brand",
        "text",
        "Brand, trimmed and lower-cased as in training; null when unknown.",
        "apple",
        lowercase=True,
        definition="`brand` of the first cart event, trimmed and lower-cased; empty becomes null.",
    ),
    Feature(
        "price",
        "number",
        "Unit price.",
        915.69,
        minimum=0,
        maximum=MAX_PRICE,
        maximum_exclusive=True,
        definition="`price` of the first cart event (not of the views).",
    ),
    _count(
        "num_views_session",
        "Product views in this session.",
        12,
        "`view` events in the session, all products, duplicates removed.",
    ),
    _count(
        "num_views_product",
        "Views of this product in this session.",
        3,
        "`view` events of this product in the session, before or after the cart.",
    ),
    Feature(
        "category",
        "text",
        "Top-level category; null if unknown.",
        "electronics",
        definition="First dot-separated part of the first cart event's `category_code` (`electronics`); null when the code is missing or empty.",
    ),
    Feature(
        "sub_category",
        "text",
        "Sub-category; null if unknown.",
        "smartphone",
        definition="Second part (`smartphone`); null when the code is missing or has one part (`kids`). A third part is not used.",
    ),
    Feature(
        "hour",
        "integer",
        "Hour of the cart event.",
        14,
        minimum=0,
        maximum=23,
        definition="Hour (UTC) of the first cart event.",
    ),
    Feature(
        "minute",
        "integer",
        "Minute of the cart event.",
        27,
        minimum=0,
        maximum=59,
        definition="Minute of the first cart event.",
    ),
    Feature(
        "weekday",
        "integer",
        "Day of the week, Monday = 0.",
        2,
        minimum=0,
        maximum=6,
        definition="Day of the week of the first cart event, **Monday = 0**, Sunday = 6.",
    ),
    Feature(
        "duration",
        "number",
        "Session length, seconds.",
        431.0,
        minimum=0,
        maximum=MAX_DURATION_SECONDS,
        definition="Session end minus session start, over all its events (views, carts, purchases of every product). 0 for a single-event session.",
    ),
    _count(
        "num_prev_sessions",
        "Earlier sessions of the user.",
        4,
        "Sessions of the same user that started **strictly before** this session started, carted or not.",
    ),
    _count(
        "num_prev_product_views",
        "Earlier views of this product by the user.",
        1,
        "`view` events of this product by the same user in those earlier sessions; 0 when none.",
    ),
)

FEATURE_NAMES: tuple[str, ...] = tuple(feature.name for feature in FEATURES)
# Column -> pandas dtype of the model frame, in contract order.
FEATURE_DTYPES: dict[str, str] = {feature.name: feature.dtype for feature in FEATURES}
CATEGORICAL_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.categorical)
# The numbers the model reads (identifiers such as product_id are not quantities).
NUMERIC_FEATURES: tuple[str, ...] = tuple(
    f.name for f in FEATURES if not f.categorical and f.model_input
)
TEXT_FEATURES = frozenset(CATEGORICAL_FEATURES)
# The primary table's columns in canonical order: features, identifiers, label.
PRIMARY_COLUMNS: tuple[str, ...] = (*FEATURE_NAMES, *IDENTIFIERS, LABEL)


def feature(name: str) -> Feature:
    """The feature called ``name``; an unknown name is a KeyError listing the known ones."""
    for candidate in FEATURES:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no feature {name!r} (known: {', '.join(FEATURE_NAMES)})")


def example_session() -> dict[str, int | float | str]:
    """One valid session, every feature at its example value, in contract order."""
    return {f.name: f.example for f in FEATURES}


def example_session_json() -> str:
    """The example session as indented JSON with a final newline: what
    ``python -m purchase_contract example`` prints and the deploy's smoke test sends."""
    return json.dumps(example_session(), indent=2) + "\n"
