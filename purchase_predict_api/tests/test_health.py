"""/health, /ready and /version, before and after the lifespan loads the model."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app import __version__
from app.core.config import Settings
from app.main import create_app
from app.models import SESSION_EXAMPLE


def test_before_the_model_is_loaded_only_health_answers_ok(baked_settings: Settings) -> None:
    client = TestClient(create_app(baked_settings))  # no `with`: the lifespan has not run

    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert (ready.status_code, ready.json()) == (503, {"detail": "model not loaded"})
    predict = client.post("/predict", json=SESSION_EXAMPLE)
    assert (predict.status_code, predict.json()) == (503, {"detail": "model not loaded"})
    assert client.get("/version").json()["model_version"] is None


def test_after_the_lifespan_the_model_is_ready(baked_settings: Settings, registered_model) -> None:
    app = create_app(baked_settings)
    with TestClient(app) as client:
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "model_name": registered_model.name,
            "model_version": registered_model.version,
        }
    # Shutdown drops the model: a draining process is no longer ready.
    assert app.state.model is None


def test_version_names_the_build_and_the_model(client: TestClient, registered_model) -> None:
    assert client.get("/version").json() == {
        "api_version": __version__,
        "git_sha": "0123abc",
        "image_tag": "test-tag",
        "model_name": registered_model.name,
        "model_version": registered_model.version,
        "model_alias": registered_model.alias,
        "model_run_id": registered_model.run_id,
        "model_uri": f"models:/{registered_model.name}/{registered_model.version}",
    }


def test_every_answer_names_the_image_and_model_that_gave_it(
    baked_settings: Settings, registered_model
) -> None:
    # Probes of a canary and request logs attribute each answer to a revision by these.
    settings = baked_settings.model_copy(update={"k_revision": "api-staging-00007-abc"})
    served_by = {
        "purchase-predict-image-tag": "test-tag",
        "purchase-predict-model": f"{registered_model.name}/{registered_model.version}",
        "purchase-predict-revision": "api-staging-00007-abc",
    }
    with TestClient(create_app(settings)) as client:
        answers = [client.get("/ready"), client.post("/predict", json=SESSION_EXAMPLE)]
    for answer in answers:
        assert answer.status_code == 200
        assert {k: answer.headers.get(k) for k in served_by} == served_by


def test_without_cloud_run_there_is_no_revision_header(client: TestClient) -> None:
    answer = client.post("/predict", json=SESSION_EXAMPLE)
    assert answer.headers["purchase-predict-image-tag"] == "test-tag"
    assert "purchase-predict-revision" not in answer.headers
    # Before the model is loaded nothing names a model.
    unloaded = TestClient(create_app(Settings(model_path="/nowhere"))).get("/ready")
    assert "purchase-predict-model" not in unloaded.headers
