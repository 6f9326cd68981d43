"""Purchase predictions for one session or a batch."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import SkipValidation
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from app.api.body import BodyNotText, ErrorReport, NotQuick, quick_chunks, read_sessions
from app.api.deps import MODEL_NOT_LOADED, ModelDep, get_model
from app.model.loading import LoadedModel
from app.models import (
    MAX_BODY_BYTES,
    MAX_REPORTED_ERRORS,
    MAX_SESSIONS,
    SESSION_EXAMPLE,
    ErrorMessage,
    PredictionResponse,
    PredictRequest,
    Session,
    ValidationErrors,
)

JSON_MEDIA_TYPE = "application/json"
# Bodies up to this size are answered on the event loop, larger ones in a worker thread. The
# worst body this size (about 1,400 empty sessions, each refused) holds the loop a few ms.
INLINE_BODY_BYTES = 4096
# FastAPI's words for a body it cannot read as text.
BODY_NOT_TEXT = "There was an error parsing the body"


def _is_json(media_type: str) -> bool:
    """``application/json`` or ``application/<anything>+json``, parameters aside (FastAPI's
    own rule for reading a body as JSON)."""
    kind = media_type.split(";", 1)[0].strip().lower()
    return kind == JSON_MEDIA_TYPE or (kind.startswith("application/") and kind.endswith("+json"))


class _PredictRoute(APIRoute):
    """The route's own request handling, through FastAPI's documented hook for it.

    FastAPI's handler would resolve the dependencies and read the body parameter for every
    request: about a third of a single-session prediction's time, for a body this route
    parses and validates itself anyway (app/api/body.py) and one dependency. This handler
    calls the endpoint with them directly; the endpoint's signature still makes the OpenAPI
    schema. It is also where ``INJECT_FAULTS`` delays or fails a request (app/core/faults.py),
    off by default.
    """

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        """The handler: faults, the Content-Type, the model (503 without), the endpoint."""
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            # INJECT_FAULTS (tests only): latency and injected 500s, before anything else.
            faults = request.app.state.faults
            if faults is not None:
                injected = await faults.before_predict(request.app.state.served_by)
                if injected is not None:
                    return injected
            media_type = request.headers.get("content-type", JSON_MEDIA_TYPE)
            if not _is_json(media_type):
                # FastAPI would validate the raw bytes: "Input should be a valid dictionary".
                detail = f"Content-Type must be {JSON_MEDIA_TYPE}, got {media_type[:100]!r}"
                return JSONResponse({"detail": detail}, status_code=415)
            model = await get_model(request)
            return await endpoint(body=None, model=model, request=request)

        return handle


router = APIRouter(tags=["predictions"], route_class=_PredictRoute)


@router.post(
    "/predict",
    summary="Purchase probability of carted sessions",
    response_model=PredictionResponse,
    responses={
        400: {"model": ErrorMessage, "description": "body is not UTF-8 text"},
        413: {"model": ErrorMessage, "description": f"body larger than {MAX_BODY_BYTES} bytes"},
        415: {"model": ErrorMessage, "description": f"Content-Type is not {JSON_MEDIA_TYPE}"},
        422: {
            "model": ValidationErrors,
            "description": f"invalid body: its first {MAX_REPORTED_ERRORS} errors and their count",
        },
        503: {"model": ErrorMessage, "description": f"{MODEL_NOT_LOADED}, or cut by shutdown"},
    },
)
async def predict(
    # Declared for the OpenAPI schema; the route reads the body itself (_PredictRoute).
    body: Annotated[
        PredictRequest,
        SkipValidation,
        Body(
            description=f"One session (an object) or 1 to {MAX_SESSIONS} sessions (an array).",
            openapi_examples={
                "one session": {"value": SESSION_EXAMPLE},
                "batch": {"value": [SESSION_EXAMPLE, {**SESSION_EXAMPLE, "brand": None}]},
            },
        ),
    ],
    model: ModelDep,
    request: Request,
) -> Response:
    """Probability and predicted label of each session, in request order."""
    body = await request.body()
    if len(body) <= INLINE_BODY_BYTES:
        # A session or a few: answered on the event loop in tens of microseconds, less than
        # the hand-over to a worker thread and back costs.
        return _answer(body, model, request)
    # Parsed, validated and predicted in a worker thread: a large request, valid or not,
    # leaves the event loop free for the others.
    return await run_in_threadpool(_answer, body, model, request)


def _answer(body: bytes, model: LoadedModel, request: Request) -> Response:
    """The answer to ``body``: predictions, or the 400 or 422 saying what is wrong.

    The answer is written straight to JSON by pydantic-core: building and re-validating one
    response model per session cost more than the prediction itself (60 ms of 10,000 sessions'
    180 ms). Its shape is ``PredictionResponse``, as the OpenAPI schema says (the tests check
    both agree).
    """
    try:
        probabilities = _probabilities(model, quick_chunks(body))
    except NotQuick:
        # Invalid, or unusual: read again the careful way, which says what is wrong.
        try:
            sessions = read_sessions(body)
        except BodyNotText:
            return JSONResponse({"detail": BODY_NOT_TEXT}, status_code=400)
        if isinstance(sessions, ErrorReport):
            return sessions.response()
        probabilities = model.purchase_probabilities(sessions)
    request.state.sessions = len(probabilities)
    if (faults := request.app.state.faults) is not None:
        probabilities = faults.skewed(probabilities)
    threshold = model.meta.decision_threshold
    answer = {
        "model_name": model.meta.name,
        "model_version": model.meta.version,
        "decision_threshold": threshold,
        "predictions": [
            {"probability": p, "purchased": p >= threshold} for p in probabilities.tolist()
        ],
    }
    # Probabilities are finite (the model is checked at load): NaN never needs writing.
    return Response(
        to_json(answer), media_type=JSON_MEDIA_TYPE, headers=request.app.state.served_by
    )


def _probabilities(model: LoadedModel, chunks: Iterator[list[Session]]) -> np.ndarray:
    """The model's answers to the sessions of ``chunks``, taken as they are validated (with
    the compiled form, the trees of one chunk run while the next one is validated)."""
    if model.compiled is not None:
        return model.compiled.predict_chunks(chunks)
    return model.purchase_probabilities([session for chunk in chunks for session in chunk])
