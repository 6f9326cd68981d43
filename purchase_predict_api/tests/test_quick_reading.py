"""The quick reading of a valid body (app/api/body.py ``quick_chunks``) and the overlapped
prediction of its chunks (app/model/compiled.py ``predict_chunks``).

The quick reading parses and validates each slice in one pass; anything it refuses is read
again the careful way, which reports the errors. So the one rule it must keep: what it accepts,
the careful way accepts too, as the same sessions. And chunks predicted while the next one is
validated give the answers of one call on all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.api.body import (
    PARSE_SLICE_BYTES,
    QUICK_CHUNK_ROWS,
    ErrorReport,
    NotQuick,
    quick_chunks,
    read_sessions,
)
from app.model.loading import load_model_dir
from app.models import MAX_SESSIONS, SESSION_EXAMPLE, validate_session


def _quick(body: bytes) -> list | None:
    """The sessions the quick reading gives, or None when it hands the body over."""
    try:
        return [session for chunk in quick_chunks(body) for session in chunk]
    except NotQuick:
        return None


def _careful(body: bytes) -> list | None:
    """The sessions the careful reading gives, or None when it refuses the body."""
    sessions = read_sessions(body)
    return None if isinstance(sessions, ErrorReport) else sessions


def _batch(size: int, **changes: object) -> list[dict]:
    return [
        {**SESSION_EXAMPLE, "price": 1 + i % 50, "hour": i % 24, **changes} for i in range(size)
    ]


# Bodies the two readings must agree on: each is (a session or) a batch large enough to be read
# in slices, with one unusual value in the middle.
_UNUSUAL = {
    "an integer written 14.0": {"hour": 14.0},
    "an integer as a string": {"hour": "14"},
    "true for an integer": {"hour": True},
    "an integer past its bound": {"hour": 24},
    "a huge integer": {"num_views_session": 10**30},
    "a float for a price": {"price": 12.5},
    "an integer for a price": {"price": 12},
    "text to trim and lower-case": {"brand": "  SamSung  "},
    "escaped text": {"brand": 'sam\u00e9\\u00e9"},{"x'},
    "a lone surrogate": {"category": "\ud800"},
    "empty text": {"brand": ""},
    "null text": {"sub_category": None},
    "absent text": {},
    "text too long": {"brand": "x" * 101},
    "an unknown key": {"colour": "red"},
}


@pytest.mark.parametrize("change", _UNUSUAL.values(), ids=_UNUSUAL.keys())
def test_what_the_quick_reading_accepts_the_careful_one_gives_the_same(change: dict) -> None:
    batch = _batch(2 * QUICK_CHUNK_ROWS + 7)
    position = QUICK_CHUNK_ROWS + 3
    if change:
        batch[position] = {**batch[position], **change}
    else:
        batch[position] = {k: v for k, v in batch[position].items() if k != "brand"}
    for body in (json.dumps(batch).encode(), json.dumps(batch[position]).encode()):
        quick, careful = _quick(body), _careful(body)
        if quick is not None:
            assert quick == careful
    # The common case is the quick one: a valid body of integers and plain text.
    assert _quick(json.dumps(_batch(3)).encode()) == _careful(json.dumps(_batch(3)).encode())


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{}",
        b"[{}]",
        b"null",
        b"[1, 2]",
        b'{"a": 1',
        json.dumps([SESSION_EXAMPLE] * (MAX_SESSIONS + 1)).encode(),
        # Duplicate keys: JSON's last one wins in both readings.
        json.dumps(SESSION_EXAMPLE)[:-1].encode() + b', "hour": 3}',
        # A session larger than a slice (its unknown keys would all become errors at once).
        json.dumps([{**SESSION_EXAMPLE, **{f"k{i}": i for i in range(20_000)}}]).encode(),
        b"\xff\xfe",
    ],
    ids=lambda body: body[:20].decode("utf-8", "replace"),
)
def test_the_quick_reading_never_accepts_what_the_careful_one_refuses(body: bytes) -> None:
    try:
        careful = _careful(body)
    except ValueError:  # BodyNotText
        careful = None
    quick = _quick(body)
    assert quick is None or quick == careful


def test_a_large_batch_comes_in_chunks_of_at_least_the_chunk_size() -> None:
    batch = _batch(5 * QUICK_CHUNK_ROWS + 11)
    body = json.dumps(batch).encode()
    assert len(body) > 4 * PARSE_SLICE_BYTES

    chunks = list(quick_chunks(body))

    assert all(len(chunk) >= QUICK_CHUNK_ROWS for chunk in chunks[:-1])
    assert [s for chunk in chunks for s in chunk] == [validate_session(s) for s in batch]


def test_an_invalid_session_past_the_first_chunks_stops_the_reading_there() -> None:
    batch = _batch(4 * QUICK_CHUNK_ROWS)
    batch[3 * QUICK_CHUNK_ROWS] = {**SESSION_EXAMPLE, "price": "12"}
    chunks = quick_chunks(json.dumps(batch).encode())

    assert len(next(chunks)) >= QUICK_CHUNK_ROWS  # the first ones are valid
    with pytest.raises(NotQuick):
        list(chunks)


@pytest.mark.parametrize("trees", [True, False], ids=["compiled trees", "LightGBM's library"])
def test_chunks_predicted_as_they_come_answer_as_one_call(
    prepared_source: Path, trees: bool, make_sessions, as_json_records
) -> None:
    model = load_model_dir(prepared_source, trees=trees)
    assert model.compiled is not None and (model.compiled.trees is not None) == trees
    sessions = [validate_session(r) for r in as_json_records(make_sessions(3000, 5))]
    chunks = [sessions[:1024], sessions[1024:2100], sessions[2100:]]

    answers = model.compiled.predict_chunks(iter(chunks))

    np.testing.assert_array_equal(answers, model.purchase_probabilities(sessions))


def test_the_trees_of_each_chunk_run_on_a_thread_of_their_own(
    prepared_source: Path, make_sessions, as_json_records
) -> None:
    model = load_model_dir(prepared_source)
    trees = model.compiled.trees
    assert trees.asynchronous  # built by today's prepare: trees_start and trees_join
    sessions = [validate_session(r) for r in as_json_records(make_sessions(2500, 8))]
    matrices = [
        model.compiled._matrix(part) for part in (sessions[:7], sessions[7:1500], sessions[1500:])
    ]

    np.testing.assert_array_equal(
        trees.predict_chunks(iter(matrices)), trees.predict(np.concatenate(matrices))
    )

    def failing():
        yield matrices[1]
        raise NotQuick  # the started thread is joined before this propagates

    with pytest.raises(NotQuick):
        trees.predict_chunks(failing())
    # A library built before trees_start: the chunks are predicted one call after the other.
    trees.asynchronous = False
    np.testing.assert_array_equal(
        model.compiled.predict_chunks(iter([sessions[:1500], sessions[1500:]])),
        model.purchase_probabilities(sessions),
    )


def test_a_failing_chunk_source_propagates_and_leaves_the_model_serving(
    prepared_source: Path, make_sessions, as_json_records
) -> None:
    model = load_model_dir(prepared_source)
    sessions = [validate_session(r) for r in as_json_records(make_sessions(2048, 6))]

    def chunks():
        yield sessions[:1024]
        raise NotQuick

    with pytest.raises(NotQuick):
        model.compiled.predict_chunks(chunks())
    np.testing.assert_array_equal(
        model.compiled.predict_chunks(iter([sessions])), model.purchase_probabilities(sessions)
    )
