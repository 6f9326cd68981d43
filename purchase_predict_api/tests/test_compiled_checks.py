"""A compiled model file that is not the one written for the estimator is never served.

The compiled form (``serving_compiled.json``: code tables and LightGBM's text model) is checked
at every start: its checksum against the one recorded when it was written, then its answers on
the check sessions against ``predict_proba``'s recorded ones, and on the training run's
reference sample when the directory has one. Each tampering below is refused with its reason;
the estimator serves instead, or, where it cannot be loaded, the start fails with both reasons.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.model.compiled import check_answers
from app.model.files import COMPILED_FILE
from app.model.frame import sessions_frame
from app.model.loading import PREPARED_RECORD, load_model_dir
from app.models import validate_session
from purchase_contract.model_dir import REFERENCE_SAMPLE_FILE, ReferenceSample


@pytest.fixture
def sessions(make_sessions, as_json_records) -> list:
    return [validate_session(r) for r in as_json_records(make_sessions(40, 11))]


def _edit_compiled(model_dir: Path, edit, *, reseal: bool = False) -> None:
    """Change the compiled file; ``reseal`` also writes its new checksum into the record, as a
    tool rewriting both would (only the answers can tell then)."""
    path = model_dir / COMPILED_FILE
    document = json.loads(path.read_text(encoding="utf-8"))
    edit(document)
    path.write_text(json.dumps(document), encoding="utf-8")
    if reseal:
        record_path = model_dir / PREPARED_RECORD
        record = json.loads(record_path.read_text(encoding="utf-8"))
        record["compiled_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        record_path.write_text(json.dumps(record), encoding="utf-8")


def _change_a_leaf(document: dict) -> None:
    """The first tree's first leaf value, changed: still a model LightGBM reads."""
    text = document["booster"]
    line = re.search(r"^leaf_value=(\S+)", text, re.M)
    assert line is not None
    document["booster"] = text.replace(line.group(0), f"leaf_value={float(line.group(1)) + 3}", 1)


def _rotate_a_code_table(document: dict) -> None:
    """The codes of the first categorical column shifted by one: the values map to neighbours."""
    name, codes = document["categorical"][0]
    values = list(codes)
    document["categorical"][0] = [name, {v: codes[values[i - 1]] for i, v in enumerate(values)}]


def _assert_served_by_the_estimator(model_dir: Path, sessions: list, registered_model) -> None:
    model = load_model_dir(model_dir)
    assert model.estimator is not None  # the prepared pickle, compiled again in memory
    np.testing.assert_allclose(
        model.purchase_probabilities(sessions),
        registered_model.estimator.predict_proba(sessions_frame(sessions))[:, 1],
        rtol=0,
        atol=1e-12,
    )


def test_the_record_holds_the_checksum_and_the_check_answers(
    prepared_dir: Path, registered_model
) -> None:
    record = json.loads((prepared_dir / PREPARED_RECORD).read_text(encoding="utf-8"))
    digest = hashlib.sha256((prepared_dir / COMPILED_FILE).read_bytes()).hexdigest()
    assert record["compiled_sha256"] == digest
    assert record["check_answers"] == check_answers(registered_model.estimator)
    # Untampered, it serves alone: no estimator loaded.
    assert load_model_dir(prepared_dir).estimator is None


def test_a_changed_model_text_is_never_read(
    prepared_dir: Path, sessions: list, registered_model, caplog: pytest.LogCaptureFixture
) -> None:
    _edit_compiled(prepared_dir, _change_a_leaf)
    with caplog.at_level(logging.ERROR):
        _assert_served_by_the_estimator(prepared_dir, sessions, registered_model)
    assert (
        f"compiled form not served: {COMPILED_FILE} is not the file written when the model was "
        "prepared; loading the estimator instead" in caplog.text
    )


def test_a_rotated_code_table_with_a_new_checksum_is_caught_by_its_answers(
    prepared_dir: Path, sessions: list, registered_model, caplog: pytest.LogCaptureFixture
) -> None:
    _edit_compiled(prepared_dir, _rotate_a_code_table, reseal=True)
    with caplog.at_level(logging.ERROR):
        _assert_served_by_the_estimator(prepared_dir, sessions, registered_model)
    assert re.search(
        rf"compiled form not served: {COMPILED_FILE}: \d+ of 5 answers differ from the stored "
        r"ones \(largest gap [0-9.e-]+, allowed 1e-09\)",
        caplog.text,
    ), caplog.text


def test_the_reference_sample_is_checked_too(
    prepared_dir: Path, sessions: list, registered_model, caplog: pytest.LogCaptureFixture
) -> None:
    # The training run's sample, with the model's own answers: the compiled form serves.
    expected = registered_model.estimator.predict_proba(sessions_frame(sessions[:20]))[:, 1]
    rows = [dict(s) for s in sessions[:20]]
    sample = ReferenceSample("models:/m/1", "run-1", rows, [float(p) for p in expected])
    sample.write(prepared_dir / REFERENCE_SAMPLE_FILE)
    assert load_model_dir(prepared_dir).estimator is None

    # A sample the compiled form does not answer (here: one answer moved by 0.01) refuses it.
    wrong = [*sample.probabilities[:-1], sample.probabilities[-1] + 0.01]
    ReferenceSample("models:/m/1", "run-1", rows, wrong).write(prepared_dir / REFERENCE_SAMPLE_FILE)
    with caplog.at_level(logging.ERROR):
        assert load_model_dir(prepared_dir).estimator is not None
    assert "on the reference sample of run run-1: 1 of 20 answers differ" in caplog.text


def test_without_an_estimator_to_fall_back_to_the_start_fails_with_both_reasons(
    prepared_dir: Path,
) -> None:
    # The image's runtime stage has no scikit-learn nor skops: the estimator cannot be loaded.
    _edit_compiled(prepared_dir, _change_a_leaf)
    code = (
        "import sys\n"
        "sys.modules.update(sklearn=None, skops=None)\n"
        "from pathlib import Path\n"
        "from app.model.loading import ModelLoadError, load_model_dir\n"
        "try:\n"
        "    load_model_dir(Path(sys.argv[1]))\n"
        "except ModelLoadError as err:\n"
        "    print(err)\n"
        "    sys.exit(3)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(prepared_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, (result.returncode, result.stderr[-2000:])
    assert f"the compiled form is refused ({COMPILED_FILE} is not the file written" in result.stdout
    assert "and the estimator cannot be loaded instead" in result.stdout
    # LightGBM never saw the changed text: none of its lines on stderr.
    assert "[LightGBM]" not in result.stderr + result.stdout
