"""The load generator: bounded keep-alive asyncio clients, run in a child process pinned to
the other CPU (``python -m purchase_bench.load URL BODY_FILE CONNECTIONS DURATION WARMUP``
prints its results as JSON)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from purchase_bench.common import LOAD_CPU
from purchase_bench.servers import pinned


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bool, bytes]:
    """One request on an open connection: its status, whether the server closes it, the body."""
    writer.write(request)
    status_line = await reader.readline()
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
    body = await reader.readexactly(length)
    return int(status_line.split()[1]), close, body


async def _client(
    host: str, port: int, request: bytes, *, until: float, warm_until: float, out: dict[str, Any]
) -> None:
    reader = writer = None
    while (now := time.perf_counter()) < until:
        started = now
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            status, close, _ = await exchange(reader, writer, request)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status, close = 0, True
        elapsed = time.perf_counter() - started
        if started >= warm_until:
            out["latencies"].append(elapsed)
            if status != 200:
                out["errors"] += 1
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def summary(latencies: list[float], errors: int, duration: float) -> dict[str, Any]:
    """Requests, errors, req/s, p50 and p99 (ms) of one load point."""
    lat = sorted(latencies)
    if not lat:
        return {"requests": 0, "errors": errors, "rps": 0.0, "p50_ms": None, "p99_ms": None}
    return {
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / duration,
        "p50_ms": lat[len(lat) // 2] * 1000,
        "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
    }


async def generate(url: str, body: bytes, connections: int, duration: float, warmup: float) -> dict:
    parsed = urllib.parse.urlsplit(url)
    request = (
        f"POST {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    out: dict[str, Any] = {"latencies": [], "errors": 0}
    start = time.perf_counter()
    warm_until = start + warmup
    until = warm_until + duration
    await asyncio.gather(
        *(
            _client(
                parsed.hostname, parsed.port, request, until=until, warm_until=warm_until, out=out
            )
            for _ in range(connections)
        )
    )
    return summary(out["latencies"], out["errors"], duration)


def load(url: str, body: bytes, connections: int, duration: float, warmup: float = 2.0) -> dict:
    """Run the load generator in a child process pinned to LOAD_CPU; its results."""
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(body)
    try:
        done = subprocess.run(
            pinned(
                [
                    sys.executable,
                    "-m",
                    "purchase_bench.load",
                    url,
                    f.name,
                    str(connections),
                    str(duration),
                    str(warmup),
                ],
                LOAD_CPU,
            ),
            capture_output=True,
            text=True,
            timeout=duration + warmup + 60,
            check=True,
        )
    finally:
        os.unlink(f.name)
    return json.loads(done.stdout)


def main(argv: list[str] | None = None) -> int:
    url, body_file, connections, duration, warmup = (sys.argv[1:] if argv is None else argv)[:5]
    result = asyncio.run(
        generate(
            url, Path(body_file).read_bytes(), int(connections), float(duration), float(warmup)
        )
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
