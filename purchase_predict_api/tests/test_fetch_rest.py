"""Fetch mode over MLflow's REST API, against a real ``mlflow server`` (proxied artifacts).

A version registered with its compiled form (``app.model.publish``, which the registration step
runs) is fetched with the standard library and served from the compiled form: a start that
imports neither MLflow nor scikit-learn, and answers as the baked image does. Anything else (an
older version, a database store) takes MLflow's client, with one log line saying why; a
missing alias or version is the same one-line error either way.
"""

from __future__ import annotations

import http.server
import json
import logging
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from app.core.config import Settings
from app.model.files import COMPILED_FILE
from app.model.loading import PREPARED_RECORD, load_model, load_model_dir
from app.model.publish import publish_compiled_form
from app.model.registry_rest import RegistryRest
from purchase_contract.model_dir import (
    REFERENCE_SAMPLE_ARTIFACT,
    REFERENCE_SAMPLE_FILE,
    ModelReference,
    ModelSourceError,
    ReferenceSample,
)
from purchase_contract.testing import reset_mlflow_state, running_mlflow_server

NAME = "rest-model"
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
]
# Run in a fresh interpreter where MLflow, scikit-learn, skops and pandas cannot be imported.
BLOCKER = """
import sys

BLOCKED = ("mlflow", "sklearn", "skops", "pandas")


class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} cannot be imported in this test")
        return None


sys.meta_path.insert(0, _Blocker())
"""
FETCH = """
import json, sys
from app.core.config import Settings
from app.model.loading import load_model
from app.models import validate_session

model = load_model(Settings(model_uri=sys.argv[1], mlflow_tracking_uri=sys.argv[2]))
sessions = [validate_session(s) for s in json.loads(sys.argv[3])]
print(json.dumps({
    "probabilities": model.purchase_probabilities(sessions).tolist(),
    "meta": [model.meta.name, model.meta.version, model.meta.alias, model.meta.run_id],
    "compiled": model.compiled is not None,
    "imported": sorted(m for m in ("mlflow", "sklearn", "skops", "pandas") if m in sys.modules),
}))
"""


@pytest.fixture(scope="module")
def rest_registry(
    tmp_path_factory: pytest.TempPathFactory, free_port, registered_model, make_sessions
) -> Iterator[dict]:
    """A real server holding the fixture model as training logs it (a reference sample in the
    run), registered twice: version 1 with its compiled form (@production), 2 without (@old)."""
    import mlflow  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415

    home = tmp_path_factory.mktemp("mlflow-rest")
    estimator = registered_model.estimator
    with running_mlflow_server(home, free_port()) as uri:
        reset_mlflow_state()
        try:
            mlflow.set_tracking_uri(uri)
            with mlflow.start_run() as run:
                _log_model(estimator)
                _log_reference_sample(estimator, make_sessions, run.info.run_id, home)
            # Another logged model (versions of one logged model share its files): as a
            # version registered before compiled forms were logged.
            with mlflow.start_run():
                _log_model(estimator)
            client = MlflowClient(uri)
            client.set_registered_model_alias(NAME, "production", "1")
            client.set_registered_model_alias(NAME, "old", "2")
        finally:
            reset_mlflow_state()
        logged = publish_compiled_form(NAME, "1", tracking_uri=uri)
        reset_mlflow_state()
        yield {"uri": uri, "run_id": run.info.run_id, "logged": logged}


def _log_model(estimator) -> None:
    """As training's log_model, registered as the next version of NAME."""
    import mlflow  # noqa: PLC0415

    mlflow.sklearn.log_model(
        estimator,
        name="model",
        pyfunc_predict_fn="predict_proba",
        metadata={"decision_threshold": 0.42},
        skops_trusted_types=SKOPS_TRUSTED_TYPES,
        pip_requirements=["scikit-learn", "lightgbm", "skops"],
        registered_model_name=NAME,
    )


def _log_reference_sample(estimator, make_sessions, run_id: str, home: Path) -> None:
    """As training's log_reference_sample: the sessions and their probabilities in the run."""
    import mlflow  # noqa: PLC0415

    frame = make_sessions(20, 3)
    sessions = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in frame.astype(object).to_dict(orient="records")
    ]
    probabilities = [float(p) for p in estimator.predict_proba(frame)[:, 1]]
    path = ReferenceSample("", run_id, sessions, probabilities).write(home / REFERENCE_SAMPLE_FILE)
    mlflow.log_artifact(str(path), artifact_path=str(Path(REFERENCE_SAMPLE_ARTIFACT).parent))


@pytest.fixture
def check_sessions(make_sessions, as_json_records) -> list[dict]:
    return as_json_records(make_sessions(40, 11))


def _fetch_in_fresh_interpreter(
    model_uri: str, tracking_uri: str, sessions: list[dict], app_environment, tmp_path: Path
) -> dict:
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(FETCH),
            model_uri,
            tracking_uri,
            json.dumps(sessions),
        ],
        env=app_environment(PYTHONPATH=str(tmp_path)),
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {**json.loads(done.stdout.splitlines()[-1]), "log": done.stderr}


def test_publishing_logs_the_compiled_form_beside_the_model(rest_registry) -> None:
    rest = RegistryRest(rest_registry["uri"])
    version = rest.model_version(ModelReference(name=NAME, version="1"))
    files = rest.list_files(rest.version_artifacts(version))

    assert rest_registry["logged"] == [COMPILED_FILE, PREPARED_RECORD]
    assert {"MLmodel", "model.skops", COMPILED_FILE, PREPARED_RECORD} <= set(files)
    # Nothing that fits one machine only: no pickle, no trees compiled to machine code.
    assert not [f for f in files if f.endswith((".pkl", ".so"))]


def test_fetch_without_mlflow_nor_scikit_learn_answers_as_baked_mode(
    rest_registry, prepared_dir: Path, check_sessions, app_environment, tmp_path: Path
) -> None:
    fetched = _fetch_in_fresh_interpreter(
        f"models:/{NAME}@production",
        rest_registry["uri"],
        check_sessions,
        app_environment,
        tmp_path,
    )

    assert fetched["imported"] == []
    assert fetched["compiled"] is True
    assert fetched["meta"] == [NAME, "1", "production", rest_registry["run_id"]]
    assert "with MLflow's client" not in fetched["log"]
    baked = load_model_dir(prepared_dir).purchase_probabilities(check_sessions)
    np.testing.assert_allclose(fetched["probabilities"], baked, rtol=0, atol=1e-9)


def test_the_fetched_directory_is_checked_against_the_runs_reference_sample(
    rest_registry, tmp_path: Path
) -> None:
    from app.model.source import fetch_model  # noqa: PLC0415

    meta = fetch_model(
        f"models:/{NAME}@production", tmp_path / "m", tracking_uri=rest_registry["uri"]
    )
    sample = ReferenceSample.read(tmp_path / "m" / REFERENCE_SAMPLE_FILE)

    assert sample.model_uri == meta.model_uri == f"models:/{NAME}/1"
    assert sample.run_id == rest_registry["run_id"]
    assert load_model_dir(tmp_path / "m").compiled is not None


def test_a_version_without_compiled_form_takes_mlflows_client_and_says_why(
    rest_registry, registered_model, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(model_uri=f"models:/{NAME}@old", mlflow_tracking_uri=rest_registry["uri"])
    with caplog.at_level(logging.INFO, logger="app.model.source"):
        model = load_model(settings)

    [line] = [r.getMessage() for r in caplog.records if "MLflow's client" in r.getMessage()]
    assert line == (
        f"fetching models:/{NAME}@old with MLflow's client: version 2 has no compiled form "
        f"({COMPILED_FILE}: logged at registration since it exists)"
    )
    # The alias was resolved once, over REST: the client downloads that version, not the alias.
    assert (model.meta.version, model.meta.alias) == ("2", "old")
    assert model.estimator is not None


def test_a_database_store_takes_mlflows_client_and_says_why(
    registered_model, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    settings = Settings(
        model_uri=f"models:/{registered_model.name}@{registered_model.alias}",
        mlflow_tracking_uri=registered_model.tracking_uri,
    )
    with caplog.at_level(logging.INFO, logger="app.model.source"):
        load_model(settings, tmp_path / "m")

    assert any(
        r.getMessage().endswith("with MLflow's client: the tracking URI is not http(s) (sqlite://)")
        for r in caplog.records
    )


@pytest.mark.parametrize(
    "model_uri",
    [f"models:/{NAME}@no-such-alias", f"models:/{NAME}/99", "models:/no-such-model@production"],
)
def test_a_missing_alias_version_or_model_is_the_clients_error(
    rest_registry, model_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.model.source import fetch_model  # noqa: PLC0415

    with pytest.raises(ModelSourceError) as over_rest:
        fetch_model(model_uri, tmp_path / "a", tracking_uri=rest_registry["uri"])
    # A setting only MLflow's client understands sends the same fetch through it.
    monkeypatch.setenv("MLFLOW_TRACKING_INSECURE_TLS", "true")
    with pytest.raises(ModelSourceError) as with_client:
        fetch_model(model_uri, tmp_path / "b", tracking_uri=rest_registry["uri"])

    assert str(over_rest.value) == str(with_client.value)
    assert str(over_rest.value).startswith(f"cannot fetch {model_uri}: ")
    assert not (tmp_path / "a").exists()


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    """Answers every GET as MLflow does for an unknown model, and keeps the headers it got."""

    seen: ClassVar[list[dict[str, str]]] = []
    status: ClassVar[int] = 404

    def do_GET(self) -> None:
        type(self).seen.append(dict(self.headers))
        body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"})
        self.send_response(type(self).status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def recording_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RecordingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _RecordingHandler.seen.clear()
    _RecordingHandler.status = 404
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MLFLOW_TRACKING_TOKEN": "t0ken"}, "Bearer t0ken"),
        (
            {"MLFLOW_TRACKING_TOKEN": "t0ken", "MLFLOW_TRACKING_USERNAME": "u"},
            "Bearer t0ken",
        ),
        (
            {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"},
            "Basic dTpw",
        ),
    ],
)
def test_credentials_are_sent_as_mlflows_client_sends_them(
    recording_server: str, env: dict, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.model.source import fetch_model  # noqa: PLC0415

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with (
        tempfile.TemporaryDirectory() as tmp,
        pytest.raises(ModelSourceError, match="RESOURCE_DOES_NOT_EXIST: no such model"),
    ):
        fetch_model("models:/m@a", Path(tmp) / "m", tracking_uri=recording_server)

    assert [headers.get("Authorization") for headers in _RecordingHandler.seen] == [expected]


def test_a_server_answering_503_is_retried_within_the_bounds_then_named(
    recording_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from app.model.source import fetch_model  # noqa: PLC0415

    _RecordingHandler.status = 503
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    with pytest.raises(ModelSourceError) as raised:
        fetch_model("models:/m@a", tmp_path / "m", tracking_uri=recording_server)

    assert len(_RecordingHandler.seen) == 3
    assert str(raised.value) == (
        f"cannot fetch models:/m@a: {recording_server}/api/2.0/mlflow/registered-models/alias"
        "?name=m&alias=a did not answer after 3 attempts (120 s each at most): HTTP 503 Service Unavailable"
    )
