"""The load generator's summary, and one short run against a local server."""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from purchase_bench import load


def test_summary_of_no_requests_has_no_percentiles() -> None:
    assert load.summary([], 3, 10.0) == {
        "requests": 0,
        "errors": 3,
        "rps": 0.0,
        "p50_ms": None,
        "p99_ms": None,
    }


def test_summary_gives_rate_and_percentiles_in_ms() -> None:
    stats = load.summary([0.001 * i for i in range(1, 101)], 0, 2.0)
    assert stats["requests"] == 100
    assert stats["rps"] == 50.0
    assert stats["p50_ms"] == pytest.approx(51.0)
    assert stats["p99_ms"] == pytest.approx(100.0)


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/predict"
    httpd.shutdown()
    httpd.server_close()


def test_generate_keeps_connections_alive_and_counts_no_errors(server: str) -> None:
    stats = asyncio.run(load.generate(server, b"{}", 2, 0.3, 0.1))
    assert stats["requests"] > 0
    assert stats["errors"] == 0


def test_load_runs_the_generator_as_a_module(server: str) -> None:
    stats = load.asyncio_load(server, b"{}", 1, 0.3, warmup=0.1)
    assert stats["requests"] > 0
    assert stats["errors"] == 0


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_wrk_posts_the_body_and_counts_no_errors(server: str) -> None:
    stats = load.load(server, b"{}", 2, 1, warmup=1)
    assert stats["generator"] == "wrk"
    assert stats["requests"] > 0 and stats["rps"] > 0
    assert stats["errors"] == 0
    assert 0 < stats["p50_ms"] <= stats["p99_ms"]


WRK_REPORT = """Running 8s test @ http://127.0.0.1:18602/predict
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.40ms    1.20ms  30.00ms   90.00%
    Req/Sec     4.70k   200.00     5.00k    70.00%
  Latency Distribution
     50%  850.00us
     75%    3.60ms
     90%    4.20ms
     99%    1.02s
  37600 requests in 8.00s, 7.50MB read
  Non-2xx or 3xx responses: 3
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   4700.00
Transfer/sec:    0.94MB
"""


def test_a_wrk_report_is_read_with_its_units_and_errors() -> None:
    assert load.parse_wrk(WRK_REPORT, 8.0) == {
        "requests": 37600,
        "errors": 6,
        "rps": 4700.0,
        "p50_ms": 0.85,
        "p99_ms": 1020.0,
    }
