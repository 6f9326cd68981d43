"""Service settings: one pydantic-settings class read from the environment."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.core.faults import Faults


class Settings(BaseSettings):
    """Environment variables of the service (names are the upper-case field names).

    The model comes from exactly one place: ``MODEL_PATH`` (a directory baked by
    ``scripts/bake_model.py``, what the image uses) or ``MODEL_URI`` (``models:/<name>@<alias>``
    or ``models:/<name>/<version>``, fetched from ``MLFLOW_TRACKING_URI`` at start).
    """

    # Empty variables count as unset, so `-e MODEL_PATH=` switches an image to fetch mode.
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore", frozen=True)

    model_path: Path | None = Field(
        default=None, description="Directory holding the MLflow model and model_meta.json."
    )
    model_uri: str | None = Field(
        default=None, description="models:/<name>@<alias> or models:/<name>/<version>."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None, description="MLflow server (or store) MODEL_URI is resolved against."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 in the image.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port to listen on.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    git_sha: str = Field(default="unknown", description="Commit the image was built from.")
    image_tag: str = Field(default="unknown", description="Tag of the running image.")
    request_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a client has to send a whole request (headers and body) once it "
        "connects or starts one; then 408 and the connection is closed.",
    )
    graceful_shutdown_s: float = Field(
        default=8.0,
        ge=0,
        description="Seconds in-flight requests have to finish after SIGTERM (Cloud Run allows "
        "10); those still running then are answered 503.",
    )
    docs_ui: bool = Field(
        default=False,
        description="Serve the Swagger UI at /docs (it loads its scripts from a CDN); "
        "/openapi.json is always served.",
    )
    compiled_trees: bool = Field(
        default=True,
        description="Evaluate the trees with the library compiled at image build "
        "(serving_trees.so) when it is there and verified; false: LightGBM's library (A/B).",
    )
    # Cloud Run's container contract sets K_SERVICE, K_REVISION and K_CONFIGURATION in every
    # revision (cloud.google.com/run/docs/container-contract#env-vars); the stand-in does too.
    k_revision: str | None = Field(
        default=None, description="Cloud Run revision serving (K_REVISION, set by Cloud Run)."
    )
    inject_faults: str = Field(
        default="",
        description="Tests only: faults of POST /predict, e.g. error-rate=0.2,latency-ms=300,"
        "skew=0.1 (app/core/faults.py); empty is off.",
    )

    def served_by(self, model_name: str, model_version: str) -> dict[str, str]:
        """Response headers naming who answered: the image tag, the model version, and the
        Cloud Run revision when there is one (probes and logs attribute answers with them)."""
        headers = {
            "Purchase-Predict-Image-Tag": self.image_tag,
            "Purchase-Predict-Model": f"{model_name}/{model_version}",
        }
        if self.k_revision:
            headers["Purchase-Predict-Revision"] = self.k_revision
        return headers

    @field_validator("inject_faults")
    @classmethod
    def _faults_parse(cls, value: str) -> str:
        Faults.parse(value)  # a bad item is a settings error: the process refuses to start
        return value

    @model_validator(mode="after")
    def _one_model_source(self) -> Settings:
        if (self.model_path is None) == (self.model_uri is None):
            given = "both are set" if self.model_path else "neither is set"
            raise ValueError(f"set exactly one of MODEL_PATH or MODEL_URI ({given})")
        if self.model_uri is not None and not self.mlflow_tracking_uri:
            raise ValueError(f"MODEL_URI={self.model_uri} needs MLFLOW_TRACKING_URI")
        return self


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
