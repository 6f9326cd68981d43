"""The ``POST /predict`` body: parsed and validated in bounded time and memory, errors capped.

Run in a worker thread, never on the event loop. A large batch is parsed in slices and validated in chunks of
``CHUNK_SESSIONS``: pydantic-core holds the GIL for a whole call, and between two calls the
event loop gets it back, so other requests (``/health`` included) wait for one chunk at most,
not for the whole body. An invalid body answers the first ``MAX_REPORTED_ERRORS`` errors and
``error_count``, the number of all of them: errors are counted chunk by chunk
(``ValidationError.error_count`` builds no Python objects), and only the reported ones become
dicts. Building a dict per error of a 4.7 MB body of unknown keys took 1.3 GiB and 20 s.

A valid body is read faster than that (:func:`quick_chunks`): pydantic-core parses and
validates each slice in one pass, straight from its bytes, which skips building the parsed
Python values only to validate them (21 of a 10,000-session batch's 31 ms). At the first error,
or anything unusual, the body is read again the careful way above (:func:`read_sessions`),
which says what is wrong: the answer to an invalid body is the same either way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Annotated, Any

from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import Field, TypeAdapter, ValidationError
from pydantic_core import from_json

from app.models import (
    MAX_LOC_CHARS,
    MAX_REPORTED_ERRORS,
    MAX_SESSIONS,
    IntegerSession,
    Session,
)
from purchase_contract.features import FEATURE_NAMES

# Sessions validated in one pydantic-core call (about 1.5 ms, even each with 60 unknown keys).
CHUNK_SESSIONS = 64
# Bytes of a large array body parsed in one pydantic-core call (about 1 ms).
PARSE_SLICE_BYTES = 64 * 1024
# Sessions of a valid body handed to the model at a time (``quick_chunks``): the trees of one
# chunk are evaluated while the next is validated (app.model.compiled).
QUICK_CHUNK_ROWS = 1024
_JSON_WHITESPACE = b" \t\n\r"
# Keys a session may hold before its unknown ones are cut to what can be reported.
_MAX_KEYS = len(FEATURE_NAMES) + MAX_REPORTED_ERRORS
_FIELDS = frozenset(FEATURE_NAMES)

_LENGTH = TypeAdapter(Annotated[list[Any], Field(min_length=1, max_length=MAX_SESSIONS)])
_SESSIONS = TypeAdapter(list[Session])
_SESSION = TypeAdapter(Session)
# The quick reading of a valid body (``quick_chunks``): integers as integers only, and a slice
# stops at its first invalid session (``[{}]`` x 10,000 fits in one slice: 100,000 errors,
# 60 ms holding the GIL, if it went on).
_QUICK_SESSIONS = TypeAdapter(Annotated[list[IntegerSession], Field(fail_fast=True)])
_QUICK_SESSION = TypeAdapter(IntegerSession)


class BodyNotText(ValueError):
    """The body is not UTF-8 text (400)."""


@dataclass
class ErrorReport:
    """The first ``MAX_REPORTED_ERRORS`` errors of a body, as the 422 lists them, and their count."""

    errors: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0

    def add(self, err: ValidationError, prefix: Sequence[str | int], offset: int = 0) -> None:
        """Count ``err``'s errors; keep the first ones, their loc after ``prefix`` (the
        first integer of a chunk's loc, its index in the chunk, shifted by ``offset``)."""
        self.count += err.error_count()
        room = MAX_REPORTED_ERRORS - len(self.errors)
        if room <= 0:
            return
        for error in islice(err.errors(include_url=False, include_input=False), room):
            loc = list(error["loc"])
            if offset and loc and isinstance(loc[0], int):
                loc[0] += offset
            self.errors.append(_entry([*prefix, *loc], error["msg"], error["type"]))

    def response(self) -> JSONResponse:
        """The 422 answer."""
        return validation_error_response(self.errors, self.count)


def _entry(loc: Iterable[Any], msg: str, kind: str) -> dict[str, Any]:
    """One reported error: its loc with long strings cut (never an unbounded echo)."""
    cut = [
        f"{part[:MAX_LOC_CHARS]}..."
        if isinstance(part, str) and len(part) > MAX_LOC_CHARS
        else part
        for part in loc
    ]
    return {"loc": cut, "msg": msg, "type": kind}


def validation_error_response(errors: list[dict[str, Any]], count: int) -> JSONResponse:
    """422 with ``detail`` (the first errors, each loc, msg and type) and ``error_count``."""
    detail = [_entry(e["loc"], e["msg"], e["type"]) for e in errors[:MAX_REPORTED_ERRORS]]
    return JSONResponse(
        status_code=422,
        content=jsonable_encoder({"detail": detail, "error_count": max(count, len(detail))}),
    )


class NotQuick(Exception):
    """The body is not surely valid, or not readable in bounded time the quick way."""


def quick_chunks(body: bytes, rows: int = QUICK_CHUNK_ROWS) -> Iterator[list[Session]]:
    """The sessions of a valid body (one session or a batch) in chunks of at least ``rows``
    (the last may be smaller), each slice parsed and validated in one pass as the chunks are
    taken. NotQuick, before or between chunks, at the first doubt: invalid JSON or sessions,
    an object larger than a slice, an array whose cut falls inside an element or whose element
    outgrows a slice (pydantic-core would then build its errors for all of it at once), an
    empty or too long batch. The caller then reads the body with :func:`read_sessions`."""
    text = body.strip(_JSON_WHITESPACE)
    try:
        if text[:1] == b"{" and len(text) <= PARSE_SLICE_BYTES:
            yield [_QUICK_SESSION.validate_json(text)]
            return
        if text[:1] != b"[":
            raise NotQuick
        chunk: list[Session] = []
        count = 0
        for piece in _array_slices(text):
            if len(piece) > 2 * PARSE_SLICE_BYTES:
                raise NotQuick
            sessions = _QUICK_SESSIONS.validate_json(piece)
            count += len(sessions)
            if count > MAX_SESSIONS:
                raise NotQuick
            chunk.extend(sessions)
            if len(chunk) >= rows:
                yield chunk
                chunk = []
    except ValueError:  # a ValidationError, json_invalid included
        raise NotQuick from None
    if not count:
        raise NotQuick  # []: read_sessions says why it is refused
    if chunk:
        yield chunk


def read_sessions(body: bytes) -> list[Session] | ErrorReport:
    """The sessions of ``body`` (one session or a batch), or the report of what is wrong with
    it: parsed, then validated in chunks. BodyNotText if it is not UTF-8."""
    if body.strip(_JSON_WHITESPACE) in (b"", b"null"):
        # No body, as FastAPI words it for a required body.
        report = ErrorReport(count=1)
        report.errors.append(_entry(["body"], "Field required", "missing"))
        return report
    data = parse_body(body)
    return data if isinstance(data, ErrorReport) else validate_sessions(data)


def parse_body(body: bytes) -> Any | ErrorReport:
    """The JSON value of ``body``, or the 422 report of malformed JSON (``json_invalid`` at
    the position :func:`json.loads` names, as FastAPI answers). BodyNotText if not UTF-8."""
    try:
        return _parse_array_in_slices(body) or from_json(body)
    except ValueError as err:
        refused = str(err)
    report = ErrorReport(count=1)
    try:
        json.loads(body)
    except json.JSONDecodeError as err:
        report.errors.append(_entry(["body", err.pos], "JSON decode error", "json_invalid"))
        return report
    except UnicodeDecodeError as err:
        raise BodyNotText(str(err)) from err
    # JSON's grammar allows what is not text: a lone surrogate escape ("\ud800") reads in
    # Python but is no Unicode character, and pydantic-core refuses it, saying where.
    report.errors.append(_entry(["body"], f"JSON decode error: {refused}", "json_invalid"))
    return report


def _parse_array_in_slices(body: bytes) -> list[Any] | None:
    """A large JSON array parsed about ``PARSE_SLICE_BYTES`` at a time (pydantic-core holds
    the GIL while it parses: 54 ms for 6 MB of small objects). None when it is not a large
    array, or a cut falls inside an element (that slice is then not valid JSON, and the caller
    parses the whole body)."""
    text = body.strip(_JSON_WHITESPACE)
    if len(text) <= PARSE_SLICE_BYTES or text[:1] != b"[":
        return None
    items: list[Any] = []
    try:
        for piece in _array_slices(text):
            items.extend(from_json(piece))
    except ValueError:
        return None
    return items


def _array_slices(text: bytes) -> Iterator[bytes]:
    """The JSON array ``text`` (stripped) as arrays of about ``PARSE_SLICE_BYTES`` each, cut
    after a ``},``; the whole of it when it is that small or not an array. A cut inside a
    string or a nested array makes a slice that is not valid JSON: the caller sees it fail."""
    if len(text) <= PARSE_SLICE_BYTES or text[-1:] != b"]":
        yield text
        return
    start = 1
    while start < len(text) - 1:
        cut = text.find(b"},", start + PARSE_SLICE_BYTES, len(text) - 1)
        end = cut + 1 if cut >= 0 else len(text) - 1
        yield b"[" + text[start:end] + b"]"
        start = end + 1


def validate_sessions(data: Any) -> list[Session] | ErrorReport:
    """The sessions of a parsed body (one session or a batch), or the report of its errors."""
    report = ErrorReport()
    if not isinstance(data, list):
        session, extra = _bounded(data)
        try:
            return [_SESSION.validate_python(session)]
        except ValidationError as err:
            report.add(err, ("body", "session"))
            report.count += extra
            return report
    try:
        _LENGTH.validate_python(data)
    except ValidationError as err:
        report.add(err, ("body", "batch"))
        return report
    sessions: list[Session] = []
    for start in range(0, len(data), CHUNK_SESSIONS):
        chunk, extra = data[start : start + CHUNK_SESSIONS], 0
        if any(isinstance(session, dict) and len(session) > _MAX_KEYS for session in chunk):
            bounded = [_bounded(session) for session in chunk]
            chunk, extra = [session for session, _ in bounded], sum(n for _, n in bounded)
        try:
            sessions.extend(_SESSIONS.validate_python(chunk))
        except ValidationError as err:
            report.add(err, ("body", "batch"), offset=start)
        report.count += extra
    return sessions if not report.count else report


def _bounded(session: Any) -> tuple[Any, int]:
    """``session`` with at most ``MAX_REPORTED_ERRORS`` unknown keys, and how many were cut
    (each an ``extra_forbidden`` error, counted without validating it)."""
    if not isinstance(session, dict) or len(session) <= _MAX_KEYS:
        return session, 0
    kept = {key: session[key] for key in FEATURE_NAMES if key in session}
    unknown = (key for key in session if key not in _FIELDS)
    kept.update((key, session[key]) for key in islice(unknown, MAX_REPORTED_ERRORS))
    return kept, len(session) - len(kept)
