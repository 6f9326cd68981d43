"""Fetch mode with MLflow unreachable: the start fails soon, says what it waited for, and the
bounds can be changed from the environment."""

from __future__ import annotations

import logging
import os
import socket

import pytest

from app.core.config import Settings
from app.model.loading import FETCH_BOUNDS, load_model
from purchase_contract.model_dir import ModelSourceError


@pytest.fixture
def unreachable_mlflow(monkeypatch: pytest.MonkeyPatch) -> str:
    """A loopback URL nothing listens on (connection refused at once); no retry back-off."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    return f"http://127.0.0.1:{port}"


def _settings(uri: str) -> Settings:
    return Settings(model_uri="models:/purchase_predict@staging", mlflow_tracking_uri=uri)


def test_mlflow_down_fails_the_start_with_the_uri_and_the_bounds_logged(
    unreachable_mlflow: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, logger="app.model.loading"),
        pytest.raises(ModelSourceError, match="models:/purchase_predict@staging"),
    ):
        load_model(_settings(unreachable_mlflow))

    # MLflow's own defaults (7 retries, 120 s a request) are replaced by the bounded ones.
    assert {name: os.environ[name] for name in FETCH_BOUNDS} == FETCH_BOUNDS
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fetching ")]
    assert line == (
        f"fetching models:/purchase_predict@staging from {unreachable_mlflow} (at most 3 "
        "retries, 10 s a request: MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT)"
    )


def test_the_environment_sets_other_bounds(
    unreachable_mlflow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(ModelSourceError):
        load_model(_settings(unreachable_mlflow))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
