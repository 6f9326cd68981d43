"""All routes of the API."""

from fastapi import APIRouter, FastAPI

from app.api.routes import health, predict
from app.models import ErrorMessage

# Any request still running when the graceful-shutdown period ends (app/core/middleware.py).
CUT_BY_SHUTDOWN = {503: {"model": ErrorMessage, "description": "cut by shutdown: retry"}}

# /predict first: the router tries routes in order, and it is the one that is called most.
ROUTERS: tuple[APIRouter, ...] = (predict.router, health.router)


def include_routes(app: FastAPI) -> None:
    """Every router straight on the app: FastAPI matches nested routers level by level, which
    cost a single-session prediction about a tenth of its time."""
    for router in ROUTERS:
        app.include_router(router, responses=CUT_BY_SHUTDOWN)
