"""Shared route dependencies, as ``Annotated`` aliases.

All ``async def``: FastAPI runs a plain ``def`` dependency in a worker thread, and two such
hand-overs per request cost a single-session prediction more than the prediction itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.core.config import Settings
from app.model.loading import LoadedModel

MODEL_NOT_LOADED = "model not loaded"


async def get_settings_or_none(request: Request) -> Settings | None:
    """The settings the app started with; None before its lifespan has run."""
    return request.app.state.settings


async def get_model_or_none(request: Request) -> LoadedModel | None:
    """The loaded model, or None before (or without) a successful load."""
    return request.app.state.model


async def get_model(request: Request) -> LoadedModel:
    """The loaded model; 503 while there is none (one dependency, not two: each costs)."""
    model = request.app.state.model
    if model is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, MODEL_NOT_LOADED)
    return model


SettingsDep = Annotated[Settings | None, Depends(get_settings_or_none)]
OptionalModelDep = Annotated[LoadedModel | None, Depends(get_model_or_none)]
ModelDep = Annotated[LoadedModel, Depends(get_model)]
