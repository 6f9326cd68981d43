"""Where a rollout step's figures come from: Cloud Monitoring's per-revision request metrics, or
the probe traffic the rollout sends itself (attributed by the API's ``Purchase-Predict-Revision``
response header). Both give :class:`~purchase_delivery.rollout_analysis.Stats`; standard
library only.

Cloud Monitoring (``run.googleapis.com/request_count`` by ``response_code_class``,
``run.googleapis.com/request_latencies``) is read with ``projects.timeSeries.list``
(cloud.google.com/monitoring/api/ref_v3/rest/v3/projects.timeSeries/list); the base URL honours
gcloud's ``CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING`` and its HTTP proxy settings, which is how
the offline suite points it at the Cloud Run stand-in.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol
from urllib.parse import urlencode

from purchase_delivery.rollout_analysis import (
    RolloutConfigError,
    Stats,
    bucket_boundaries,
    distribution_percentile,
)

MONITORING = "https://monitoring.googleapis.com/"
REVISION_HEADER = "Purchase-Predict-Revision"
# "The value must be at least 60 seconds" (Aggregation.alignmentPeriod, Monitoring API v3).
MIN_ALIGNMENT_S = 60


class MetricsError(RuntimeError):
    """The metrics could not be read; the message says from where and why."""


class RevisionMetrics(Protocol):
    """What the analysis reads: one revision set's figures in a time window."""

    def stats(self, revisions: Iterable[str], start: datetime, end: datetime) -> Stats: ...


def opener(env: Mapping[str, str]) -> urllib.request.OpenerDirector:
    """An HTTP opener going through gcloud's proxy when gcloud has one (CLOUDSDK_PROXY_*)."""
    if env.get("CLOUDSDK_PROXY_TYPE") == "http" and env.get("CLOUDSDK_PROXY_ADDRESS"):
        proxy = f"http://{env['CLOUDSDK_PROXY_ADDRESS']}:{env.get('CLOUDSDK_PROXY_PORT') or 80}"
        return urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": proxy, "https": proxy})
        )
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class MonitoringMetrics:
    """Per-revision figures from Cloud Monitoring (needs ``monitoring.timeSeries.list``, which
    ``roles/monitoring.viewer`` grants)."""

    project: str
    service: str
    region: str
    access_token: str
    http: urllib.request.OpenerDirector
    endpoint: str = MONITORING

    def stats(self, revisions: Iterable[str], start: datetime, end: datetime) -> Stats:
        names = sorted(set(revisions))
        if not names:
            return Stats()
        period = max(MIN_ALIGNMENT_S, math.ceil((end - start).total_seconds()))
        aligned = {
            "interval.startTime": rfc3339(start),
            "interval.endTime": rfc3339(end),
            "aggregation.alignmentPeriod": f"{period}s",
            "aggregation.perSeriesAligner": "ALIGN_DELTA",
        }
        requests = errors = 0
        for series in self._series("request_count", names, aligned):
            count = sum(int(p["value"].get("int64Value", 0)) for p in series.get("points", []))
            requests += count
            if series.get("metric", {}).get("labels", {}).get("response_code_class") == "5xx":
                errors += count
        boundaries: list[float] = []
        counts: list[int] = []
        for series in self._series("request_latencies", names, aligned):
            for point in series.get("points", []):
                value = point["value"].get("distributionValue") or {}
                if not int(value.get("count", 0)):
                    continue
                boundaries = boundaries or bucket_boundaries(value["bucketOptions"])
                for i, c in enumerate(value.get("bucketCounts", [])):
                    counts.extend([0] * (i + 1 - len(counts)))
                    counts[i] += int(c)
        return Stats(requests, errors, distribution_percentile(boundaries, counts, 0.95))

    def _series(self, metric: str, revisions: list[str], aligned: dict[str, str]) -> list[dict]:
        chosen = " OR ".join(f'resource.labels.revision_name = "{r}"' for r in revisions)
        query = {
            "filter": f'metric.type = "run.googleapis.com/{metric}"'
            ' AND resource.type = "cloud_run_revision"'
            f' AND resource.labels.service_name = "{self.service}"'
            f' AND resource.labels.location = "{self.region}" AND ({chosen})',
            **aligned,
        }
        series: list[dict] = []
        while True:
            url = f"{self.endpoint}v3/projects/{self.project}/timeSeries?{urlencode(query)}"
            page = self._get(url, metric)
            series.extend(page.get("timeSeries", []))
            if not page.get("nextPageToken"):
                return series
            query["pageToken"] = page["nextPageToken"]

    def _get(self, url: str, metric: str) -> dict:
        request = urllib.request.Request(
            url, headers={"Authorization": f"Bearer {self.access_token}"}
        )
        try:
            with self.http.open(request, timeout=30) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as err:
            detail = err.read(300).decode(errors="replace")
            raise MetricsError(
                f"Cloud Monitoring refused the {metric} query ({err.code}): {detail}; the "
                "deployer needs roles/monitoring.viewer on the project (docs/gcp-setup.md)"
            ) from None
        except (OSError, ValueError) as err:
            raise MetricsError(f"cannot read {metric} from Cloud Monitoring: {err}") from None


@dataclass
class Tally:
    """Probe answers of one revision."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def stats(self) -> Stats:
        ordered = sorted(self.latencies_ms)
        p95 = ordered[math.ceil(0.95 * len(ordered)) - 1] if ordered else None
        return Stats(self.requests, self.errors, p95)


@dataclass
class Probe:
    """``POST <url>/predict`` at ``rate`` requests per second from a few threads, tallied by
    the revision that answered. A front-end refusal (401/403: an expired or missing ID token)
    stops it: it is the probe failing, not the revision."""

    url: str
    body: bytes
    token: str
    http: urllib.request.OpenerDirector
    rate: float
    workers: int = 4
    tallies: dict[str, Tally] = field(default_factory=dict)
    refused: str = ""

    @property
    def sent(self) -> int:
        """Probes answered (by any revision, or by none that said so)."""
        return sum(t.requests for t in self.tallies.values())

    def run(self, seconds: float, revision: str = "", need: int = 0) -> None:
        """Probe for ``seconds``, and on (up to three times as long) until ``revision`` has
        answered ``need`` probes: a small traffic share is random, and a step with too few
        requests cannot be judged. Results accumulate in ``tallies``."""
        lock = threading.Lock()
        start = time.monotonic()
        stop, hard_stop = start + seconds, start + 3 * seconds
        scheduled = 0  # probes given a slot so far: the n-th is due at start + n / rate

        def done(due: float) -> bool:
            if due < stop:
                return False
            answered = self.tallies.get(revision, Tally()).requests
            return due >= hard_stop or answered >= need

        def work() -> None:
            nonlocal scheduled
            while not self.refused:
                with lock:
                    due = start + scheduled / self.rate
                    scheduled += 1
                    if done(due):
                        return
                time.sleep(max(0.0, due - time.monotonic()))
                self._one(lock)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(3 * seconds + 60)

    def _one(self, lock: threading.Lock) -> None:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            f"{self.url}/predict", data=self.body, headers=headers, method="POST"
        )
        began = time.monotonic()
        try:
            with self.http.open(request, timeout=30) as answer:
                answer.read()
                status, revision = answer.status, answer.headers.get(REVISION_HEADER, "")
        except urllib.error.HTTPError as err:
            err.read()
            status, revision = err.code, err.headers.get(REVISION_HEADER, "")
        except OSError:
            status, revision = 599, ""
        elapsed = (time.monotonic() - began) * 1000
        with lock:
            if status in (401, 403) and not revision:
                self.refused = f"the service refused the probe's token ({status})"
                return
            tally = self.tallies.setdefault(revision or "unattributed", Tally())
            tally.requests += 1
            tally.errors += status >= 500
            tally.latencies_ms.append(elapsed)


@dataclass
class ProbeMetrics:
    """The probe's own tallies as the analysis's figures (for a deployer without Monitoring)."""

    probe: Probe

    def stats(self, revisions: Iterable[str], start: datetime, end: datetime) -> Stats:
        merged = Tally()
        for name in set(revisions):
            tally = self.probe.tallies.get(name, Tally())
            merged.requests += tally.requests
            merged.errors += tally.errors
            merged.latencies_ms += tally.latencies_ms
        return merged.stats()


def metrics_kind(text: str) -> str:
    kind = (text or "monitoring").strip()
    if kind not in ("monitoring", "probes"):
        raise RolloutConfigError(f"metrics must be monitoring or probes, got {text!r}")
    return kind
