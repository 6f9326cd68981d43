"""Structured logs: one JSON object per line on stdout, the shape Cloud Logging parses.

Every request writes one line (:func:`log_request`). Through ``logging``'s machinery (a record,
the logger hierarchy, the handler's lock) that line cost a single-session prediction about a
quarter of its time, so once :func:`configure_logging` has set up the process's one handler,
request lines go straight to its stream in the same shape, when ``app.request`` logs INFO.
Without it (an app built in a test, say), they go through ``logging`` like any other line.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json


class JsonFormatter(logging.Formatter):
    """``{"time", "severity", "logger", "message", ...}``; ``extra={"fields": {...}}`` adds keys.

    Every request writes one line, so the line is cheap to make: the time's text is computed
    once a second, and pydantic-core writes the JSON (about a third of ``json.dumps``'s time).
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line."""
        fields = getattr(record, "fields", None)
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created,
            record.levelname,
            record.name,
            record.getMessage(),
            fields if isinstance(fields, dict) else None,
            exception=exception,
        )

    def line(
        self,
        created: float,
        severity: str,
        name: str,
        message: str,
        fields: dict[str, Any] | None = None,
        *,
        exception: str | None = None,
    ) -> str:
        """One JSON line, from a record's parts."""
        entry = {"time": self._time(created), "severity": severity, "logger": name}
        entry["message"] = message
        if fields:
            entry.update(fields)
        if exception:
            entry["exception"] = exception
        return to_json(entry, fallback=str).decode()

    def request_line(self, created: float, name: str, message: str, fields: dict) -> bytes:
        """The INFO line of one request, newline included, as bytes to write."""
        entry = {"time": self._time(created), "severity": "INFO", "logger": name}
        entry["message"] = message
        entry.update(fields)
        return to_json(entry, fallback=str) + b"\n"

    def _time(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond, as ``datetime.isoformat`` writes it (the time
        rounded to the microsecond, then cut to the millisecond)."""
        fraction, whole = math.modf(created)  # as datetime.fromtimestamp splits it
        second, microsecond = divmod(int(whole) * 1_000_000 + round(fraction * 1e6), 1_000_000)
        if second != self._second:
            stamp = datetime.fromtimestamp(second, UTC).isoformat()
            self._second, self._second_text = second, stamp.removesuffix("+00:00")
        return f"{self._second_text}.{microsecond // 1000:03d}+00:00"


REQUEST_LOGGER = logging.getLogger("app.request")
# The file descriptor and formatter of configure_logging's handler, for the request lines.
_direct: tuple[int, JsonFormatter] | None = None


def log_request(message: str, fields: dict[str, Any]) -> None:
    """The line of one request: ``message`` and ``fields`` at INFO on ``app.request``; one
    write to the handler's file descriptor once :func:`configure_logging` has set it up (the
    handler flushes its stream after every line, so nothing of its own waits in between)."""
    if not REQUEST_LOGGER.isEnabledFor(logging.INFO):
        return
    if _direct is None:
        REQUEST_LOGGER.info(message, extra={"fields": fields})
        return
    fd, formatter = _direct
    line = formatter.request_line(time.time(), REQUEST_LOGGER.name, message, fields)
    while line:  # one write but for a line longer than the pipe takes at once
        line = line[os.write(fd, line) :]


def configure_logging(level: str) -> None:
    """Route the root logger and uvicorn's loggers through one JSON handler on stdout."""
    global _direct  # noqa: PLW0603 - the process's one handler, set up once at start
    formatter = JsonFormatter()
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(formatter)
    try:
        _direct = (sys.stdout.fileno(), formatter)
    except (AttributeError, OSError, ValueError):  # not a real file (captured output)
        _direct = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The request middleware writes the one line per request: uvicorn's access log would repeat it.
    logging.getLogger("uvicorn.access").disabled = True
    # What no line prints, not gathered for every record (the logging HOWTO's "Optimization"):
    # the caller's file and line (a walk up the stack: an ASGI request is 40 frames deep), and
    # thread and process names.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
