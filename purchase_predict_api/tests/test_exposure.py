"""What the service exposes besides its routes (docs/api.md, "What is exposed"), and the clear
refusal of a body that is not JSON."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.core.config import Settings
from app.main import create_app
from app.models import SESSION_EXAMPLE


def test_no_redoc_no_oauth2_redirect_and_no_swagger_ui_by_default(client: TestClient) -> None:
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path
    # The schema is data (no scripts): clients and schemathesis read it.
    assert client.get("/openapi.json").json()["info"]["title"] == "purchase-predict API"


def test_the_swagger_ui_is_served_when_asked_for(baked_settings: Settings) -> None:
    settings = baked_settings.model_copy(update={"docs_ui": True})
    with TestClient(create_app(settings)) as client:
        assert client.get("/docs").status_code == 200
        assert client.get("/redoc").status_code == 404


def test_a_trailing_slash_is_not_redirected_to_the_request_s_host(client: TestClient) -> None:
    # Starlette's redirect would answer 307 with Location: http://<Host header>/predict.
    answer = client.post(
        "/predict/", json=SESSION_EXAMPLE, headers={"host": "evil.example"}, follow_redirects=False
    )
    assert answer.status_code == 404
    assert "location" not in answer.headers


def test_a_body_that_is_not_json_says_so(client: TestClient) -> None:
    for media_type in ("text/plain", "application/x-www-form-urlencoded"):
        answer = client.post(
            "/predict", content=b'{"price": 1}', headers={"content-type": media_type}
        )
        assert answer.status_code == 415, media_type
        assert answer.json() == {
            "detail": f"Content-Type must be application/json, got '{media_type}'"
        }


def test_json_media_types_are_accepted(client: TestClient) -> None:
    for media_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        answer = client.post("/predict", json=SESSION_EXAMPLE, headers={"content-type": media_type})
        assert answer.status_code == 200, media_type


def test_malformed_json_is_422_json_invalid_and_non_utf8_is_400(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    malformed = client.post("/predict", content=b'{"price": ', headers=headers)
    assert malformed.status_code == 422
    assert malformed.json()["detail"][0]["type"] == "json_invalid"
    undecodable = client.post("/predict", content=b'{"brand": "\xff"}', headers=headers)
    assert undecodable.status_code == 400


def test_the_server_header_is_off_in_the_command_line(monkeypatch) -> None:
    import app.__main__ as entry  # noqa: PLC0415

    seen: dict = {}
    monkeypatch.setenv("MODEL_PATH", "/srv/model")
    monkeypatch.setattr(entry.uvicorn, "run", lambda *a, **kw: seen.update(kw))
    entry.get_settings.cache_clear()
    try:
        entry.main()
    finally:
        entry.get_settings.cache_clear()
    assert seen["server_header"] is False
