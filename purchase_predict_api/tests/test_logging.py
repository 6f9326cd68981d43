"""The structured log line (app/core/logging.py): one JSON object, the time as
``datetime.isoformat`` writes it, extra fields merged."""

from __future__ import annotations

import json
import logging
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from app.core.logging import JsonFormatter


def _line(formatter: JsonFormatter, created: float, **fields: object) -> dict:
    record = logging.LogRecord("app.request", logging.INFO, "", 0, "POST %s", ("/predict",), None)
    record.created = created
    record.fields = fields
    return json.loads(formatter.format(record))


def test_the_time_is_the_one_datetime_writes_to_the_millisecond() -> None:
    formatter = JsonFormatter()
    edges = [1_700_000_000.0, 1_700_000_000.0005, 1_700_000_000.001, 1_700_000_000.9999996]
    rng = random.Random(7)
    # In order and at random: the text of the second is reused, then replaced.
    times = edges + sorted(rng.uniform(1.6e9, 1.8e9) for _ in range(5_000))
    for created in times:
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert _line(formatter, created)["time"] == expected


def test_a_line_holds_the_record_and_its_fields() -> None:
    line = _line(JsonFormatter(), 1_700_000_000.25, status=200, sessions=3, other=object())
    assert line["severity"] == "INFO"
    assert line["logger"] == "app.request"
    assert line["message"] == "POST /predict"
    assert (line["status"], line["sessions"]) == (200, 3)
    assert line["other"].startswith("<object object")  # not JSON: written as its str()


def _request_lines(level: str) -> list[dict]:
    """What a process set up like ``python -m app`` writes for two requests and a warning."""
    code = (
        "import logging\n"
        "from app.core.logging import configure_logging, log_request\n"
        f"configure_logging({level!r})\n"
        "log_request('POST /predict 200 1.2 ms', {'status': 200, 'sessions': 3})\n"
        "logging.getLogger('app.model').warning('between the two')\n"
        "log_request('GET /health 200 0.1 ms', {'status': 200, 'path': '/h\\u00e9'})\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[1],
    )
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_request_lines_go_straight_to_stdout_in_the_same_shape_and_order() -> None:
    first, warning, second = _request_lines("INFO")
    assert first["logger"] == "app.request" and first["severity"] == "INFO"
    assert (first["message"], first["status"], first["sessions"]) == (
        "POST /predict 200 1.2 ms",
        200,
        3,
    )
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert warning["message"] == "between the two" and warning["severity"] == "WARNING"
    assert second["path"] == "/h\u00e9"


def test_request_lines_follow_the_log_level() -> None:
    [warning] = _request_lines("WARNING")
    assert warning["message"] == "between the two"
