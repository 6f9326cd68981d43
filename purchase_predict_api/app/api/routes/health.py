"""Liveness, readiness and version: what probes and people ask the service."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app import __version__
from app.api.deps import MODEL_NOT_LOADED, ModelDep, OptionalModelDep, SettingsDep
from app.models import ErrorMessage, Health, Readiness, VersionInfo

# Routes are ``async def``: nothing here waits, and a plain ``def`` would be run in a worker
# thread (a hand-over and back for every probe).
router = APIRouter(tags=["operations"])


@router.get("/health", summary="The process is alive")
async def health() -> Health:
    """Always 200 while the process answers; says nothing about the model."""
    return Health()


@router.get(
    "/ready",
    summary="The model is loaded",
    responses={
        503: {"model": ErrorMessage, "description": f"{MODEL_NOT_LOADED}, or cut by shutdown"}
    },
)
async def ready(model: ModelDep, request: Request, response: Response) -> Readiness:
    """200 once the model is loaded and predictions are served; 503 before."""
    response.headers.update(request.app.state.served_by)
    return Readiness(model_name=model.meta.name, model_version=model.meta.version)


@router.get("/version", summary="Code, image and model of this process")
async def version(settings: SettingsDep, model: OptionalModelDep) -> VersionInfo:
    """Git SHA and image tag of the build, and the registered model version served."""
    meta = model.meta if model is not None else None
    return VersionInfo(
        api_version=__version__,
        git_sha=settings.git_sha if settings else "unknown",
        image_tag=settings.image_tag if settings else "unknown",
        model_name=meta.name if meta else None,
        model_version=meta.version if meta else None,
        model_alias=meta.alias if meta else None,
        model_run_id=meta.run_id if meta else None,
        model_uri=meta.model_uri if meta else None,
    )
