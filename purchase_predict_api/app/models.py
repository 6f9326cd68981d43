"""Request and response models of the API.

A session's fields are the model contract's feature columns (the primary table minus
``purchased``, ``user_id`` and ``user_session``), in contract order, with the contract's types.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

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


def _integral_number(value: Any) -> Any:
    """17.0 is the integer 17 in JSON (and JSON Schema); 17.5 and "17" still fail strictly."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A strict integer that, like JSON Schema's "integer", also accepts a number with no fraction.
Integer = Annotated[int, BeforeValidator(_integral_number)]
Category = Annotated[str | None, Field(max_length=MAX_TEXT_LENGTH)]

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


class Session(BaseModel):
    """One (session, product) that reached the cart: the model's feature columns."""

    model_config = ConfigDict(
        strict=True, extra="forbid", json_schema_extra={"examples": [SESSION_EXAMPLE]}
    )

    product_id: Integer = Field(ge=0, le=MAX_PRODUCT_ID, description="Product identifier.")
    brand: Category = Field(default=None, description="Brand; null when unknown.")
    price: float = Field(ge=0, lt=MAX_PRICE, allow_inf_nan=False, description="Unit price.")
    num_views_session: Integer = Field(
        ge=0, le=MAX_COUNT, description="Product views in this session."
    )
    num_views_product: Integer = Field(
        ge=0, le=MAX_COUNT, description="Views of this product in this session."
    )
    category: Category = Field(default=None, description="Top-level category; null if unknown.")
    sub_category: Category = Field(default=None, description="Sub-category; null if unknown.")
    hour: Integer = Field(ge=0, le=23, description="Hour of the cart event.")
    minute: Integer = Field(ge=0, le=59, description="Minute of the cart event.")
    weekday: Integer = Field(ge=0, le=6, description="Day of the week, Monday = 0.")
    duration: float = Field(
        ge=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False, description="Session length, seconds."
    )
    num_prev_sessions: Integer = Field(
        ge=0, le=MAX_COUNT, description="Earlier sessions of the user."
    )
    num_prev_product_views: Integer = Field(
        ge=0, le=MAX_COUNT, description="Earlier views of this product by the user."
    )

    @field_validator("brand")
    @classmethod
    def _brand_as_in_training(cls, brand: str | None) -> str | None:
        """Trimmed and lower-cased, empty is null: the data contract's brand."""
        return (brand.strip().lower() or None) if brand is not None else None

    @field_validator("category", "sub_category")
    @classmethod
    def _empty_category_is_null(cls, value: str | None) -> str | None:
        """An empty category code part is null in the data contract."""
        return value or None


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
