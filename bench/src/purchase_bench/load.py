"""The load generator, run pinned to the other CPU: ``wrk`` when it is installed (Debian's
``wrk``: a C client, so the client is never what limits the fastest server), else bounded
keep-alive asyncio clients in a child process (``python -m purchase_bench.load URL BODY_FILE
CONNECTIONS DURATION WARMUP`` prints its results as JSON)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
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
    """One load point from the generator pinned to LOAD_CPU: wrk if installed, else ours."""
    if shutil.which("wrk"):
        return {**wrk_load(url, body, connections, duration, warmup), "generator": "wrk"}
    return {**asyncio_load(url, body, connections, duration, warmup), "generator": "asyncio"}


_WRK_SCRIPT = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
"""
_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk_load(url: str, body: bytes, connections: int, duration: float, warmup: float) -> dict:
    """``wrk`` with one thread: a warm-up run, then the measured one; req/s, p50, p99, errors."""
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        (Path(tmp) / "body.json").write_bytes(body)
        (Path(tmp) / "post.lua").write_text(_WRK_SCRIPT)
        env = {**os.environ, "BENCH_BODY_FILE": str(Path(tmp) / "body.json")}
        runs = []
        for seconds in (warmup, duration):
            cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency"]
            cmd += ["-s", str(Path(tmp) / "post.lua"), url]
            runs.append(
                subprocess.run(
                    pinned(cmd, LOAD_CPU),
                    capture_output=True,
                    text=True,
                    env=env,
                    timeout=seconds + 60,
                    check=True,
                ).stdout
            )
    return parse_wrk(runs[-1], duration)


def parse_wrk(text: str, duration: float) -> dict:
    """The figures of one ``wrk --latency`` report."""

    def latency(percent: str) -> float | None:
        found = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
        return float(found[1]) * _WRK_UNITS[found[2]] if found else None

    requests = re.search(r"^\s*(\d+) requests in", text, re.MULTILINE)
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", text, re.MULTILINE)
    if requests is None or rps is None:
        raise RuntimeError(f"wrk gave no figures: {text[-500:]!r}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    errors = int(non_2xx[1]) if non_2xx else 0
    errors += sum(int(n) for n in sockets.groups()) if sockets else 0
    return {
        "requests": int(requests[1]),
        "errors": errors,
        "rps": float(rps[1]),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
    }


def asyncio_load(
    url: str, body: bytes, connections: int, duration: float, warmup: float = 2.0
) -> dict:
    """Run our asyncio generator in a child process pinned to LOAD_CPU; its results."""
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
