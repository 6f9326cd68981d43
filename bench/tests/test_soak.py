"""The soak's logic: its memory bound, its verdict and report, and a short open-loop run
against a stub server (the real 10-minute soak is ``nox -s soak``)."""

from __future__ import annotations

import asyncio
import os

import pytest

from purchase_bench.soak import (
    IDLE_CONNECTION_S,
    MAX_GROWTH,
    Soak,
    Tally,
    document,
    growth,
    main,
    report,
    resident_bytes,
    verdict,
)


def test_growth_is_measured_from_the_end_of_the_first_minute() -> None:
    memory = [(0.0, 50), (30.0, 90), (59.0, 100), (120.0, 103), (600.0, 101)]
    assert growth(memory) == (100, 103, pytest.approx(0.03))
    # A run shorter than the warm-up compares its last sample with its first.
    assert growth([(0.0, 100), (10.0, 110)]) == (100, 110, pytest.approx(0.10))


def test_the_verdict_names_errors_lateness_and_growth() -> None:
    held = Tally(sent=10, memory=[(0.0, 100), (61.0, 104)])
    assert verdict(held) == []
    failed = Tally(sent=10, memory=[(0.0, 100), (61.0, 100 * (1 + MAX_GROWTH))], late=1)
    failed.record("batch", 500, 0.1)
    failed.record("single", 0, 0.1)
    problems = verdict(failed)
    assert problems[:2] == ["1 x batch 500", "1 x single no answer"]
    assert "fell behind" in problems[2] and "grew 5.0%" in problems[3]


def test_the_report_has_one_row_per_kind_and_the_growth() -> None:
    tally = Tally(sent=3, memory=[(0.0, 2**20 * 100), (70.0, 2**20 * 101)])
    for kind, seconds in (("single", 0.002), ("single", 0.004), ("batch", 0.02)):
        tally.record(kind, 200, seconds)
    text = report(tally, 120, 50, 20, 100)
    assert "2 minutes at 50 requests/s (every 20th a batch of 100 sessions)" in text
    assert "growth **+1.00%**" in text
    assert "| single | 2 | 0 | 3.0 | 4.0 |" in text and "| batch | 1 | 0 | 20.0 | 20.0 |" in text
    assert text.endswith("Verdict: **held** (no error, memory bound met).")


async def _stub(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP server answering every POST 200 with a small body."""
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()


def test_a_short_soak_keeps_its_rate_and_mixes_batches() -> None:
    async def scenario() -> Tally:
        server = await asyncio.start_server(_stub, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        bodies = {"single": b"{}", "batch": b"[{}]"}
        soak = Soak(f"http://127.0.0.1:{port}/predict", bodies, rate=100, batch_every=10)
        async with server:
            return await soak.run(2.0, os.getpid())

    tally = asyncio.run(scenario())
    assert 190 <= tally.sent <= 201, tally.sent  # 100 a second, on schedule
    assert len(tally.latencies["batch"]) == tally.sent // 10
    assert not tally.errors and not tally.late
    assert tally.memory and tally.memory[0][1] == pytest.approx(
        resident_bytes(os.getpid()), rel=0.5
    )


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--minutes", "0"]) == 2
    assert "must be > 0" in capsys.readouterr().out


def test_the_document_says_how_to_reproduce_it() -> None:
    text = document("the body", ["--minutes", "2"])
    assert text.startswith("# Soak\n")
    assert "    nox -s soak -- --minutes 2\n" in text and "- Machine: " in text
    assert text.endswith("the body\n")


def test_idle_connections_are_not_reused_once_the_server_may_have_closed_them() -> None:
    # uvicorn closes a keep-alive connection idle for 5 s: one idle that long is dropped, not
    # reused (a request on it as it closes would be lost), and a fresh one is opened.
    async def scenario() -> tuple[int, int, Tally]:
        server = await asyncio.start_server(_stub, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        soak = Soak(f"http://127.0.0.1:{port}/predict", {"single": b"{}"}, rate=10, batch_every=99)
        async with server:
            await soak._send("single")
            ((used, connection),) = soak.idle
            soak.idle = [(used - IDLE_CONNECTION_S, connection)]  # as if idle for that long
            await soak._send("single")
            return soak.open, len(soak.idle), soak.tally

    still_open, idle, tally = asyncio.run(scenario())
    assert (still_open, idle) == (1, 1)
    assert len(tally.latencies["single"]) == 2 and not tally.errors
