"""Request and response models of the API.

A session's fields are the contract's feature columns (``purchase_contract.features``), in
contract order, with the contract's types and bounds: the request model is built from that list,
so a feature added there is a field here.
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

from purchase_contract.features import (
    FEATURES,
    MAX_TEXT_LENGTH,
    TEXT_FEATURES,
    Feature,
    example_session,
)

# Largest batch one request may carry (the 10,000-session benchmark fits).
MAX_SESSIONS = 10_000
# Request body limit: a full batch with every string at its longest (in ASCII) stays below it.
MAX_BODY_BYTES = 8 * 1024 * 1024
# The 413 answer: the limit, and why (a batch of long non-ASCII text may not fit).
BODY_LIMIT_DETAIL = (
    f"request body larger than {MAX_BODY_BYTES} bytes ({MAX_BODY_BYTES / 2**20:g} MiB, which "
    f"holds {MAX_SESSIONS:,} "
    f"sessions with every text field at its {MAX_TEXT_LENGTH} characters in ASCII; non-ASCII "
    "text takes up to 4 bytes a character, 12 as \\u escapes): send fewer sessions per request"
)
# The errors a 422 lists (its error_count says how many there are in all), and the characters
# of a string in an error's loc (an unknown field's name) beyond which it is cut.
MAX_REPORTED_ERRORS = 100
MAX_LOC_CHARS = 64


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


def _field(feature: Feature, *, whole_floats: bool = True) -> Any:
    """The pydantic annotation of one contract feature (text fields may be absent); without
    ``whole_floats``, an integer field takes integers only (17.0 is refused)."""
    description = Field(description=feature.description)
    if feature.kind == "integer" and not whole_floats:
        bounds = Field(strict=True, ge=feature.minimum, le=feature.maximum)
        return Annotated[int, bounds, description]
    if feature.kind == "integer":
        return Annotated[int, WholeNumber(feature.minimum, feature.maximum), description]
    if feature.kind == "number":
        upper = {"lt" if feature.maximum_exclusive else "le": feature.maximum}
        bounds = Field(ge=feature.minimum, allow_inf_nan=False, **upper)
        return Annotated[float, bounds, description]
    # Text: validated by pydantic-core alone. "" (like null or absence) is an unknown value to
    # the model: the prediction treats all three alike (app.model.frame), as training's data does.
    text = StringConstraints(
        strip_whitespace=feature.lowercase,
        to_lower=feature.lowercase,
        max_length=MAX_TEXT_LENGTH,
    )
    return NotRequired[Annotated[str | None, text, description]]


SESSION_EXAMPLE: dict[str, Any] = example_session()

# A typed dict rather than a model class: validating 10,000 of them takes half the time, and
# the prediction reads them as columns anyway.
Session = with_config(
    ConfigDict(strict=True, extra="forbid", json_schema_extra={"examples": [SESSION_EXAMPLE]})
)(TypedDict("Session", {feature.name: _field(feature) for feature in FEATURES}))
Session.__doc__ = "One (session, product) that reached the cart: the model's feature columns."

# Session, but 17.0 is not an integer: what it accepts, Session accepts the same. Its only use
# is the quick reading of valid bodies (app.api.body), about 15 % faster without the float
# branch; anything it refuses is read again with Session.
IntegerSession = with_config(ConfigDict(strict=True, extra="forbid"))(
    TypedDict(
        "IntegerSession",
        {feature.name: _field(feature, whole_floats=False) for feature in FEATURES},
    )
)

# The session fields that hold text.
TEXT_FIELDS = TEXT_FEATURES
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


class FieldError(BaseModel):
    """One reason a request was refused: where, in words, and the error type."""

    loc: list[str | int] = Field(
        description=f"Path to the value: 'body', then 'session' or 'batch' and the index, then "
        f"the field (a name longer than {MAX_LOC_CHARS} characters is cut, '...' appended)."
    )
    msg: str
    type: str


class ValidationErrors(BaseModel):
    """An invalid request: its first errors, and how many there are."""

    detail: list[FieldError] = Field(
        max_length=MAX_REPORTED_ERRORS, description=f"The first {MAX_REPORTED_ERRORS} errors."
    )
    error_count: int = Field(
        ge=1, description="Number of errors in the request, all listed or not."
    )
