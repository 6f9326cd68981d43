"""Opt-in fault injection (``INJECT_FAULTS``), for tests only: a revision that misbehaves on
purpose, so that a deployment pipeline's canary analysis can be tested offline.

``INJECT_FAULTS`` is comma-separated ``key=value`` items; empty (the default) is off:

- ``error-rate=<number in [0, 1]>``: that share of ``POST /predict`` requests is answered 500.
  Deterministic: the n-th request of the process (n = 1, 2, ...) fails exactly when
  ``floor(n * rate) > floor((n - 1) * rate)``; with 0.2 the 1st succeeds and every 5th fails.
- ``latency-ms=<integer >= 0>``: every ``POST /predict`` request waits that long first.
- ``skew=<number in [-1, 1]>``: added to every predicted probability (clipped to [0, 1]); the
  ``purchased`` label follows from the decision threshold as usual.

Only ``POST /predict`` is affected. When no fault has an effect the app holds no injector and
the route pays one ``None`` check.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, fields
from fractions import Fraction

import numpy as np
from starlette.responses import JSONResponse, Response

logger = logging.getLogger(__name__)

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"\d+")
# key -> (field of Faults, its syntax, lowest, highest or None, what the value must be)
_ITEMS = {
    "error-rate": ("error_rate", _NUMBER, 0.0, 1.0, "a number in [0, 1]"),
    "latency-ms": ("latency_ms", _INTEGER, 0, None, "an integer >= 0"),
    "skew": ("skew", _NUMBER, -1.0, 1.0, "a number in [-1, 1]"),
}
_KEYS = {field: key for key, (field, *_) in _ITEMS.items()}


@dataclass(frozen=True)
class Faults:
    """The faults ``INJECT_FAULTS`` asks for; all zero (no effect) by default."""

    error_rate: float = 0.0
    latency_ms: int = 0
    skew: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Faults:
        """The faults of ``key=value,key=value``; ValueError naming the first bad item."""
        values: dict[str, float | int] = {}
        for item in text.split(",") if text.strip() else []:
            field, value = _parse_item(item.strip())
            if field in values:
                raise ValueError(f"INJECT_FAULTS item {item.strip()!r}: {_KEYS[field]} given twice")
            values[field] = value
        return cls(**values)

    @property
    def on(self) -> bool:
        """Whether any fault has an effect."""
        return self != Faults()

    def __str__(self) -> str:
        """The faults with an effect, as ``key=value`` items separated by spaces."""
        items = [(_KEYS[f.name], getattr(self, f.name)) for f in fields(self)]
        return " ".join(f"{key}={value}" for key, value in items if value)


def _parse_item(item: str) -> tuple[str, float | int]:
    """The Faults field and value of one ``key=value`` item."""
    key, equals, text = (part.strip() for part in item.partition("="))
    if not equals or not key or not text:
        raise ValueError(f"INJECT_FAULTS item {item!r} is malformed: expected key=value")
    if key not in _ITEMS:
        known = ", ".join(_ITEMS)
        raise ValueError(f"INJECT_FAULTS item {item!r}: unknown key {key!r} (known: {known})")
    field, syntax, lowest, highest, expected = _ITEMS[key]
    value = (int if syntax is _INTEGER else float)(text) if syntax.fullmatch(text) else None
    if value is None or value < lowest or (highest is not None and value > highest):
        raise ValueError(f"INJECT_FAULTS item {item!r}: {key} must be {expected}")
    return field, value


class FaultInjector:
    """The faults of one running app, with its count of ``POST /predict`` requests."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        # The rate as an exact fraction of its decimal: 0.29 * 100 is 28.999... in floats.
        rate = Fraction(repr(faults.error_rate))
        self._numerator, self._denominator = rate.numerator, rate.denominator
        self._requests = 0
        self._lock = threading.Lock()

    def _fails_next(self) -> bool:
        """Count one request; whether it is one of the ``error-rate`` share that fails."""
        with self._lock:
            self._requests += 1
            n = self._requests
        p, q = self._numerator, self._denominator
        return n * p // q > (n - 1) * p // q

    async def before_predict(self, headers: dict[str, str]) -> Response | None:
        """Wait ``latency-ms`` (without blocking the event loop); the injected 500, or None
        to go on with the prediction."""
        fails = self._fails_next()
        if self.faults.latency_ms:
            await asyncio.sleep(self.faults.latency_ms / 1000)
        if not fails:
            return None
        detail = f"injected fault: error-rate={self.faults.error_rate}"
        return JSONResponse({"detail": detail}, status_code=500, headers=headers)

    def skewed(self, probabilities: np.ndarray) -> np.ndarray:
        """``probabilities`` plus ``skew``, clipped to [0, 1]."""
        if not self.faults.skew:
            return probabilities
        return np.clip(probabilities + self.faults.skew, 0.0, 1.0)


def start_faults(text: str) -> FaultInjector | None:
    """The injector of ``INJECT_FAULTS``, announced by a WARNING; None when it asks for none."""
    faults = Faults.parse(text)
    if not faults.on:
        return None
    logger.warning(
        "fault injection is ON: %s",
        faults,
        # Prefixed: a request line's latency_ms is another thing.
        extra={
            "fields": {
                "inject_faults": str(faults),
                **{f"fault_{f.name}": getattr(faults, f.name) for f in fields(faults)},
            }
        },
    )
    return FaultInjector(faults)
