"""reference_sample.json: written and read back, and each malformed file refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from purchase_contract.features import FEATURE_NAMES, example_session
from purchase_contract.model_dir import (
    REFERENCE_SAMPLE_ARTIFACT,
    REFERENCE_SAMPLE_FILE,
    ModelSourceError,
    ReferenceSample,
)

RUN_ID = "0123456789abcdef0123456789abcdef"


def _session(**changes: Any) -> dict[str, Any]:
    return {**example_session(), **changes}


def _sample(**changes: Any) -> dict[str, Any]:
    document = {
        "model_uri": "",
        "run_id": RUN_ID,
        "sessions": [_session(), _session(brand=None)],
        "probabilities": [0.25, 0.75],
    }
    return document | changes


def _file(tmp_path: Path, document: Any) -> Path:
    path = tmp_path / REFERENCE_SAMPLE_FILE
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


def test_the_names_the_deploy_reads() -> None:
    assert REFERENCE_SAMPLE_FILE == "reference_sample.json"
    assert REFERENCE_SAMPLE_ARTIFACT == "reference/reference_sample.json"
    assert REFERENCE_SAMPLE_ARTIFACT.rsplit("/", 1)[-1] == REFERENCE_SAMPLE_FILE


def test_write_then_read_gives_the_same_sample(tmp_path: Path) -> None:
    sample = ReferenceSample(**_sample(model_uri="models:/purchase_predict/3"))

    path = sample.write(tmp_path / REFERENCE_SAMPLE_FILE)

    assert ReferenceSample.read(path) == sample
    document = json.loads(path.read_text(encoding="utf-8"))
    assert list(document) == ["model_uri", "run_id", "sessions", "probabilities"]
    assert document["sessions"][1]["brand"] is None
    assert list(document["sessions"][0]) == list(FEATURE_NAMES)


def test_an_empty_model_uri_is_the_training_run_s_form(tmp_path: Path) -> None:
    assert ReferenceSample.read(_file(tmp_path, _sample())).model_uri == ""


def test_integer_probabilities_read_as_floats(tmp_path: Path) -> None:
    sample = ReferenceSample.read(_file(tmp_path, _sample(probabilities=[0, 1])))

    assert sample.probabilities == [0.0, 1.0]
    assert all(type(p) is float for p in sample.probabilities)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"probabilities": [0.5]}, "2 sessions but 1 probabilities"),
        ({"sessions": [_session()], "probabilities": [0.1, 0.2]}, "1 sessions but 2"),
        ({"sessions": [], "probabilities": []}, "holds no sessions"),
        ({"sessions": [_session(extra=1)], "probabilities": [0.5]}, r"extra \['extra'\]"),
        (
            {
                "sessions": [{k: v for k, v in _session().items() if k != "price"}],
                "probabilities": [0.5],
            },
            r"sessions\[0\] does not have exactly the feature keys: missing \['price'\]",
        ),
        ({"sessions": ["a session"], "probabilities": [0.5]}, "is not a JSON object"),
        ({"sessions": [_session(brand=["x"])], "probabilities": [0.5]}, "'brand'"),
        ({"probabilities": [0.5, 1.5]}, r"probabilities\[1\] 1.5 is not a number in \[0, 1\]"),
        ({"probabilities": [0.5, True]}, r"probabilities\[1\] True"),
        ({"probabilities": [0.5, None]}, r"probabilities\[1\] None"),
        ({"sessions": {"a": 1}}, "must be JSON arrays"),
        ({"run_id": ""}, "run_id must be a non-empty string"),
        ({"model_uri": "models:/m@staging"}, "is not empty or models:/<name>/<n>"),
    ],
)
def test_a_malformed_sample_is_refused(
    tmp_path: Path, changes: dict[str, Any], message: str
) -> None:
    path = _file(tmp_path, _sample(**changes))

    with pytest.raises(ModelSourceError, match=message):
        ReferenceSample.read(path)


def test_a_missing_key_is_refused(tmp_path: Path) -> None:
    document = _sample()
    del document["probabilities"]

    with pytest.raises(ModelSourceError, match="must be a JSON object with keys"):
        ReferenceSample.read(_file(tmp_path, document))


def test_nan_in_a_session_is_refused(tmp_path: Path) -> None:
    # json.dumps writes NaN (not JSON, but Python's json reads it back): null is the missing value.
    path = _file(tmp_path, _sample(sessions=[_session(price=float("nan"))], probabilities=[0.5]))
    assert "NaN" in path.read_text(encoding="utf-8")

    with pytest.raises(ModelSourceError, match="write null for a missing value"):
        ReferenceSample.read(path)


@pytest.mark.parametrize("text", ["", "not json", "[1, 2]"])
def test_a_file_that_is_not_a_sample_object_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / REFERENCE_SAMPLE_FILE
    path.write_text(text, encoding="utf-8")

    with pytest.raises(ModelSourceError, match=re.escape(REFERENCE_SAMPLE_FILE)):
        ReferenceSample.read(path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match=r"reference_sample\.json is missing"):
        ReferenceSample.read(tmp_path / REFERENCE_SAMPLE_FILE)


def test_write_refuses_what_read_would_refuse(tmp_path: Path) -> None:
    sample = ReferenceSample(**_sample(probabilities=[float("nan"), 0.5]))

    with pytest.raises(ModelSourceError, match=r"probabilities\[0\] nan"):
        sample.write(tmp_path / REFERENCE_SAMPLE_FILE)
    assert not (tmp_path / REFERENCE_SAMPLE_FILE).exists()
