"""The trees compiled to machine code at prepare time (``serving_trees.so``, app/model/trees.py).

Built beside the compiled form, recorded with its checksum, and used only once it has proven at
start to be the library built for this model (checksum before it is loaded, then the compiled
form's answers on the check sessions and the reference sample). Anything else: one log line, and
the trees run on LightGBM's library as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import app.model.trees
from app.model.files import COMPILED_FILE
from app.model.frame import sessions_frame
from app.model.loading import PREPARED_RECORD, load_model_dir, prepare_model_dir
from app.model.trees import TREES_FILE, build_library
from app.models import validate_session


@pytest.fixture
def prepared_dir(prepared_source: Path, tmp_path: Path) -> Path:
    shutil.copytree(prepared_source, tmp_path / "model")
    return tmp_path / "model"


@pytest.fixture(scope="module")
def sessions(make_sessions, as_json_records) -> list:
    """Enough sessions for the all-cores path (1,000 and more), missing categories included."""
    return [validate_session(r) for r in as_json_records(make_sessions(3000, 23))]


def _record(model_dir: Path) -> dict:
    return json.loads((model_dir / PREPARED_RECORD).read_text(encoding="utf-8"))


def _reseal(model_dir: Path) -> None:
    record = _record(model_dir)
    record["trees_sha256"] = hashlib.sha256((model_dir / TREES_FILE).read_bytes()).hexdigest()
    (model_dir / PREPARED_RECORD).write_text(json.dumps(record), encoding="utf-8")


def test_the_compiled_trees_answer_as_lightgbm(prepared_dir: Path, sessions, registered_model):
    record = _record(prepared_dir)
    assert record["trees"] == TREES_FILE
    assert (
        record["trees_sha256"]
        == hashlib.sha256((prepared_dir / TREES_FILE).read_bytes()).hexdigest()
    )
    model = load_model_dir(prepared_dir)
    assert model.compiled is not None and model.compiled.trees is not None
    lightgbm = load_model_dir(prepared_dir, trees=False)
    assert lightgbm.compiled is not None and lightgbm.compiled.trees is None
    for batch in (sessions[:1], sessions[:999], sessions):  # one thread, then every core
        ours = model.purchase_probabilities(batch)
        # The same doubles compared, the trees summed in LightGBM's order: the same answers.
        np.testing.assert_array_equal(ours, lightgbm.purchase_probabilities(batch))
        np.testing.assert_allclose(
            ours,
            registered_model.estimator.predict_proba(sessions_frame(batch))[:, 1],
            rtol=0,
            atol=1e-12,
        )


def test_a_changed_library_is_refused_before_it_is_loaded(
    prepared_dir: Path, sessions, caplog: pytest.LogCaptureFixture
):
    path = prepared_dir / TREES_FILE
    path.write_bytes(path.read_bytes() + b"\0")
    with caplog.at_level(logging.WARNING, logger="app.model.loading"):
        model = load_model_dir(prepared_dir)
    assert model.compiled is not None and model.compiled.trees is None
    assert model.estimator is None  # the compiled form still serves, its trees on LightGBM
    lines = [r.getMessage() for r in caplog.records if "compiled trees not used" in r.getMessage()]
    assert lines == [
        f"compiled trees not used ({TREES_FILE} is not the file built when the model was "
        "prepared): the trees run on LightGBM's library"
    ]
    expected = load_model_dir(prepared_dir, trees=False).purchase_probabilities(sessions)
    np.testing.assert_array_equal(model.purchase_probabilities(sessions), expected)


def test_a_resealed_library_of_other_trees_is_refused_by_its_answers(
    prepared_dir: Path, caplog: pytest.LogCaptureFixture
):
    text = json.loads((prepared_dir / COMPILED_FILE).read_text(encoding="utf-8"))["booster"]
    leaf = re.search(r"^leaf_value=(\S+)", text, re.M)
    assert leaf is not None
    changed = text.replace(leaf.group(0), f"leaf_value={float(leaf.group(1)) + 3}", 1)
    build_library(changed, prepared_dir / TREES_FILE)
    _reseal(prepared_dir)
    with caplog.at_level(logging.WARNING, logger="app.model.loading"):
        model = load_model_dir(prepared_dir)
    assert model.compiled is not None and model.compiled.trees is None
    assert any("answers differ from the stored ones" in r.getMessage() for r in caplog.records)


def test_a_missing_library_leaves_lightgbm_serving(
    prepared_dir: Path, caplog: pytest.LogCaptureFixture
):
    (prepared_dir / TREES_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="app.model.loading"):
        model = load_model_dir(prepared_dir)
    assert model.compiled is not None and model.compiled.trees is None
    assert any(f"{TREES_FILE} is missing" in r.getMessage() for r in caplog.records)


def test_without_a_compiler_prepare_keeps_todays_path(
    baked_model_dir: Path, tmp_path: Path, monkeypatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(app.model.trees, "find_compiler", lambda: None)
    model_dir = tmp_path / "model"
    shutil.copytree(baked_model_dir, model_dir)
    with caplog.at_level(logging.WARNING, logger="app.model.loading"):
        prepare_model_dir(model_dir)
    assert any("no C compiler" in r.getMessage() for r in caplog.records)
    assert not (model_dir / TREES_FILE).exists()
    assert _record(model_dir)["trees"] is None
    assert (model_dir / COMPILED_FILE).exists()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model = load_model_dir(model_dir)
    assert model.compiled is not None and model.compiled.trees is None
    assert model.estimator is None
    assert not [r for r in caplog.records if "trees" in r.getMessage()]  # nothing to refuse
