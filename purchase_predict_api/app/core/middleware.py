"""ASGI middleware: the request body limit, the answer of a request cut by shutdown, and one
structured log line per request."""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("app.request")


class BodySizeLimitMiddleware:
    """413 for a body over ``max_bytes``: early from Content-Length, else while it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int, detail: str = "") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.detail = detail or f"request body larger than {max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a declared oversize body unread; count the bytes of any other."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await JSONResponse({"detail": self.detail}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the route's body read: the app's handler answers 413 JSON.
                    raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counting_receive, send)


SHUTTING_DOWN = "the service is shutting down: retry"


class ShutdownCutMiddleware:
    """503 JSON for a request still running when the graceful-shutdown period ends.

    uvicorn then cancels the request's task and, if nothing was answered, sends a plain-text
    500 of its own. Here the cancellation is answered 503 (retry elsewhere) in the API's error
    shape, and the request ends there: it is what the cancellation asked for.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request; answer 503 if it is cancelled before its response started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_and_record(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except asyncio.CancelledError:
            if started:
                raise
            logger.warning("%s %s cut by shutdown: 503", scope["method"], scope["path"])
            await JSONResponse({"detail": SHUTTING_DOWN}, status_code=503)(scope, receive, send)


class RequestLogMiddleware:
    """Log method, path, status and latency of every request (never headers, query or body)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and log it once the response has started (or failed)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            latency_ms = (time.perf_counter() - started) * 1000
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "latency_ms": round(latency_ms, 2),
            }
            # Routes leave request.state.sessions behind (request state lives in the scope).
            if (sessions := scope.get("state", {}).get("sessions")) is not None:
                fields["sessions"] = sessions
            logger.info(
                "%s %s %d %.1f ms",
                scope["method"],
                scope["path"],
                status,
                latency_ms,
                extra={"fields": fields},
            )
