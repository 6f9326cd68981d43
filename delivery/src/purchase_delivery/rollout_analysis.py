"""The judgement of a rollout step, and of the reference sample: pure functions, no I/O.

A step is judged on what the new revision served in the step's window, against the revision(s)
it replaces in the same window (the *baseline*) when they served enough requests to compare
with, else against absolute limits. docs/workflows.md ("Progressive rollout") states the rules;
the tests in tests/scripts/test_rollout.py hold this module to them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from purchase_contract.config import rollout_steps_problem


class RolloutConfigError(ValueError):
    """A rollout setting that cannot be used; the message names it."""


def setting(env: Mapping[str, str], name: str, kind: type = float) -> float | None:
    """The action input ``name`` (``OBSERVE_SECONDS`` is ``observe-seconds``) as a finite
    number >= 0 of type ``kind``; None when empty or absent; RolloutConfigError otherwise."""
    text = (env.get(name) or "").strip()
    if not text:
        return None
    label = name.lower().replace("_", "-")
    try:
        value = kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise RolloutConfigError(f"{label} must be {what}, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise RolloutConfigError(f"{label} must be a finite number >= 0, got {text!r}")
    return value


@dataclass(frozen=True)
class Thresholds:
    """What a step must hold to pass (the defaults are the action's input defaults)."""

    max_error_rate: float = 0.02
    max_latency_ratio: float = 1.5
    latency_slack_ms: float = 50.0
    max_latency_ms: float = 1000.0
    min_requests: int = 50
    sample_tolerance: float = 1e-6

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Thresholds:
        """From MAX_ERROR_RATE, MAX_LATENCY_RATIO, ... (empty or absent: the default)."""
        values = {}
        for name, kind in (
            ("max_error_rate", float),
            ("max_latency_ratio", float),
            ("latency_slack_ms", float),
            ("max_latency_ms", float),
            ("min_requests", int),
            ("sample_tolerance", float),
        ):
            value = setting(env, name.upper(), kind)
            if value is not None:
                values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class Stats:
    """What one revision served in a window: requests, 5xx answers, 95th latency percentile."""

    requests: int = 0
    errors: int = 0
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def describe(self) -> str:
        latency = "no latency data" if self.p95_ms is None else f"p95 {self.p95_ms:.0f} ms"
        return f"{self.requests} requests, {self.errors} 5xx ({self.error_rate:.1%}), {latency}"


@dataclass(frozen=True)
class Check:
    """One measured value against its limit."""

    name: str
    measured: str
    limit: str
    passed: bool

    def line(self) -> str:
        mark = "pass" if self.passed else "FAIL"
        return f"{mark}: {self.name} {self.measured} (limit {self.limit})"


def parse_steps(text: str) -> list[int]:
    """Traffic percentages of a rollout, e.g. ``10,50,100``: increasing, 1-100, ending at 100."""
    words = text.replace(",", " ").split()
    try:
        steps = [int(w) for w in words]
    except ValueError:
        raise RolloutConfigError(
            f"traffic-steps must be whole percentages like '10,50,100', got {text!r}"
        ) from None
    if problem := rollout_steps_problem(steps):
        raise RolloutConfigError(f"traffic-steps {problem}, got {text!r}")
    return steps


def judge(new: Stats, baseline: Stats, limits: Thresholds) -> list[Check]:
    """The checks of one step; the step passes when all of them pass.

    Requests: the new revision served at least ``min_requests`` (fewer cannot be judged, and a
    revision nobody reached is not proven). Error rate: at most ``max_error_rate``, or the
    baseline's rate when that is higher (a rollout is not blamed for what already fails).
    Latency: p95 at most ``max(baseline p95 x max_latency_ratio, baseline p95 + latency_slack_ms)``
    when the baseline served ``min_requests`` itself, else at most ``max_latency_ms``.
    """
    checks = [
        Check(
            "requests served by the new revision",
            str(new.requests),
            f">= {limits.min_requests}",
            new.requests >= limits.min_requests,
        )
    ]
    comparable = baseline.requests >= limits.min_requests
    error_limit = max(limits.max_error_rate, baseline.error_rate if comparable else 0.0)
    checks.append(
        Check(
            "5xx error rate",
            f"{new.error_rate:.2%} ({new.errors}/{new.requests})",
            f"<= {error_limit:.2%}"
            + (f", baseline {baseline.error_rate:.2%}" if comparable else ""),
            new.requests > 0 and new.error_rate <= error_limit,
        )
    )
    if comparable and baseline.p95_ms is not None:
        base = baseline.p95_ms
        latency_limit = max(base * limits.max_latency_ratio, base + limits.latency_slack_ms)
        against = f", baseline p95 {base:.0f} ms"
    else:
        latency_limit, against = limits.max_latency_ms, ", no baseline to compare with"
    measured = "none" if new.p95_ms is None else f"{new.p95_ms:.0f} ms"
    checks.append(
        Check(
            "p95 latency",
            measured,
            f"<= {latency_limit:.0f} ms{against}",
            new.p95_ms is not None and new.p95_ms <= latency_limit,
        )
    )
    return checks


def compare_sample(answered: Sequence[float], expected: Sequence[float], tolerance: float) -> Check:
    """The revision's probabilities on the reference sample against the training-time ones."""
    if len(answered) != len(expected):
        return Check(
            "reference sample", f"{len(answered)} answers", f"{len(expected)} sessions", False
        )
    gaps = [abs(a - e) for a, e in zip(answered, expected, strict=True)]
    worst = max(gaps, default=0.0)
    off = sum(g > tolerance for g in gaps)
    return Check(
        "reference sample",
        f"{off} of {len(gaps)} probabilities differ, largest gap {worst:.3g}",
        f"every gap <= {tolerance:g}",
        off == 0,
    )


def distribution_percentile(
    boundaries: Sequence[float], counts: Sequence[int], quantile: float
) -> float | None:
    """The ``quantile`` of a Cloud Monitoring Distribution, as the upper bound of the bucket
    holding it. Bucket ``i``'s upper bound is ``boundaries[i]``; the last bucket (overflow) has
    none and reports the last boundary. ``counts`` may omit trailing empty buckets."""
    total = sum(counts)
    if not total or not boundaries:
        return None
    rank = math.ceil(quantile * total)
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return float(boundaries[min(index, len(boundaries) - 1)])
    return float(boundaries[-1])


def bucket_boundaries(options: Mapping[str, Mapping[str, float]]) -> list[float]:
    """The boundaries of a Distribution's ``bucketOptions``, linear, exponential or explicit as
    the Monitoring API v3 reference defines them (N finite buckets: N + 1 boundaries)."""
    if "explicitBuckets" in options:
        return [float(b) for b in options["explicitBuckets"]["bounds"]]
    if "exponentialBuckets" in options:
        spec = options["exponentialBuckets"]
        scale, growth = float(spec["scale"]), float(spec["growthFactor"])
        return [scale * growth**i for i in range(int(spec["numFiniteBuckets"]) + 1)]
    if "linearBuckets" in options:
        spec = options["linearBuckets"]
        offset, width = float(spec.get("offset", 0)), float(spec["width"])
        return [offset + width * i for i in range(int(spec["numFiniteBuckets"]) + 1)]
    raise RolloutConfigError(f"unknown bucketOptions {sorted(options)}")
