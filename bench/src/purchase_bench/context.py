"""The context every section shares: the scratch directory, the MLflow store, the registered
model baked as the image bakes it, the servers under test and the results so far."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purchase_bench.common import API_DIR, ROOT, TRAINING_DIR, say
from purchase_bench.servers import Server
from purchase_contract.features import example_session


@dataclass
class Bench:
    work: Path
    duration: float
    connections: list[int]
    events: list[int]
    results: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.tracking_uri = f"sqlite:///{self.work / 'mlflow.db'}"
        self.env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            "PYTHONUNBUFFERED": "1",
        }
        # The session the deploy's smoke test sends: the contract's example.
        self.session = example_session()
        self.model_dir = self.work / "model"
        self.unprepared_dir = self.work / "model-baked"

    def run(
        self,
        cmd: list[str],
        *,
        check: bool = True,
        env: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, check=check, env=env or self.env, **kwargs)

    # -- a registered model, baked as the image bakes it
    def model(self) -> None:
        say("training a model into a scratch MLflow store (automl_max_evals=4)")
        self.run(
            [
                "purchase-predict-generate",
                "--out",
                str(TRAINING_DIR / "data/01_raw/events.parquet"),
                "--if-missing",
            ]
        )
        self.run(["kedro", "run", "--params", "automl_max_evals=4"], cwd=TRAINING_DIR)
        self.run(
            [
                sys.executable,
                str(ROOT / "scripts/register_model.py"),
                "--training-run-json",
                str(TRAINING_DIR / "data/08_reporting/training_run.json"),
                "--alias",
                "bench",
            ],
            stdout=subprocess.DEVNULL,
        )
        model_name = self.model_name()
        self.model_uri = f"models:/{model_name}@bench"
        self.run(
            [
                sys.executable,
                str(ROOT / "scripts/bake_model.py"),
                "--model-uri",
                self.model_uri,
                "--out",
                str(self.model_dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        # As baked, before the API's prepare step: what another version of the API prepares.
        shutil.copytree(self.model_dir, self.unprepared_dir)
        self.run([sys.executable, "-m", "app.prepare", str(self.model_dir)], cwd=API_DIR)

    @staticmethod
    def model_name() -> str:
        from purchase_contract.config import load_config  # noqa: PLC0415

        return load_config().model_name

    # -- the servers under test
    def ours(self, **env: str) -> Server:
        mode = "fetch" if "MODEL_URI" in env else "baked"
        return Server(
            name=f"purchase-predict-api ({mode})",
            cmd=[sys.executable, "-m", "app"],
            env={**self.env, **env},
            path="/predict",
            body=json.dumps(self.session).encode(),
            log=self.work / f"api-{mode}.log",
        )

    def baked(self) -> Server:
        return self.ours(MODEL_PATH=str(self.model_dir))

    def minimal_route(self) -> Server:
        """A FastAPI route that only validates the same body (purchase_bench.minimal_app)."""
        return Server(
            name="minimal FastAPI route",
            cmd=[
                sys.executable,
                "-m",
                "uvicorn",
                "purchase_bench.minimal_app:app",
                "--app-dir",
                str(API_DIR),
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=self.env,
            path="/predict",
            body=json.dumps(self.session).encode(),
            log=self.work / "minimal-route.log",
        )

    def mlflow_serve(self, tracking_uri: str | None = None) -> Server:
        mlflow = shutil.which("mlflow") or "mlflow"
        return Server(
            name="mlflow models serve",
            cmd=[
                mlflow,
                "models",
                "serve",
                "-m",
                self.model_uri,
                "--env-manager",
                "local",
                "--workers",
                "1",
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
            ],
            env={**self.env, "MLFLOW_TRACKING_URI": tracking_uri or self.tracking_uri},
            path="/invocations",
            body=json.dumps({"dataframe_records": [self.session]}).encode(),
            log=self.work / "mlflow-serve.log",
        )
