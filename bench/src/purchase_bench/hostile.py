"""Section ``hostile``: the error-amplification bound (issue 16, point 1) on a real uvicorn.

Against the API serving the baked model on one core, one request at a time: a valid batch of
10,000 sessions (the anchor), ``[{}]`` x 10,000, and 10,000 sessions of 60 unknown keys each.
Meanwhile a second connection sends ``GET /health`` back to back: its worst latency during each
request is compared with an idle ``/health`` measured just before. The probe runs in a child
process pinned to the other CPU (``python -m purchase_bench.hostile BASE_URL BODY_FILE REPEATS
WARMUP IDLE_S`` prints its results as JSON); the server's peak resident memory is read from
/proc between bodies.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

from purchase_bench.common import LOAD_CPU, say
from purchase_bench.context import Bench
from purchase_bench.load import exchange
from purchase_bench.servers import pinned, running

SESSIONS = 10_000
UNKNOWN_KEYS = 60
# Seconds of back-to-back idle /health before the bodies: the anchor of the /health figures.
IDLE_S = 0.5


def bodies(session: dict[str, Any], size: int = SESSIONS) -> dict[str, bytes]:
    """The anchor first, then the two hostile bodies of issue 16, point 1."""
    valid = [{**session, "price": round(5 + (i % 997) * 1.7, 2)} for i in range(size)]
    unknown = {f"x{i:02d}": 1 for i in range(UNKNOWN_KEYS)}
    return {
        f"valid batch of {size:,}": json.dumps(valid).encode(),
        f"[{{}}] x {size:,}": json.dumps([{}] * size).encode(),
        f"{size:,} sessions x {UNKNOWN_KEYS} unknown keys": json.dumps([unknown] * size).encode(),
    }


def _request(method: str, target: urllib.parse.SplitResult, path: str, body: bytes) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {target.netloc}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return (head + "\r\n").encode() + body


async def _health_until(
    connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes, done: Any
) -> list[float]:
    """Seconds of each ``GET /health``, sent back to back until ``done()`` (at least one)."""
    latencies: list[float] = []
    while not latencies or not done():
        started = time.perf_counter()
        status, _, _ = await exchange(*connection, request)
        if status != 200:
            raise RuntimeError(f"/health answered {status}")
        latencies.append(time.perf_counter() - started)
    return latencies


async def probe(base_url: str, body: bytes, repeats: int, warm_up: int, idle_s: float) -> dict:
    """Idle /health for ``idle_s``, then ``warm_up`` + ``repeats`` POST /predict of ``body``
    with /health polled meanwhile; the measured ones' figures."""
    target = urllib.parse.urlsplit(base_url)
    health_request = _request("GET", target, "/health", b"")
    post_request = _request("POST", target, "/predict", body)
    health = await asyncio.open_connection(target.hostname, target.port)
    poster = await asyncio.open_connection(target.hostname, target.port)
    idle_until = time.perf_counter() + idle_s
    idle = await _health_until(health, health_request, lambda: time.perf_counter() >= idle_until)
    runs = []
    for attempt in range(warm_up + repeats):
        started = time.perf_counter()
        posted = asyncio.ensure_future(exchange(*poster, post_request))
        during = await _health_until(health, health_request, posted.done)
        status, _, answer = await posted
        elapsed = time.perf_counter() - started
        if attempt >= warm_up:
            runs.append({"status": status, "bytes": len(answer), "s": elapsed, "health": during})
    for _, writer in (health, poster):
        writer.close()
    return summary(idle, runs)


def summary(idle: list[float], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Milliseconds: the request's median, the worst /health during any run, idle /health."""
    during = [latency for run in runs for latency in run["health"]]
    return {
        "statuses": sorted({run["status"] for run in runs}),
        "answer_bytes": max(run["bytes"] for run in runs),
        "request_ms_median": statistics.median(run["s"] for run in runs) * 1000,
        "health_ms_worst": max(during) * 1000,
        "health_polls": len(during),
        "idle_health_ms_median": statistics.median(idle) * 1000,
    }


def ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each body's request time over the anchor's (the first body), and its worst /health
    over the idle /health measured before it."""
    anchor = next(iter(results.values()))["request_ms_median"]
    return {
        name: {
            "request_x_anchor": row["request_ms_median"] / anchor,
            "health_x_idle": row["health_ms_worst"] / row["idle_health_ms_median"],
        }
        for name, row in results.items()
    }


def peak_resident_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def measure(base_url: str, body_file: Path, repeats: int, warm_up: int, idle_s: float) -> dict:
    """:func:`probe` in a child process pinned to LOAD_CPU; its results."""
    done = subprocess.run(
        pinned(
            [
                sys.executable,
                "-m",
                "purchase_bench.hostile",
                base_url,
                str(body_file),
                str(repeats),
                str(warm_up),
                str(idle_s),
            ],
            LOAD_CPU,
        ),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(done.stdout)


def hostile(bench: Bench, size: int = SESSIONS, repeats: int = 5, warm_up: int = 2) -> None:
    server = bench.baked()
    server.log = bench.work / "api-hostile.log"
    results: dict[str, dict[str, Any]] = {}
    with running(server):
        assert server.proc is not None
        base = server.url.removesuffix(server.path)
        peak = peak_resident_mb(server.proc.pid)
        for name, body in bodies(bench.session, size).items():
            body_file = bench.work / "hostile-body.json"
            body_file.write_bytes(body)
            row = measure(base, body_file, repeats, warm_up, IDLE_S)
            now = peak_resident_mb(server.proc.pid)
            results[name] = {**row, "body_mb": len(body) / 1e6, "peak_growth_mb": now - peak}
            peak = now
            say(
                f"{name}: {row['request_ms_median']:.0f} ms, /health <= {row['health_ms_worst']:.1f} ms"
            )
    bench.results["hostile"] = {
        "requests": repeats,
        "warm_up_requests": warm_up,
        "bodies": results,
        "ratios": ratios(results),
    }


def main(argv: list[str] | None = None) -> int:
    base_url, body_file, repeats, warm_up, idle_s = (sys.argv[1:] if argv is None else argv)[:5]
    result = asyncio.run(
        probe(base_url, Path(body_file).read_bytes(), int(repeats), int(warm_up), float(idle_s))
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
