"""uvicorn's HTTP protocol with a deadline for receiving each request whole.

uvicorn times out idle keep-alive connections only: a client that connects and sends nothing,
stops in the middle of its headers, or sends less body than its Content-Length holds the
connection (and its memory) for as long as it likes. Cloud Run's front end buffers requests; a
local run has none. An ASGI middleware cannot help with headers (the app is called once they
are complete), so the deadline lives in the protocol: armed when a connection opens or a new
request's first bytes arrive, disarmed once the request is received whole.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

logger = logging.getLogger(__name__)


def _timeout_response(timeout_s: float) -> bytes:
    body = json.dumps({"detail": f"request not received whole within {timeout_s:g} s"}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class RequestDeadlineProtocol(HttpToolsProtocol):
    """A request not received whole within ``request_timeout_s`` is answered 408 (if no
    response has started) and its connection closed."""

    request_timeout_s: float = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        # The request/response cycle when the deadline was armed: the previous request's.
        self._armed_cycle: object | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """The client has ``request_timeout_s`` to send its first request."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Bytes of a new request (after a keep-alive pause) start its deadline."""
        if self._deadline is None:
            self._arm()
        super().data_received(data)

    def on_message_complete(self) -> None:
        """The request is received whole: no deadline while it is answered."""
        self._disarm()
        super().on_message_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        """Nothing to time out any more."""
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._armed_cycle = self.cycle
        self._deadline = self.loop.call_later(self.request_timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        # A cycle exists once this request's headers are complete; none yet before.
        current = self.cycle if self.cycle is not self._armed_cycle else None
        if current is None or not current.response_started:
            self.transport.write(_timeout_response(self.request_timeout_s))
        logger.warning("request not received whole within %g s", self.request_timeout_s)
        self.transport.close()


def request_deadline_protocol(timeout_s: float) -> type[RequestDeadlineProtocol]:
    """The protocol class for ``uvicorn.run(http=...)``, with that deadline."""
    return type(
        "RequestDeadlineProtocol", (RequestDeadlineProtocol,), {"request_timeout_s": timeout_s}
    )
