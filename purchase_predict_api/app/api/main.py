"""All routes of the API."""

from fastapi import APIRouter

from app.api.routes import health, predict
from app.models import ErrorMessage

# Any request still running when the graceful-shutdown period ends (app/core/middleware.py).
CUT_BY_SHUTDOWN = {503: {"model": ErrorMessage, "description": "cut by shutdown: retry"}}

api_router = APIRouter(responses=CUT_BY_SHUTDOWN)
api_router.include_router(health.router)
api_router.include_router(predict.router)
