"""``python -m app``: serve the API on $HOST:$PORT with structured logs."""

from __future__ import annotations

import sys

import uvicorn
from pydantic import ValidationError

from app.core.config import get_settings
from app.core.http import request_deadline_protocol
from app.core.logging import configure_logging


def main() -> None:
    """Read the settings, configure logging, run uvicorn (the image's CMD)."""
    try:
        settings = get_settings()
    except ValidationError as err:
        reasons = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in err.errors())
        sys.exit(f"purchase-predict-api: invalid settings: {reasons}")
    configure_logging(settings.log_level)
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # No "server: uvicorn" on every answer (docs/api.md, "What is exposed").
        server_header=False,
        # Cloud Run sends SIGTERM and allows 10 s: finish in-flight requests within that
        # (GRACEFUL_SHUTDOWN_S); those still running are then answered 503 (app/core/middleware.py).
        timeout_graceful_shutdown=settings.graceful_shutdown_s,  # type: ignore[arg-type]
        # A request not received whole within REQUEST_TIMEOUT_S is answered 408 (app/core/http.py).
        http=request_deadline_protocol(settings.request_timeout_s),
    )


if __name__ == "__main__":
    main()
