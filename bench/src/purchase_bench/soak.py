"""The soak (``nox -s soak``): our API under a fixed request rate for minutes, mixed single and
batch requests; no error allowed, and resident memory may grow less than 5 % after the first
minute (issue 16, "Done when").

The server serves the baked model on CPU 0, as in ``nox -s bench``; the load runs in this
process (on CPU 1 when there are two): an open-loop schedule, so a slow answer never lowers the
rate (requests are sent on time on as many keep-alive connections as it takes, up to
``MAX_CONNECTIONS``). Every ``batch_every``-th request is a batch of ``batch_size`` sessions.
The server's resident memory (``VmRSS`` in ``/proc/<pid>/status``) is read every
``SAMPLE_S``. ``python -m purchase_bench.soak --help`` lists the options; the exit status is 0
when the soak held, 1 when it did not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from purchase_bench.common import API_DIR, LOAD_CPU, say
from purchase_bench.load import exchange

SAMPLE_S = 5.0
MAX_CONNECTIONS = 64
# An idle keep-alive connection is not reused after this long: the server's keep-alive
# timeout (uvicorn's default, 5 s) must not close it under a request.
IDLE_CONNECTION_S = 4.0
# Resident memory may grow at most this much after the first minute (the bound).
MAX_GROWTH = 0.05
WARM_S = 60.0


@dataclass
class Tally:
    """What the load saw, per minute, and the server's memory samples."""

    sent: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # kind -> seconds
    memory: list[tuple[float, int]] = field(default_factory=list)  # (seconds, RSS bytes)
    late: int = 0  # times a request could not start on time: every connection was busy

    def record(self, kind: str, status: int, seconds: float) -> None:
        self.latencies.setdefault(kind, []).append(seconds)
        if status != 200:
            key = f"{kind} {status or 'no answer'}"
            self.errors[key] = self.errors.get(key, 0) + 1


def growth(memory: list[tuple[float, int]], warm_s: float = WARM_S) -> tuple[int, int, float]:
    """Resident memory at the end of the first ``warm_s`` seconds, the highest after it, and
    the growth between them (a fraction); the first sample stands in when the run is shorter."""
    if not memory:
        raise ValueError("no memory sample")
    before = [rss for t, rss in memory if t < warm_s]
    after = [rss for t, rss in memory if t >= warm_s]
    if not after:  # a run shorter than the warm-up: from its first sample
        before, after = [memory[0][1]], [rss for _, rss in memory]
    base, peak = (before or after)[-1 if before else 0], max(after)
    return base, peak, (peak - base) / base


def resident_bytes(pid: int) -> int:
    """``VmRSS`` of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _request(target: urllib.parse.SplitResult, body: bytes) -> bytes:
    head = (
        f"POST {target.path or '/predict'} HTTP/1.1\r\nHost: {target.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Soak:
    """The open-loop load of one soak: ``rate`` requests a second for ``seconds``."""

    def __init__(self, url: str, bodies: dict[str, bytes], rate: float, batch_every: int) -> None:
        self.target = urllib.parse.urlsplit(url)
        self.requests = {kind: _request(self.target, body) for kind, body in bodies.items()}
        self.rate, self.batch_every = rate, batch_every
        # (when it was last used, the connection), the most recently used last.
        self.idle: list[tuple[float, tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = []
        self.open = 0
        self.tally = Tally()

    async def _send(self, kind: str) -> None:
        connection = self._idle_connection()
        started = time.perf_counter()
        try:
            if connection is None:
                self.open += 1
                connection = await asyncio.open_connection(self.target.hostname, self.target.port)
            status, close, _ = await exchange(*connection, self.requests[kind])
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            status, close = 0, True
        self.tally.record(kind, status, time.perf_counter() - started)
        if connection is not None and not close:
            self.idle.append((time.perf_counter(), connection))
        else:
            if connection is not None:
                connection[1].close()
            self.open -= 1

    def _idle_connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The most recently used idle connection, dropping those idle for longer than the
        server keeps them (uvicorn closes them after 5 s: a request sent on one as it closes
        is lost, as any HTTP client's would be)."""
        now = time.perf_counter()
        while self.idle:
            used, connection = self.idle.pop()
            if now - used < IDLE_CONNECTION_S:
                return connection
            connection[1].close()
            self.open -= 1
        return None

    def _progress(self, now: float, seconds: float) -> None:
        rss = f", server {self.tally.memory[-1][1] / 2**20:.1f} MiB" if self.tally.memory else ""
        errors = sum(self.tally.errors.values())
        say(
            f"soak {now / 60:.0f}/{seconds / 60:g} min: {self.tally.sent} sent, {errors} errors{rss}"
        )

    async def run(self, seconds: float, pid: int | None) -> Tally:
        """Send on schedule for ``seconds``; sample ``pid``'s memory meanwhile."""
        start = time.perf_counter()
        tasks: set[asyncio.Task] = set()
        next_sample, next_progress = 0.0, 60.0
        while (now := time.perf_counter() - start) < seconds:
            if pid is not None and now >= next_sample:
                self.tally.memory.append((now, resident_bytes(pid)))
                next_sample += SAMPLE_S
            if now >= next_progress:
                self._progress(now, seconds)
                next_progress += 60.0
            due = int(now * self.rate) + 1
            while self.tally.sent < due:
                if not self.idle and self.open >= MAX_CONNECTIONS:
                    self.tally.late += 1  # the schedule waits for a connection: it fell behind
                    break
                self.tally.sent += 1
                kind = "batch" if self.tally.sent % self.batch_every == 0 else "single"
                task = asyncio.ensure_future(self._send(kind))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(min(0.002, 1 / self.rate))
        if tasks:
            await asyncio.wait(tasks, timeout=30)
        if pid is not None:
            self.tally.memory.append((time.perf_counter() - start, resident_bytes(pid)))
        for _, (_, writer) in self.idle:
            writer.close()
        return self.tally


def verdict(tally: Tally) -> list[str]:
    """What failed (empty: the soak held)."""
    problems = [f"{count} x {kind}" for kind, count in sorted(tally.errors.items())]
    if tally.late:
        problems.append(f"the schedule fell behind ({MAX_CONNECTIONS} connections all busy)")
    _, _, grown = growth(tally.memory)
    if grown >= MAX_GROWTH:
        problems.append(f"resident memory grew {grown:.1%} after the first minute")
    return problems


def report(tally: Tally, seconds: float, rate: float, batch_every: int, batch_size: int) -> str:
    """The soak's Markdown paragraph and table."""
    base, peak, grown = growth(tally.memory)
    rows = []
    for kind, values in sorted(tally.latencies.items()):
        ordered = sorted(values)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        errors = sum(n for k, n in tally.errors.items() if k.startswith(kind))
        rows.append(
            f"| {kind} | {len(values)} | {errors} | {statistics.median(values) * 1000:.1f} "
            f"| {p99 * 1000:.1f} |"
        )
    problems = verdict(tally)
    return "\n".join(
        [
            f"{seconds / 60:g} minutes at {rate:g} requests/s (every {batch_every}th a batch of "
            f"{batch_size} sessions), {tally.sent} requests; resident memory "
            f"{base / 2**20:.1f} MiB after the first minute, at most {peak / 2**20:.1f} MiB "
            f"after it: growth **{grown:+.2%}** (limit < {MAX_GROWTH:.0%}).",
            "",
            "| requests | count | errors | p50 ms | p99 ms |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
            "Verdict: "
            + (
                "**held** (no error, memory bound met)."
                if not problems
                else "**failed**: " + "; ".join(problems) + "."
            ),
        ]
    )


def document(body: str, argv: list[str]) -> str:
    """The report as a Markdown file of its own (``--out``, e.g. docs/soak.md)."""
    from purchase_bench.report import provenance  # noqa: PLC0415

    command = " ".join(["nox -s soak --", *argv]) if argv else "nox -s soak"
    return "\n".join(
        [
            *provenance("Soak", "python -m purchase_bench.soak", command),
            "Our API serving the baked model (one uvicorn worker) on CPU 0; an open-loop load "
            "(requests sent on schedule, however long the answers take) from CPU 1; the "
            "server's resident memory (VmRSS) read every 5 s.",
            "",
            body,
            "",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m purchase_bench.soak",
        description="Soak the API (baked model) at a fixed rate of mixed single and batch "
        "requests; fails on any error or a resident-memory growth of 5 %% or more after the "
        "first minute.",
        epilog="Without --model-dir a model is trained and baked first (about a minute), as "
        "nox -s bench does. Exit status: 0 held, 1 failed, 2 bad usage.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="soak length (10)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (100)")
    parser.add_argument("--batch-every", type=int, default=20, help="every Nth is a batch (20)")
    parser.add_argument("--batch-size", type=int, default=100, help="sessions a batch (100)")
    parser.add_argument("--model-dir", type=Path, help="a baked, prepared model directory")
    parser.add_argument(
        "--work", type=Path, help="scratch directory (default: a new temporary one, kept)"
    )
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.batch_every < 1 or args.batch_size < 1:
        print("soak: error: --minutes, --rate, --batch-every, --batch-size must be > 0")
        return 2
    from purchase_bench.context import Bench  # noqa: PLC0415
    from purchase_bench.servers import running  # noqa: PLC0415

    work = args.work or Path(tempfile.mkdtemp(prefix="purchase-predict-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    say(f"scratch directory {work} (the server's log: api-baked.log)")
    bench = Bench(work=work.resolve(), duration=0, connections=[], events=[])
    if args.model_dir is None:
        shutil.rmtree(bench.model_dir, ignore_errors=True)  # the bake wants an empty directory
        try:
            bench.model()
        except subprocess.CalledProcessError as err:
            print(f"soak: error: preparing the model failed: {err}", file=sys.stderr)
            return 1
    else:
        bench.model_dir = args.model_dir.resolve()
    session = bench.session
    bodies = {
        "single": json.dumps(session).encode(),
        "batch": json.dumps([session] * args.batch_size).encode(),
    }
    if (os.cpu_count() or 1) >= 2 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {LOAD_CPU})
    seconds = args.minutes * 60
    with running(bench.baked()) as server:
        say(f"soaking {server.url} for {args.minutes:g} min at {args.rate:g}/s (API in {API_DIR})")
        soak = Soak(server.url, bodies, args.rate, args.batch_every)
        assert server.proc is not None
        tally = asyncio.run(soak.run(seconds, server.proc.pid))
    text = report(tally, seconds, args.rate, args.batch_every, args.batch_size)
    print(text)
    if args.out:
        args.out.write_text(document(text, sys.argv[1:] if argv is None else argv), "utf-8")
    return 1 if verdict(tally) else 0


if __name__ == "__main__":
    sys.exit(main())
