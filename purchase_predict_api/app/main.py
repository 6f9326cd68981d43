"""The FastAPI application: settings and model in the lifespan, routes, error shapes.

``uvicorn app.main:app`` (or ``python -m app``) reads its settings from the environment;
tests build their own app with ``create_app(settings)``.
"""

from __future__ import annotations

import gc
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from app import __version__
from app.api.body import validation_error_response
from app.api.main import include_routes
from app.core.config import Settings, get_settings
from app.core.faults import start_faults
from app.core.middleware import ServingMiddleware
from app.core.startup import stoppable
from app.model.loading import FETCH_DIR_PREFIX, LoadedModel, load_model
from app.models import BODY_LIMIT_DETAIL, MAX_BODY_BYTES
from purchase_contract.model_dir import ModelSourceError

logger = logging.getLogger(__name__)

# What a production prediction service exposes (docs/api.md, "What is exposed"): the schema
# always, the Swagger UI (its scripts come from a CDN) only with DOCS_UI; no ReDoc, no OAuth2
# redirect page (there is no OAuth2), and no trailing-slash redirect (it would reflect the
# request's Host header into Location).
EXPOSURE = {"redoc_url": None, "swagger_ui_oauth2_redirect_url": None, "redirect_slashes": False}

# Allocations between two young-generation garbage collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 100_000
# Seconds a thread holds the GIL before another one waiting for it gets it.
GIL_SWITCH_INTERVAL_S = 0.001


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; ``settings`` default to the environment's, read at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Loaded before the port serves traffic: a revision that cannot load never gets any.
        started = time.perf_counter()
        try:
            app.state.settings = active = settings or get_settings()
            model = await _load(active)
        except (ModelSourceError, ValidationError) as err:
            logger.error("cannot load the model: %s", err)
            raise
        app.state.model = model
        app.state.served_by = active.served_by(model.meta.name, model.meta.version)
        app.state.faults = start_faults(active.inject_faults)  # None unless INJECT_FAULTS
        seconds = time.perf_counter() - started
        logger.info(
            "model %s version %s loaded in %.2f s",
            model.meta.name,
            model.meta.version,
            seconds,
            extra={
                "fields": {
                    "model_name": model.meta.name,
                    "model_version": model.meta.version,
                    "model_alias": model.meta.alias,
                    "load_seconds": round(seconds, 3),
                }
            },
        )
        _tune_runtime()
        yield
        app.state.model = None

    app = FastAPI(
        title="purchase-predict API",
        version=__version__,
        description="Probability that a carted product is purchased, from the registered model.",
        lifespan=lifespan,
        docs_url="/docs" if _docs_ui(settings) else None,
        **EXPOSURE,
    )
    app.state.settings = settings
    app.state.model = None
    app.state.served_by = {}
    app.state.faults = None
    include_routes(app)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # Outermost of the app's own: refused (413), cut (503) and failed requests are logged too.
    app.add_middleware(ServingMiddleware, max_bytes=MAX_BODY_BYTES, detail=BODY_LIMIT_DETAIL)
    return app


async def _load(settings: Settings) -> LoadedModel:
    """The model of the settings; a fetch from MLflow (which may wait on a server that does
    not answer) ends at once on SIGTERM or SIGINT, a baked directory is read as it is."""
    if settings.model_uri is None:
        return load_model(settings)
    # Its own directory, removed here whatever happens: a stopped start abandons the fetch.
    work = Path(tempfile.mkdtemp(prefix=FETCH_DIR_PREFIX))
    try:
        return await stoppable(
            lambda: load_model(settings, work_dir=work),
            doing=f"fetching {settings.model_uri} from {settings.mlflow_tracking_uri}",
            on_stop=lambda: shutil.rmtree(work, ignore_errors=True),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tune_runtime() -> None:
    """The collector and the GIL, set for a serving process once the model is loaded."""
    # What start-up built (modules, routes, the model) lives as long as the process: out of
    # the collector's way, so that full collections stay short (tail latency). Requests
    # allocate tens of thousands of containers (a 10,000-session batch: about 40,000) and
    # free them when answered: a young-generation collection every 700 of them cost a
    # batch 10 ms for nothing; every 100,000, at most one runs per batch.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    # The event loop waits for the GIL up to this long each time a worker thread holds it
    # (Python's default: 5 ms); a request needs it several times, so a large body being
    # validated (app/api/body.py) would add tens of ms to every other request.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


def _docs_ui(settings: Settings | None) -> bool:
    """``DOCS_UI`` of ``settings``, else of the environment (False while the environment is
    invalid: the lifespan then stops the process with the reason)."""
    if settings is not None:
        return settings.docs_ui
    try:
        return get_settings().docs_ui
    except ValidationError:
        return False


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    """422 naming the offending fields (the first ones, and their count), without echoing the
    input back (it may be huge or NaN). ``POST /predict`` validates its body itself
    (app/api/body.py); FastAPI's own errors (an empty body) are answered in the same shape."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return validation_error_response(list(errors), len(errors))


app = create_app()
