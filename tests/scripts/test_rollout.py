"""The rollout's rules (purchase_delivery.rollout_analysis), its Cloud Monitoring reader against
the stand-in's Monitoring (in process, over real HTTP), and the probe's attribution.

The act tests in tests/workflows/test_cloud_run_deploy.py run the whole action; these pin the
thresholds and the API shapes one by one.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from purchase_contract.config import ConfigError, load_config
from purchase_delivery.rollout import Rollout, parse_previous
from purchase_delivery.rollout_analysis import (
    RolloutConfigError,
    Stats,
    Thresholds,
    bucket_boundaries,
    compare_sample,
    distribution_percentile,
    judge,
    parse_steps,
)
from purchase_delivery.rollout_metrics import MetricsError, MonitoringMetrics, Probe
from purchase_rig.standin_metrics import RequestMetrics, Served
from purchase_rig.standin_model import ApiError

LIMITS = Thresholds(min_requests=50)
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "steps"), [("100", [100]), ("10,50,100", [10, 50, 100]), ("5 25 100", [5, 25, 100])]
)
def test_steps_parse(text: str, steps: list[int]) -> None:
    assert parse_steps(text) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10,50", "must end at 100"),
        ("", "must end at 100"),
        ("50,10,100", "increase strictly"),
        ("0,100", "increase strictly"),
        ("10,10,100", "increase strictly"),
        ("ten,100", "whole percentages"),
    ],
)
def test_bad_steps_say_why(text: str, message: str) -> None:
    with pytest.raises(RolloutConfigError, match=message):
        parse_steps(text)


def test_the_configuration_refuses_the_same_steps(project_config) -> None:
    # One rule for both readers: the pyproject's traffic_steps and the action's input.
    environments = project_config()["environments"]
    environments["staging"]["traffic_steps"] = [50, 10, 100]
    project_config(environments=environments)
    with pytest.raises(ConfigError, match=r"traffic_steps \[50, 10, 100\] must increase"):
        load_config()


def test_a_healthy_step_passes_every_check() -> None:
    checks = judge(Stats(100, 1, 12.0), Stats(900, 5, 10.0), LIMITS)
    assert [c.passed for c in checks] == [True, True, True]


def test_one_failure_in_five_fails_the_error_rate() -> None:
    (requests, errors, latency) = judge(Stats(100, 20, 10.0), Stats(900, 0, 10.0), LIMITS)
    assert requests.passed and latency.passed
    assert not errors.passed
    assert errors.line() == "FAIL: 5xx error rate 20.00% (20/100) (limit <= 2.00%, baseline 0.00%)"


def test_a_baseline_that_fails_as_much_does_not_blame_the_new_revision() -> None:
    _, errors, _ = judge(Stats(100, 10, 10.0), Stats(900, 90, 10.0), LIMITS)
    assert errors.passed


def test_too_few_requests_cannot_pass() -> None:
    requests, *_ = judge(Stats(49, 0, 10.0), Stats(900, 0, 10.0), LIMITS)
    assert not requests.passed and requests.limit == ">= 50"


def test_latency_limit_is_a_ratio_with_a_slack_for_small_figures() -> None:
    # 4 ms against 3 ms is noise: the slack (50 ms) covers it; 300 ms against 100 is not.
    assert judge(Stats(100, 0, 40.0), Stats(900, 0, 3.0), LIMITS)[2].passed
    slow = judge(Stats(100, 0, 300.0), Stats(900, 0, 100.0), LIMITS)[2]
    assert not slow.passed and slow.limit == "<= 150 ms, baseline p95 100 ms"


def test_without_a_baseline_latency_has_an_absolute_limit() -> None:
    latency = judge(Stats(100, 0, 1200.0), Stats(10, 0, 5.0), LIMITS)[2]
    assert not latency.passed
    assert latency.limit == "<= 1000 ms, no baseline to compare with"


def test_thresholds_read_from_the_environment_and_refuse_nonsense() -> None:
    limits = Thresholds.from_env({"MAX_ERROR_RATE": "0.05", "MIN_REQUESTS": "", "X": "1"})
    assert limits.max_error_rate == 0.05 and limits.min_requests == 50
    with pytest.raises(RolloutConfigError, match="min-requests must be a whole number"):
        Thresholds.from_env({"MIN_REQUESTS": "many"})
    with pytest.raises(RolloutConfigError, match="max-error-rate must be a finite number >= 0"):
        Thresholds.from_env({"MAX_ERROR_RATE": "-1"})


@pytest.mark.parametrize("text", ["nan", "inf", "-1", "soon"])
def test_rollout_times_and_rates_are_finite_numbers(text: str) -> None:
    # float() takes "nan" and "inf": an observation of nan or inf seconds must not start.
    for name in ("OBSERVE_SECONDS", "METRICS_DELAY", "PROBE_RATE"):
        label = name.lower().replace("_", "-")
        with pytest.raises(RolloutConfigError, match=f"{label} must be a"):
            Rollout.from_env({"SERVICE": "svc", name: text})


def test_the_reference_sample_compares_every_probability() -> None:
    assert compare_sample([0.1, 0.2], [0.1, 0.2], 1e-6).passed
    off = compare_sample([0.1, 0.25], [0.1, 0.2], 1e-6)
    assert not off.passed and off.measured == "1 of 2 probabilities differ, largest gap 0.05"
    assert not compare_sample([0.1], [0.1, 0.2], 1e-6).passed


def test_previous_traffic_parses_and_refuses_garbage() -> None:
    assert parse_previous("-") == {}
    assert parse_previous("svc-00001-abc=90,svc-00002-def=10") == {
        "svc-00001-abc": 90,
        "svc-00002-def": 10,
    }
    with pytest.raises(RolloutConfigError):
        parse_previous("svc-00001-abc")


def test_distribution_percentiles_follow_the_bucket_options() -> None:
    # Monitoring API v3: N finite buckets have N + 1 boundaries; bucket 0 is the underflow.
    assert bucket_boundaries(
        {"exponentialBuckets": {"numFiniteBuckets": 3, "growthFactor": 2, "scale": 1}}
    ) == [1, 2, 4, 8]
    assert bucket_boundaries({"linearBuckets": {"numFiniteBuckets": 2, "width": 5}}) == [0, 5, 10]
    assert bucket_boundaries({"explicitBuckets": {"bounds": [1, 10]}}) == [1, 10]
    # Bucket i is bounded above by boundary i. 94 values in (2, 4] and 6 in (4, 8]: the 95th
    # is in the bucket bounded by 8; past the last boundary (overflow) it reports that one.
    assert distribution_percentile([1, 2, 4, 8], [0, 0, 94, 6], 0.95) == 8
    assert distribution_percentile([1, 2, 4, 8], [0, 0, 96], 0.95) == 4
    assert distribution_percentile([1, 2, 4, 8], [0, 0, 0, 0, 0, 9], 0.95) == 8
    assert distribution_percentile([1, 2], [], 0.95) is None


# ---- Cloud Monitoring, served by the stand-in -------------------------------------------------
@pytest.fixture
def monitoring() -> Iterator[tuple[RequestMetrics, str]]:
    """The stand-in's Monitoring on a loopback port: (its store, base URL)."""
    store = RequestMetrics()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            try:
                code, body = (
                    200,
                    store.handle(path, parse_qs(query), self.headers.get("Authorization") or ""),
                )
            except ApiError as err:
                code, body = err.code, {"error": {"code": err.code, "message": str(err)}}
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield store, f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def _reader(url: str, token: str = "t") -> MonitoringMetrics:
    http_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return MonitoringMetrics("proj", "svc", "europe-west1", token, http_opener, url)


def test_monitoring_counts_5xx_and_latency_per_revision(monitoring) -> None:
    store, url = monitoring
    start = datetime.now(UTC)
    at = start + timedelta(seconds=1)
    for n in range(100):
        status = 500 if n % 5 == 4 else 200
        store.record(Served(at, "proj", "svc", "europe-west1", "svc-new", status, 3.0 + n % 2))
        store.record(Served(at, "proj", "svc", "europe-west1", "svc-old", 200, 120.0))
    store.record(Served(at, "proj", "other", "europe-west1", "svc-new", 500, 1.0))
    end = start + timedelta(seconds=2)
    new = _reader(url).stats(["svc-new"], start, end)
    assert (new.requests, new.errors) == (100, 20)
    assert new.p95_ms is not None and 3 <= new.p95_ms < 8
    old = _reader(url).stats(["svc-old"], start, end)
    assert (old.requests, old.errors) == (100, 0) and 120 <= old.p95_ms < 170
    # Outside the window: nothing.
    assert _reader(url).stats(["svc-new"], end, end + timedelta(seconds=5)).requests == 0


def test_monitoring_refusals_name_the_role(monitoring) -> None:
    _, url = monitoring
    now = datetime.now(UTC)
    with pytest.raises(MetricsError, match=r"\(401\).*roles/monitoring.viewer"):
        _reader(url, token="").stats(["svc-new"], now, now)


def test_the_standin_holds_the_alignment_period_to_60_seconds() -> None:
    store = RequestMetrics()
    query = {
        "filter": ['metric.type = "run.googleapis.com/request_count"'],
        "interval.endTime": ["2026-12-03T00:00:00Z"],
        "aggregation.perSeriesAligner": ["ALIGN_DELTA"],
        "aggregation.alignmentPeriod": ["5s"],
    }
    with pytest.raises(ApiError, match="at least 60 seconds"):
        store.time_series("proj", query, "Bearer t")


# ---- the probe -----------------------------------------------------------------------------
def test_the_probe_attributes_answers_by_revision_and_probes_on_for_a_small_share() -> None:
    answered = {"n": 0}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            answered["n"] += 1
            revision = "svc-new" if answered["n"] % 10 == 0 else "svc-old"
            status = 500 if revision == "svc-new" and answered["n"] % 20 == 0 else 200
            self.send_response(status)
            self.send_header("Purchase-Predict-Revision", revision)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *_: Any) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        http_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        probe = Probe(f"http://127.0.0.1:{server.server_port}", b"{}", "", http_opener, 400)
        # 0.2 s at 400/s is ~80 probes, 8 on the new revision: it probes on until 20.
        probe.run(0.2, "svc-new", 20)
    finally:
        server.shutdown()
    new = probe.tallies["svc-new"].stats()
    assert new.requests >= 20 and new.errors == new.requests // 2
    assert probe.tallies["svc-old"].requests >= 9 * 19
    assert probe.sent == new.requests + probe.tallies["svc-old"].requests


# ---- the command line, with a recording gcloud ---------------------------------------------
def _command_env(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """rollout.py's environment with a gcloud that records its calls; (env, the record)."""
    record = tmp_path / "gcloud.log"
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\necho "$*" >> "{record}"\necho token\n')
    fake.chmod(0o755)
    root = ROOT
    env = {
        "PATH": f"{fake.parent}:{os.environ['PATH']}",
        "PYTHONPATH": f"{root / 'contract' / 'src'}:{root / 'delivery' / 'src'}",
        "SERVICE": "svc",
        "REGION": "europe-west1",
        "TAG": "sha-1234567",
        "REVISION": "svc-00002-new",
        "SERVICE_URL": "http://svc.invalid",
        "FIRST_DEPLOY": "false",
        "PREVIOUS_TRAFFIC": "svc-00001-old=100",
        "TRAFFIC": "tag",
        "TRAFFIC_STEPS": "10,100",
        "OBSERVE_SECONDS": "30",
        "PROBE_RATE": "0",
    }
    return env, record


def test_a_cancelled_rollout_returns_the_traffic_before_it_goes(tmp_path) -> None:
    # GitHub cancels a job with SIGINT, then SIGTERM: the step at 10 % must not stay behind.
    env, record = _command_env(tmp_path)
    root = ROOT
    process = subprocess.Popen(
        [sys.executable, str(root / "scripts" / "rollout.py"), "rollout"],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while "observing" not in (line := process.stdout.readline()) and time.monotonic() < deadline:
        assert line, "rollout.py ended before its first step"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) != 0
    calls = record.read_text().splitlines()
    assert calls[0].endswith("update-traffic svc --region europe-west1 --to-tags sha-1234567=10")
    assert calls[-1].endswith(
        "update-traffic svc --region europe-west1 --to-revisions svc-00001-old=100"
    )
    assert "rolled back: traffic is svc-00001-old=100 again" in process.stdout.read()


def test_metrics_it_cannot_read_fail_the_step_and_return_the_traffic(tmp_path) -> None:
    env, record = _command_env(tmp_path)
    env.update(
        OBSERVE_SECONDS="0", CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING="http://127.0.0.1:9/"
    )
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rollout.py"), "rollout"],
        env={**env, "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot read request_count from Cloud Monitoring" in done.stdout
    assert "rollout-result=rolled-back at 10%" in done.stdout
    assert record.read_text().splitlines()[-1].endswith("--to-revisions svc-00001-old=100")
    assert "Stopped at 10%: cannot read request_count" in (tmp_path / "summary.md").read_text()
