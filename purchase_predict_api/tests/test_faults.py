"""INJECT_FAULTS: its grammar, and what each fault does to POST /predict (and to nothing else)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.config import Settings, get_settings
from app.core.faults import Faults
from app.main import create_app
from app.models import SESSION_EXAMPLE


@pytest.fixture(autouse=True)
def _no_faults_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INJECT_FAULTS", raising=False)


@pytest.fixture
def faulty(baked_settings: Settings) -> Iterator[Callable[[str], TestClient]]:
    """``faulty("error-rate=0.2")``: a started client of an app with those faults."""
    with ExitStack() as started:

        def start(text: str) -> TestClient:
            settings = baked_settings.model_copy(update={"inject_faults": text})
            return started.enter_context(TestClient(create_app(settings)))

        yield start


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", Faults()),
        ("  ", Faults()),
        ("error-rate=0.2", Faults(error_rate=0.2)),
        ("latency-ms=250", Faults(latency_ms=250)),
        ("skew=-0.5", Faults(skew=-0.5)),
        (
            " error-rate = 1 , latency-ms=0,skew=+.25",
            Faults(error_rate=1.0, latency_ms=0, skew=0.25),
        ),
        ("error-rate=0,skew=1e-1", Faults(skew=0.1)),
    ],
)
def test_good_values_parse(text: str, expected: Faults) -> None:
    assert Faults.parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("error-rate", "item 'error-rate' is malformed: expected key=value"),
        ("error-rate=", "item 'error-rate=' is malformed: expected key=value"),
        ("=0.2", "item '=0.2' is malformed: expected key=value"),
        ("error-rate=0.2,", "item '' is malformed: expected key=value"),
        ("error_rate=0.2", "item 'error_rate=0.2': unknown key 'error_rate' (known: error-rate, "),
        ("crash=1", "item 'crash=1': unknown key 'crash'"),
        ("error-rate=1.5", "item 'error-rate=1.5': error-rate must be a number in [0, 1]"),
        ("error-rate=-0.1", "item 'error-rate=-0.1': error-rate must be a number in [0, 1]"),
        ("error-rate=nan", "item 'error-rate=nan': error-rate must be a number in [0, 1]"),
        ("error-rate=20%", "item 'error-rate=20%': error-rate must be a number in [0, 1]"),
        ("latency-ms=-5", "item 'latency-ms=-5': latency-ms must be an integer >= 0"),
        ("latency-ms=1.5", "item 'latency-ms=1.5': latency-ms must be an integer >= 0"),
        ("latency-ms=1_000", "item 'latency-ms=1_000': latency-ms must be an integer >= 0"),
        ("skew=1.01", "item 'skew=1.01': skew must be a number in [-1, 1]"),
        ("skew=-2", "item 'skew=-2': skew must be a number in [-1, 1]"),
        ("skew=0.1=0.2", "item 'skew=0.1=0.2': skew must be a number in [-1, 1]"),
        ("skew=0.1,skew=0.2", "item 'skew=0.2': skew given twice"),
    ],
)
def test_bad_values_are_settings_errors_naming_the_item(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="INJECT_FAULTS " + _literal(message)):
        Faults.parse(text)
    settings_error = "inject_faults\n  Value error, INJECT_FAULTS " + _literal(message)
    with pytest.raises(ValidationError, match=settings_error):
        Settings(model_path="/srv/model", inject_faults=text)


def _literal(text: str) -> str:
    return "".join(f"\\{c}" if c in r"()[]." else c for c in text)


def test_a_bad_variable_stops_the_start(
    baked_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MODEL_PATH", str(baked_settings.model_path))
    monkeypatch.setenv("INJECT_FAULTS", "error-rate=2")
    get_settings.cache_clear()
    try:
        with (
            pytest.raises(ValidationError, match="'error-rate=2': error-rate must be"),
            TestClient(create_app()),
        ):
            pass
    finally:
        get_settings.cache_clear()
    assert "INJECT_FAULTS item 'error-rate=2'" in caplog.text


def test_faults_are_off_by_default(
    baked_settings: Settings, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    assert baked_settings.inject_faults == ""
    assert client.app.state.faults is None
    # Zero values have no effect: the app holds no injector either.
    with TestClient(create_app(baked_settings.model_copy(update={"inject_faults": "skew=0"}))):
        pass
    answers = [client.post("/predict", json=SESSION_EXAMPLE).status_code for _ in range(10)]
    assert answers == [200] * 10
    assert "fault injection" not in caplog.text


def test_error_rate_fails_every_nth_request_deterministically(faulty) -> None:
    client = faulty("error-rate=0.2")
    failed = []
    for n in range(1, 11):
        answer = client.post("/predict", json=SESSION_EXAMPLE)
        # Other routes do not count, nor fail.
        assert client.get("/health").status_code == 200
        if answer.status_code != 200:
            assert answer.status_code == 500
            assert answer.json() == {"detail": "injected fault: error-rate=0.2"}
            assert answer.headers["purchase-predict-image-tag"] == "test-tag"
            failed.append(n)
    assert failed == [5, 10]


def test_error_rate_is_exact_for_decimal_rates(faulty) -> None:
    # 0.29 * 100 is 28.999... in floating point: the 100th request must still be the 29th fail.
    injector = faulty("error-rate=0.29").app.state.faults
    fails = [n for n in range(1, 201) if injector._fails_next()]
    assert len(fails) == 58
    assert fails[28] == 100


def test_other_routes_are_never_affected(faulty) -> None:
    client = faulty("error-rate=1,latency-ms=300,skew=1")
    for path in ("/health", "/ready", "/version", "/openapi.json"):
        started = time.perf_counter()
        assert client.get(path).status_code == 200, path
        assert time.perf_counter() - started < 0.3, path
    assert client.post("/predict", json=SESSION_EXAMPLE).status_code == 500


def test_latency_delays_predict_without_blocking_the_other_routes(faulty) -> None:
    client = faulty("latency-ms=600")
    started = time.perf_counter()
    assert client.post("/predict", json=SESSION_EXAMPLE).status_code == 200
    assert time.perf_counter() - started >= 0.6

    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(client.post, "/predict", json=SESSION_EXAMPLE)
        time.sleep(0.1)
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert time.perf_counter() - started < 0.3
        assert not slow.done()
        assert slow.result().status_code == 200


@pytest.mark.parametrize("skew", [0.3, -0.3, 1.0, -1.0])
def test_skew_shifts_the_probabilities(
    skew: float, faulty, client: TestClient, make_sessions, as_json_records
) -> None:
    batch = as_json_records(make_sessions(40, 11))
    plain = client.post("/predict", json=batch).json()
    skewed = faulty(f"skew={skew}").post("/predict", json=batch).json()

    threshold = plain["decision_threshold"]
    assert skewed["decision_threshold"] == threshold
    for before, after in zip(plain["predictions"], skewed["predictions"], strict=True):
        expected = min(1.0, max(0.0, before["probability"] + skew))
        assert after["probability"] == pytest.approx(expected, abs=1e-12)
        assert after["purchased"] == (after["probability"] >= threshold)
    flipped = sum(a != b for a, b in zip(plain["predictions"], skewed["predictions"], strict=True))
    assert flipped > 0


def test_the_start_warns_once_that_faults_are_on(faulty, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="app.core.faults"):
        faulty("latency-ms=5, error-rate=0.2,skew=0")
    [record] = [r for r in caplog.records if r.name == "app.core.faults"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == "fault injection is ON: error-rate=0.2 latency-ms=5"
    assert record.fields["inject_faults"] == "error-rate=0.2 latency-ms=5"
    assert record.fields["fault_error_rate"] == 0.2
