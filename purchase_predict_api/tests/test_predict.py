"""POST /predict against the real baked model: answers, batch, strict validation, limits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.model.compiled import CompiledPipeline
from app.model.frame import FEATURE_COLUMNS, sessions_frame
from app.models import (
    BODY_LIMIT_DETAIL,
    MAX_BODY_BYTES,
    MAX_SESSIONS,
    MAX_TEXT_LENGTH,
    SESSION_EXAMPLE,
    PredictionResponse,
    validate_session,
)
from purchase_contract.features import FEATURE_NAMES

# The contract's feature columns, in its order.
EXPECTED_FEATURES = list(FEATURE_NAMES)


def test_session_fields_are_the_contract_feature_columns() -> None:
    assert FEATURE_COLUMNS == EXPECTED_FEATURES
    frame = sessions_frame([validate_session(SESSION_EXAMPLE)])
    assert list(frame.columns) == EXPECTED_FEATURES
    assert frame["product_id"].dtype == "int64"
    assert frame["price"].dtype == "float64"
    assert frame["brand"].dtype == object


def test_predict_one_session(client: TestClient, registered_model) -> None:
    response = client.post("/predict", json=SESSION_EXAMPLE)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    # Written straight to JSON by the route: still exactly the documented response model.
    assert PredictionResponse.model_validate(body).model_dump(mode="json") == body
    assert body["model_name"] == registered_model.name
    assert body["model_version"] == registered_model.version
    assert body["decision_threshold"] == pytest.approx(registered_model.threshold)
    [prediction] = body["predictions"]
    expected = registered_model.estimator.predict_proba(
        sessions_frame([validate_session(SESSION_EXAMPLE)])
    )[0, 1]
    assert prediction["probability"] == pytest.approx(expected, abs=1e-12)
    assert prediction["purchased"] == (expected >= registered_model.threshold)


def test_the_deploy_smoke_request_is_a_valid_session(client: TestClient) -> None:
    # The deploy workflow's smoke test sends the contract's example session to every new
    # revision, as `python -m purchase_contract example` prints it.
    printed = subprocess.run(
        [sys.executable, "-m", "purchase_contract", "example"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    response = client.post("/predict", json=json.loads(printed))

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


def test_predict_batch_matches_the_model_called_directly(
    client: TestClient, registered_model, make_sessions, as_json_records
) -> None:
    frame = make_sessions(300, 11)
    response = client.post("/predict", json=as_json_records(frame))

    assert response.status_code == 200
    predictions = response.json()["predictions"]
    probabilities = np.array([p["probability"] for p in predictions])
    expected = registered_model.estimator.predict_proba(frame)[:, 1]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-12)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    labels = np.array([p["purchased"] for p in predictions])
    np.testing.assert_array_equal(labels, expected >= registered_model.threshold)
    # The synthetic rows span both sides of the threshold.
    assert 0 < labels.sum() < len(labels)


def test_the_training_pipeline_is_compiled_and_agrees_with_predict_proba(
    registered_model, make_sessions, as_json_records
) -> None:
    compiled = CompiledPipeline.compile(registered_model.estimator)
    assert compiled is not None
    sessions = [validate_session(r) for r in as_json_records(make_sessions(500, 3))]
    sessions += [
        validate_session({**SESSION_EXAMPLE, "brand": None, "category": None}),
        validate_session({**SESSION_EXAMPLE, "brand": "never-seen", "sub_category": "x"}),
    ]

    expected = registered_model.estimator.predict_proba(sessions_frame(sessions))[:, 1]

    np.testing.assert_allclose(compiled.predict(sessions), expected, rtol=0, atol=1e-12)


def test_other_estimators_keep_the_scikit_learn_path(registered_model) -> None:
    pipeline = registered_model.estimator
    assert CompiledPipeline.compile(pipeline.named_steps["classifier"]) is None
    assert CompiledPipeline.compile(pipeline.named_steps["columns"]) is None
    assert CompiledPipeline.compile(object()) is None


def test_integers_written_with_a_zero_fraction_are_integers(client: TestClient) -> None:
    as_floats = {
        **SESSION_EXAMPLE,
        "hour": 14.0,
        "num_views_session": 12.0,
        "product_id": 1005115.0,
    }

    response = client.post("/predict", json=[SESSION_EXAMPLE, as_floats])

    assert response.status_code == 200
    first, second = response.json()["predictions"]
    assert first == second


def test_brand_is_normalised_like_the_training_data(client: TestClient) -> None:
    sessions = [
        {**SESSION_EXAMPLE, "brand": "apple"},
        {**SESSION_EXAMPLE, "brand": "  Apple "},
        {**SESSION_EXAMPLE, "brand": None, "category": "electronics"},
        {**SESSION_EXAMPLE, "brand": "", "category": "electronics"},
        {**SESSION_EXAMPLE, "category": None},
        {**SESSION_EXAMPLE, "category": ""},
    ]

    predictions = client.post("/predict", json=sessions).json()["predictions"]

    assert predictions[0] == predictions[1]
    assert predictions[2] == predictions[3]
    assert predictions[4] == predictions[5]


def test_missing_and_unseen_categories_are_predicted(client: TestClient) -> None:
    sessions = [
        {**SESSION_EXAMPLE, "brand": None, "category": None, "sub_category": None},
        {k: v for k, v in SESSION_EXAMPLE.items() if k not in ("brand", "category")},
        {**SESSION_EXAMPLE, "brand": "a brand the model never saw"},
    ]
    response = client.post("/predict", json=sessions)

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 3


def test_a_full_batch_fits_the_body_limit_and_is_answered(
    client: TestClient, make_sessions, as_json_records
) -> None:
    longest = "x" * MAX_TEXT_LENGTH
    worst = {
        **{name: 10**9 for name in EXPECTED_FEATURES},
        "product_id": 2**53 - 1,
        "price": 999_999.999999,
        "duration": 999_999_999.123456,
        "hour": 23,
        "minute": 59,
        "weekday": 6,
        "brand": longest,
        "category": longest,
        "sub_category": longest,
    }
    assert len(json.dumps([worst] * MAX_SESSIONS)) < MAX_BODY_BYTES

    records = as_json_records(make_sessions(MAX_SESSIONS, 3))
    response = client.post("/predict", json=records)

    assert response.status_code == 200
    assert len(response.json()["predictions"]) == MAX_SESSIONS


@pytest.mark.parametrize(
    ("change", "field", "error_type"),
    [
        ({"price": "915.69"}, "price", "float_type"),
        ({"hour": 14.5}, "hour", "int_type"),
        ({"minute": "27"}, "minute", "int_type"),
        ({"num_views_session": True}, "num_views_session", "int_type"),
        ({"brand": 42}, "brand", "string_type"),
        ({"hour": 24}, "hour", "less_than_equal"),
        ({"hour": 24.0}, "hour", "less_than_equal"),
        ({"hour": None}, "hour", "int_type"),
        ({"product_id": 1e300}, "product_id", "less_than_equal"),
        ({"weekday": -1}, "weekday", "greater_than_equal"),
        ({"price": -0.01}, "price", "greater_than_equal"),
        ({"price": 1e6}, "price", "less_than"),
        ({"product_id": 2**53}, "product_id", "less_than_equal"),
        ({"category": "c" * (MAX_TEXT_LENGTH + 1)}, "category", "string_too_long"),
        ({"user_id": 12}, "user_id", "extra_forbidden"),
        ({"purchased": 1}, "purchased", "extra_forbidden"),
    ],
)
def test_invalid_session_is_422_naming_the_field(
    client: TestClient, change: dict, field: str, error_type: str
) -> None:
    response = client.post("/predict", json={**SESSION_EXAMPLE, **change})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "session", field]
    assert error["type"] == error_type
    assert "input" not in error


def test_missing_field_in_a_batch_is_422_with_its_position(client: TestClient) -> None:
    incomplete = {k: v for k, v in SESSION_EXAMPLE.items() if k != "duration"}
    response = client.post("/predict", json=[SESSION_EXAMPLE, incomplete])

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"loc": ["body", "batch", 1, "duration"], "msg": "Field required", "type": "missing"}
    ]


def test_non_finite_numbers_are_422_not_500(client: TestClient) -> None:
    for literal in ("NaN", "Infinity", "-Infinity"):
        body = json.dumps(SESSION_EXAMPLE).replace('"duration": 431.0', f'"duration": {literal}')
        response = client.post(
            "/predict", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, literal
        assert response.json()["detail"][0]["loc"] == ["body", "session", "duration"]


@pytest.mark.parametrize(
    ("body", "error_type"),
    [([], "too_short"), ("a session", "dict_type"), (None, "missing")],
)
def test_empty_or_malformed_bodies_are_422(client: TestClient, body, error_type: str) -> None:
    response = client.post("/predict", json=body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == error_type


def test_malformed_json_is_422_with_its_position(client: TestClient) -> None:
    body = json.dumps(SESSION_EXAMPLE)[:-1] + ",}"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["type"] == "json_invalid"
    assert error["loc"] == ["body", len(body) - 1]


def test_a_body_that_is_not_utf8_is_400(client: TestClient) -> None:
    response = client.post(
        "/predict", content=b"\x01\xff", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)


def test_batch_over_the_limit_is_422(client: TestClient) -> None:
    response = client.post("/predict", json=[SESSION_EXAMPLE] * (MAX_SESSIONS + 1))

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (["body", "batch"], "too_long")


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post(
        "/predict",
        content=b" " * (MAX_BODY_BYTES + 1),
        headers={"content-type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json() == {"detail": BODY_LIMIT_DETAIL}
    # The answer says the limit and what to do about it.
    assert f"larger than {MAX_BODY_BYTES} bytes" in BODY_LIMIT_DETAIL
    assert BODY_LIMIT_DETAIL.endswith("send fewer sessions per request")


def test_streamed_body_over_the_limit_is_413(client: TestClient) -> None:
    chunk = b" " * (1024 * 1024)

    def chunks():  # no Content-Length: the limit is enforced while the body streams in
        for _ in range(MAX_BODY_BYTES // len(chunk) + 1):
            yield chunk

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )

    assert response.status_code == 413
    assert response.json() == {"detail": BODY_LIMIT_DETAIL}


def test_every_status_is_declared_in_the_openapi_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    assert set(paths["/predict"]["post"]["responses"]) == {"200", "400", "413", "415", "422", "503"}
    assert set(paths["/ready"]["get"]["responses"]) == {"200", "503"}
    # 503 everywhere: a request still running when the graceful-shutdown period ends.
    assert set(paths["/health"]["get"]["responses"]) == {"200", "503"}
    assert set(paths["/version"]["get"]["responses"]) == {"200", "503"}
