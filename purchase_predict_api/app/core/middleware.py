"""The one ASGI middleware: the request body limit, the answer of a request cut by shutdown,
and one structured log line per request.

One layer rather than three: each layer wraps ``send`` (and ``receive``) again for every
request, and a single-session prediction is short enough for that to show.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.logging import log_request

logger = logging.getLogger("app.request")

SHUTTING_DOWN = "the service is shutting down: retry"


class ServingMiddleware:
    """Around every HTTP request:

    - **body limit**: 413 for a body over ``max_bytes``, early from Content-Length, else while
      it streams in (raised inside the route's body read: the app's handler answers 413 JSON);
    - **cut by shutdown**: when the graceful-shutdown period ends, uvicorn cancels the requests
      still running and, if nothing was answered, sends a plain-text 500 of its own. Here the
      cancellation is answered 503 (retry elsewhere) in the API's error shape, and the request
      ends there: it is what the cancellation asked for;
    - **request log**: method, path, status and latency, once the response has started or
      failed (never headers, query or body); refused (413) and cut (503) requests included.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, detail: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail or f"request body larger than {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request within the limit, answer its cancellation, log it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0  # no response started yet

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            declared = _content_length(scope)
            if declared.isdigit() and int(declared) > self.max_bytes:
                response = JSONResponse({"detail": self.detail}, status_code=413)
                await response(scope, receive, send_and_record)
                return
            try:
                await self.app(scope, self._counting(receive), send_and_record)
            except asyncio.CancelledError:
                if status:
                    raise
                logger.warning("%s %s cut by shutdown: 503", scope["method"], scope["path"])
                response = JSONResponse({"detail": SHUTTING_DOWN}, status_code=503)
                await response(scope, receive, send_and_record)
        finally:
            _log(scope, status or 500, started)

    def _counting(self, receive: Receive) -> Receive:
        """``receive``, counting the body's bytes against the limit."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise HTTPException(413, self.detail)
            return message

        return counting_receive


def _content_length(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value
    return b""


def _log(scope: Scope, status: int, started: float) -> None:
    latency_ms = (time.perf_counter() - started) * 1000
    method, path = scope["method"], scope["path"]
    fields = {"method": method, "path": path, "status": status, "latency_ms": round(latency_ms, 2)}
    # Routes leave request.state.sessions behind (request state lives in the scope).
    if (sessions := scope.get("state", {}).get("sessions")) is not None:
        fields["sessions"] = sessions
    log_request(f"{method} {path} {status} {latency_ms:.1f} ms", fields)
