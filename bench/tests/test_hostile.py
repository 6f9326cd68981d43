"""The hostile-bodies section: its bodies, its arithmetic, its report, and one short probe
against a local server that answers /predict slowly."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from purchase_bench import hostile, report

REFUSAL = json.dumps({"detail": [], "error_count": 3}).encode()


def test_bodies_put_the_valid_anchor_first_then_the_two_hostile_ones() -> None:
    made = hostile.bodies({"price": 1.0, "brand": "b"}, size=3)

    valid, empty, unknown = (json.loads(body) for body in made.values())
    assert list(made) == ["valid batch of 3", "[{}] x 3", "3 sessions x 60 unknown keys"]
    assert [session["brand"] for session in valid] == ["b"] * 3
    assert empty == [{}, {}, {}]
    assert len(unknown) == 3
    assert all(len(session) == hostile.UNKNOWN_KEYS for session in unknown)


def test_summary_and_ratios_compare_with_the_anchor_and_the_idle_health() -> None:
    def row(seconds: list[float], health: float, status: int) -> dict:
        runs = [{"status": status, "bytes": 10, "s": s, "health": [0.001, health]} for s in seconds]
        return hostile.summary([0.001, 0.002, 0.002], runs)

    results = {"valid": row([0.1, 0.2, 0.3], 0.004, 200), "bad": row([0.05], 0.02, 422)}

    assert results["bad"] == {
        "statuses": [422],
        "answer_bytes": 10,
        "request_ms_median": pytest.approx(50.0),
        "health_ms_worst": pytest.approx(20.0),
        "health_polls": 2,
        "idle_health_ms_median": pytest.approx(2.0),
    }
    assert hostile.ratios(results) == {
        "valid": {"request_x_anchor": pytest.approx(1.0), "health_x_idle": pytest.approx(2.0)},
        "bad": {"request_x_anchor": pytest.approx(0.25), "health_x_idle": pytest.approx(10.0)},
    }


def test_the_section_reports_the_ratios_and_the_health_bound() -> None:
    row = {"statuses": [422], "answer_bytes": 14_321, "request_ms_median": 30.0,
           "health_ms_worst": 60.0, "health_polls": 40, "idle_health_ms_median": 0.5,
           "body_mb": 0.03, "peak_growth_mb": 2.0}  # fmt: skip
    section = {
        "requests": 5,
        "warm_up_requests": 2,
        "bodies": {"[{}] x 10,000": row},
        "ratios": {"[{}] x 10,000": {"request_x_anchor": 0.4, "health_x_idle": 120.0}},
    }
    lines = report._hostile_section(section)

    assert (
        "| [{}] x 10,000 | 30 KB | 422 | 14,321 | 30 ms | 0.40x | 60.0 ms | 120x (idle 0.50 ms) "
        "| 2 MB |"
    ) in lines
    assert lines[-2] == (
        "Target: /health <= 50 ms while a refused body is processed (worst 60.0 ms): **missed**."
    )


def test_peak_resident_memory_of_this_process() -> None:
    assert hostile.peak_resident_mb(os.getpid()) > 1


class _SlowRefusal(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(200, b'{"status":"ok"}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.1)
        self._answer(422, REFUSAL)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _SlowRefusal)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_the_probe_polls_health_while_a_request_runs(server: str, tmp_path: Path) -> None:
    body_file = tmp_path / "body.json"
    body_file.write_bytes(b"[{}]")

    result = hostile.measure(server, body_file, repeats=2, warm_up=1, idle_s=0.05)

    assert result["statuses"] == [422]
    assert result["answer_bytes"] == len(REFUSAL)
    assert result["request_ms_median"] >= 100
    assert result["health_polls"] > 2  # several /health answered during each 100 ms request
