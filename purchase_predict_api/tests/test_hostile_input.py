"""Hostile bodies cost bounded time and memory: capped 422s, cut names, sliced parsing."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from pydantic_core import from_json

from app.api.body import CHUNK_SESSIONS, PARSE_SLICE_BYTES, parse_body
from app.models import MAX_LOC_CHARS, MAX_REPORTED_ERRORS, MAX_SESSIONS, SESSION_EXAMPLE
from purchase_contract.features import FEATURES

REQUIRED = sum(1 for feature in FEATURES if feature.required)
UNKNOWN_KEYS = 60


def _refused(client: TestClient, body: object) -> dict:
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    answer = response.json()
    assert set(answer) == {"detail", "error_count"}
    return answer


def test_empty_sessions_report_the_first_errors_and_count_them_all(client: TestClient) -> None:
    answer = _refused(client, [{}] * MAX_SESSIONS)

    assert len(answer["detail"]) == MAX_REPORTED_ERRORS
    assert answer["error_count"] == MAX_SESSIONS * REQUIRED
    assert answer["detail"][0] == {
        "loc": ["body", "batch", 0, FEATURES[0].name],
        "msg": "Field required",
        "type": "missing",
    }


def test_unknown_keys_of_every_session_are_counted_not_listed(client: TestClient) -> None:
    session = {f"x{i:02d}": 1 for i in range(UNKNOWN_KEYS)}
    answer = _refused(client, [session] * MAX_SESSIONS)

    assert len(answer["detail"]) == MAX_REPORTED_ERRORS
    assert answer["error_count"] == MAX_SESSIONS * (UNKNOWN_KEYS + REQUIRED)


@pytest.mark.parametrize("batch", [False, True])
def test_a_session_of_many_unknown_keys_counts_each(client: TestClient, batch: bool) -> None:
    session = {**SESSION_EXAMPLE, **{f"k{i}": i for i in range(5_000)}}
    answer = _refused(client, [SESSION_EXAMPLE, session] if batch else session)

    assert answer["error_count"] == 5_000
    assert len(answer["detail"]) == MAX_REPORTED_ERRORS
    assert {e["type"] for e in answer["detail"]} == {"extra_forbidden"}
    assert answer["detail"][0]["loc"] == (
        ["body", "batch", 1] if batch else ["body", "session"]
    ) + ["k0"]


def test_long_unknown_names_are_cut_in_the_answer(client: TestClient) -> None:
    name = "k" * 100_000
    response = client.post("/predict", json={**SESSION_EXAMPLE, name: 1})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "session", "k" * MAX_LOC_CHARS + "..."]
    assert len(response.content) < 500


def test_errors_past_the_first_chunk_name_their_position(client: TestClient) -> None:
    position = 3 * CHUNK_SESSIONS + 5
    batch = [SESSION_EXAMPLE] * (position + 10)
    batch[position] = {**SESSION_EXAMPLE, "price": "12"}
    answer = _refused(client, batch)

    assert answer == {
        "detail": [
            {
                "loc": ["body", "batch", position, "price"],
                "msg": "Input should be a valid number",
                "type": "float_type",
            }
        ],
        "error_count": 1,
    }


def test_a_large_array_is_parsed_in_slices_as_a_whole() -> None:
    tricky = {**SESSION_EXAMPLE, "brand": "a},{b", "category": '"},{"'}
    body = json.dumps([tricky, {"nested": [{}, {"x": [{}]}]}] * 5_000).encode()
    assert len(body) > 4 * PARSE_SLICE_BYTES

    assert parse_body(body) == from_json(body)
    assert parse_body(b"\n " + body + b" \r\n") == from_json(body)


def test_malformed_json_in_a_large_array_names_its_position(client: TestClient) -> None:
    body = json.dumps([SESSION_EXAMPLE] * 2_000)[:-1] + ",]"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"loc": ["body", len(body) - 1], "msg": "JSON decode error", "type": "json_invalid"}
        ],
        "error_count": 1,
    }


@pytest.mark.parametrize("batch", [False, True])
def test_a_lone_surrogate_escape_is_refused_not_a_server_error(
    client: TestClient, batch: bool
) -> None:
    # JSON's grammar allows "\ud800"; it is no Unicode character. Python's json module reads
    # it, pydantic-core does not: this was an AssertionError and a 500.
    session = json.dumps({**SESSION_EXAMPLE, "brand": "\ud800"})
    body = f"[{session}]" if batch else session
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body"]
    assert error["type"] == "json_invalid"
    assert "hex escape" in error["msg"]
