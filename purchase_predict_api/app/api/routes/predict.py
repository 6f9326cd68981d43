"""Purchase predictions for one session or a batch."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request

from app.api.deps import MODEL_NOT_LOADED, ModelDep
from app.models import (
    MAX_BODY_BYTES,
    MAX_SESSIONS,
    SESSION_EXAMPLE,
    ErrorMessage,
    Prediction,
    PredictionResponse,
    PredictRequest,
)

router = APIRouter(tags=["predictions"])


@router.post(
    "/predict",
    summary="Purchase probability of carted sessions",
    responses={
        400: {"model": ErrorMessage, "description": "body cannot be read as JSON text"},
        413: {"model": ErrorMessage, "description": f"body larger than {MAX_BODY_BYTES} bytes"},
        503: {"model": ErrorMessage, "description": MODEL_NOT_LOADED},
    },
)
def predict(
    body: Annotated[
        PredictRequest,
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
) -> PredictionResponse:
    """Probability and predicted label of each session, in request order."""
    sessions = body if isinstance(body, list) else [body]
    request.state.sessions = len(sessions)
    probabilities = model.purchase_probabilities(sessions)
    threshold = model.meta.decision_threshold
    return PredictionResponse(
        model_name=model.meta.name,
        model_version=model.meta.version,
        decision_threshold=threshold,
        predictions=[
            Prediction(probability=p, purchased=p >= threshold) for p in probabilities.tolist()
        ],
    )
