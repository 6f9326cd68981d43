"""Property-based fuzzing of the OpenAPI schema with schemathesis, every default check on.

Positive and negative (schema-violating) requests go to the app in-process with its model
loaded: no 5xx, every response conforms to the schema, invalid data is rejected.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings

from app.core.config import Settings
from app.main import create_app

# The app's own schema, read without starting it (no model needed at collection time); the
# model-backed app is bound per test below. schemathesis.pytest.from_fixture would do both,
# but its lazy loader does not run under pytest 9.2 (it rewrites a removed Node attribute).
schema = schemathesis.openapi.from_dict(create_app().openapi())


@pytest.fixture(scope="module")
def served_app(baked_model_dir: Path) -> FastAPI:
    """The app with the baked model; schemathesis runs its lifespan on the first call."""
    return create_app(Settings(model_path=baked_model_dir))


@schema.parametrize()
# Default example counts; shared CI machines vary too much for Hypothesis' default deadline.
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_api_conforms_to_its_schema(case: schemathesis.Case, served_app: FastAPI) -> None:
    case.call_and_validate(app=served_app)
