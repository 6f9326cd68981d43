"""Request and response models of the API.

A session's fields are the model contract's feature columns (the primary table minus
``purchased``, ``user_id`` and ``user_session``), in contract order, with the contract's types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    Tag,
    TypeAdapter,
    with_config,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import TypedDict  # pydantic needs its TypedDict before Python 3.12

# Largest batch one request may carry (the 10,000-session benchmark fits).
MAX_SESSIONS = 10_000
# Request body limit: a full batch with every string at its longest stays below it.
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_TEXT_LENGTH = 100
# Generous upper bounds that keep every number well inside int64 / float64 arithmetic.
MAX_COUNT = 1_000_000_000
MAX_PRICE = 1_000_000.0
MAX_DURATION_SECONDS = 1_000_000_000.0
# The largest integer every JSON client (and JSON Schema validator) represents exactly.
MAX_PRODUCT_ID = 2**53 - 1


def _whole_number(value: float) -> int:
    if value.is_integer():
        return int(value)
    raise PydanticCustomError("int_type", "Input should be a valid integer")


@dataclass(frozen=True)
class WholeNumber:
    """A strict integer in ``[ge, le]`` that, like JSON Schema's "integer", also accepts a number
    with no fraction (17.0 is the integer 17; 17.5, "17" and true are refused).

    Built from pydantic-core's own validators, so an integer input never calls Python: a
    ``BeforeValidator`` on the eight integer fields cost 20 of a 10,000-session batch's 40 ms of
    validation.
    """

    ge: int
    le: int

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> Any:
        """Strict int, else a strict float with no fraction made int; then the bounds."""
        from_float = core_schema.chain_schema(
            [
                core_schema.float_schema(strict=True),
                core_schema.no_info_plain_validator_function(_whole_number),
            ]
        )
        number = core_schema.union_schema(
            [core_schema.int_schema(strict=True), from_float], custom_error_type="int_type"
        )
        bounds = core_schema.int_schema(ge=self.ge, le=self.le, strict=True)
        return core_schema.chain_schema([number, bounds])

    def __get_pydantic_json_schema__(
        self, schema: Any, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        """An integer with its bounds, as a client sees it."""
        return handler(core_schema.int_schema(ge=self.ge, le=self.le))


# A count of events or sessions.
Count = Annotated[int, WholeNumber(0, MAX_COUNT)]


# Text fields: validated by pydantic-core alone. "" (like null or absence) is an unknown value
# to the model: the prediction treats both alike (app.core.model), as training's data does.
Brand = Annotated[
    str | None,
    StringConstraints(strip_whitespace=True, to_lower=True, max_length=MAX_TEXT_LENGTH),
    Field(description="Brand, trimmed and lower-cased as in training; null when unknown."),
]

SESSION_EXAMPLE: dict[str, Any] = {
    "product_id": 1005115,
    "brand": "apple",
    "price": 915.69,
    "num_views_session": 12,
    "num_views_product": 3,
    "category": "electronics",
    "sub_category": "smartphone",
    "hour": 14,
    "minute": 27,
    "weekday": 2,
    "duration": 431.0,
    "num_prev_sessions": 4,
    "num_prev_product_views": 1,
}


@with_config(
    ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [SESSION_EXAMPLE]})
)
class Session(TypedDict):
    """One (session, product) that reached the cart: the model's feature columns."""

    # A typed dict rather than a model class: validating 10,000 of them takes half the time,
    # and the prediction reads them as columns anyway. Absent text fields are unknown values.

    product_id: Annotated[
        int, WholeNumber(0, MAX_PRODUCT_ID), Field(description="Product identifier.")
    ]
    brand: NotRequired[Brand]
    price: Annotated[
        float, Field(ge=0, lt=MAX_PRICE, allow_inf_nan=False, description="Unit price.")
    ]
    num_views_session: Annotated[Count, Field(description="Product views in this session.")]
    num_views_product: Annotated[Count, Field(description="Views of this product in this session.")]
    category: NotRequired[
        Annotated[
            str | None,
            Field(max_length=MAX_TEXT_LENGTH, description="Top-level category; null if unknown."),
        ]
    ]
    sub_category: NotRequired[
        Annotated[
            str | None,
            Field(max_length=MAX_TEXT_LENGTH, description="Sub-category; null if unknown."),
        ]
    ]
    hour: Annotated[int, WholeNumber(0, 23), Field(description="Hour of the cart event.")]
    minute: Annotated[int, WholeNumber(0, 59), Field(description="Minute of the cart event.")]
    weekday: Annotated[int, WholeNumber(0, 6), Field(description="Day of the week, Monday = 0.")]
    duration: Annotated[
        float,
        Field(
            ge=0,
            le=MAX_DURATION_SECONDS,
            allow_inf_nan=False,
            description="Session length, seconds.",
        ),
    ]
    num_prev_sessions: Annotated[Count, Field(description="Earlier sessions of the user.")]
    num_prev_product_views: Annotated[
        Count, Field(description="Earlier views of this product by the user.")
    ]


# The session fields that hold text.
TEXT_FIELDS = frozenset({"brand", "category", "sub_category"})
_SESSION = TypeAdapter(Session)


def validate_session(data: Any) -> Session:
    """``data`` checked as one session, as the API checks it (ValidationError otherwise)."""
    return _SESSION.validate_python(data)


def _body_kind(value: Any) -> str:
    return "batch" if isinstance(value, list) else "session"


# One session (a JSON object) or a batch (a JSON array); the tag names the branch in errors.
PredictRequest = Annotated[
    Annotated[Session, Tag("session")]
    | Annotated[list[Session], Tag("batch"), Field(min_length=1, max_length=MAX_SESSIONS)],
    Discriminator(_body_kind),
]


class Prediction(BaseModel):
    """The model's answer for one session."""

    probability: float = Field(ge=0, le=1, description="Probability of a purchase.")
    purchased: bool = Field(description="probability >= decision_threshold.")


class PredictionResponse(BaseModel):
    """Predictions in request order, and the model that made them."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    model_version: str
    decision_threshold: float = Field(ge=0, le=1)
    predictions: list[Prediction]


class Health(BaseModel):
    """The process answers."""

    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    """The model is loaded and predictions are served."""

    model_config = ConfigDict(protected_namespaces=())

    status: Literal["ready"] = "ready"
    model_name: str
    model_version: str


class VersionInfo(BaseModel):
    """What this process runs: code, image and model (model fields are null before loading)."""

    model_config = ConfigDict(protected_namespaces=())

    api_version: str
    git_sha: str
    image_tag: str
    model_name: str | None
    model_version: str | None
    model_alias: str | None
    model_run_id: str | None
    model_uri: str | None


class ErrorMessage(BaseModel):
    """A refused request: the reason in one line."""

    detail: str
