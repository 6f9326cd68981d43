"""The Cloud Run stand-in's Cloud Monitoring: every data-plane request a revision answers is
recorded, and ``projects.timeSeries.list`` serves them as Cloud Run's own metrics
(``run.googleapis.com/request_count`` with its ``response_code_class`` label,
``run.googleapis.com/request_latencies`` as a Distribution), in the subset of the API the
rollout reads: a filter on metric type, service, location and revisions, an interval, and
``ALIGN_DELTA`` with an optional ``REDUCE_SUM`` by ``metric.labels.response_code_class``.

Held to the real API where it matters: a request without a bearer token is 401, an alignment
period under 60 s or a missing interval is 400, int64 values are JSON strings, bucket counts
follow the Distribution's exponential bucket options (underflow first, overflow last).
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from purchase_rig.standin_model import BadRequestError, NotFoundError

MONITORING_HOST = "monitoring.local"
TIME_SERIES = re.compile(r"^/v3/projects/(?P<project>[^/]+)/timeSeries$")
METRICS = ("run.googleapis.com/request_count", "run.googleapis.com/request_latencies")
# Exponential buckets from 1 ms growing by 1.4: enough resolution for p95 comparisons.
BUCKETS = {"exponentialBuckets": {"numFiniteBuckets": 60, "growthFactor": 1.4, "scale": 1.0}}


@dataclass(frozen=True)
class Served:
    """One request a revision answered."""

    at: datetime
    project: str
    service: str
    region: str
    revision: str
    status: int
    latency_ms: float


class UnauthenticatedError(BadRequestError):
    code, status = 401, "UNAUTHENTICATED"


def _parse_time(text: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequestError(f"{name} is not an RFC 3339 timestamp: {text!r}") from None


def _bucket(latency_ms: float) -> int:
    """Index of the exponential bucket holding ``latency_ms`` (0: underflow)."""
    spec = BUCKETS["exponentialBuckets"]
    if latency_ms < spec["scale"]:
        return 0
    index = math.floor(math.log(latency_ms / spec["scale"], spec["growthFactor"])) + 1
    return min(index, spec["numFiniteBuckets"] + 1)


class RequestMetrics:
    """What the revisions served, and the timeSeries view of it."""

    def __init__(self) -> None:
        self.served: list[Served] = []
        self.lock = threading.Lock()

    def record(self, served: Served) -> None:
        with self.lock:
            self.served.append(served)

    def time_series(
        self, project: str, query: dict[str, list[str]], authorization: str
    ) -> dict[str, Any]:
        """The ``projects.timeSeries.list`` answer for ``query`` (parse_qs form)."""
        if not authorization.startswith("Bearer ") or not authorization[7:].strip():
            raise UnauthenticatedError("Request is missing required authentication credential.")
        one = {k: v[0] for k, v in query.items()}
        text = one.get("filter", "")
        metric = re.search(r'metric\.type\s*=\s*"([^"]+)"', text)
        if not metric or metric.group(1) not in METRICS:
            raise BadRequestError(f"the stand-in serves only {METRICS}, filter was {text!r}")
        labels = dict(
            re.findall(r'resource\.labels\.(service_name|location)\s*=\s*"([^"]+)"', text)
        )
        revisions = set(re.findall(r'resource\.labels\.revision_name\s*=\s*"([^"]+)"', text))
        if "interval.endTime" not in one:
            raise BadRequestError("Field interval.endTime had an invalid value: required")
        start = _parse_time(one.get("interval.startTime", one["interval.endTime"]), "startTime")
        end = _parse_time(one["interval.endTime"], "endTime")
        period = one.get("aggregation.alignmentPeriod", "")
        if one.get("aggregation.perSeriesAligner", "ALIGN_NONE") != "ALIGN_DELTA":
            raise BadRequestError("the stand-in supports perSeriesAligner ALIGN_DELTA only")
        if not period.endswith("s") or float(period[:-1] or 0) < 60:
            raise BadRequestError(
                "The alignment period must be at least 60 seconds, got " + repr(period)
            )
        with self.lock:
            rows = [
                s
                for s in self.served
                if s.project == project
                and start < s.at <= end
                and s.service == labels.get("service_name", s.service)
                and s.region == labels.get("location", s.region)
                and (not revisions or s.revision in revisions)
            ]
        interval = {
            "startTime": one.get("interval.startTime", ""),
            "endTime": one["interval.endTime"],
        }
        if metric.group(1).endswith("request_count"):
            summed = one.get("aggregation.crossSeriesReducer") == "REDUCE_SUM"
            return {"timeSeries": _counts(rows, interval, summed)}
        return {"timeSeries": _latencies(rows, interval)}

    def handle(self, path: str, query: dict[str, list[str]], authorization: str) -> dict:
        match = TIME_SERIES.match(path)
        if not match:
            raise NotFoundError(f"the stand-in's Cloud Monitoring does not serve {path}")
        return self.time_series(match.group("project"), query, authorization)


def _resource(row: Served) -> dict[str, Any]:
    return {
        "type": "cloud_run_revision",
        "labels": {
            "project_id": row.project,
            "service_name": row.service,
            "revision_name": row.revision,
            "location": row.region,
            "configuration_name": row.service,
        },
    }


def _counts(rows: list[Served], interval: dict[str, str], summed: bool) -> list[dict]:
    groups: dict[tuple[str, str], list[Served]] = {}
    for row in rows:
        klass = f"{row.status // 100}xx"
        groups.setdefault(("" if summed else row.revision, klass), []).append(row)
    series = []
    for (revision, klass), members in sorted(groups.items()):
        entry: dict[str, Any] = {
            "metric": {"type": METRICS[0], "labels": {"response_code_class": klass}},
            "metricKind": "DELTA",
            "valueType": "INT64",
            "points": [{"interval": interval, "value": {"int64Value": str(len(members))}}],
        }
        if revision:
            entry["resource"] = _resource(members[0])
        series.append(entry)
    return series


def _latencies(rows: list[Served], interval: dict[str, str]) -> list[dict]:
    by_revision: dict[str, list[Served]] = {}
    for row in rows:
        by_revision.setdefault(row.revision, []).append(row)
    series = []
    for _, members in sorted(by_revision.items()):
        counts = [0] * (BUCKETS["exponentialBuckets"]["numFiniteBuckets"] + 2)
        for row in members:
            counts[_bucket(row.latency_ms)] += 1
        while counts and counts[-1] == 0:
            counts.pop()  # the API omits trailing empty buckets
        value = {
            "count": str(len(members)),
            "mean": sum(r.latency_ms for r in members) / len(members),
            "bucketOptions": BUCKETS,
            "bucketCounts": [str(c) for c in counts],
        }
        series.append(
            {
                "metric": {"type": METRICS[1], "labels": {}},
                "resource": _resource(members[0]),
                "metricKind": "DELTA",
                "valueType": "DISTRIBUTION",
                "points": [{"interval": interval, "value": {"distributionValue": value}}],
            }
        )
    return series
