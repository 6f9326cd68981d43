"""The two load modes (baked directory, fetch from MLflow), the bake script and load errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from app.core.config import Settings
from app.main import create_app
from app.model import bake as bake_model
from app.model.files import COMPILED_FILE
from app.model.frame import sessions_frame
from app.model.loading import (
    PREPARED_FILE,
    PREPARED_RECORD,
    ModelLoadError,
    _prepared_record_matches,
    load_model,
    load_model_dir,
    prepare_model_dir,
)
from app.model.native import NativeBooster, NativeLightGBMError
from app.models import SESSION_EXAMPLE, validate_session
from purchase_contract.model_dir import META_FILE, ModelMeta, ModelSourceError, parse_model_uri
from purchase_contract.testing import running_mlflow_server

# The bake's command line (scripts/bake_model.py runs the same main).
BAKE_CLI = [sys.executable, "-m", "app.model.bake"]
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
]


def test_bake_resolves_the_alias_to_its_version(baked_model_dir: Path, registered_model) -> None:
    meta = json.loads((baked_model_dir / META_FILE).read_text())

    # Version 2 is newer: the alias, not "latest", decides.
    assert registered_model.other_version == "2"
    assert meta == {
        "name": registered_model.name,
        "version": "1",
        "alias": registered_model.alias,
        "run_id": registered_model.run_id,
        "decision_threshold": registered_model.threshold,
        "model_uri": f"models:/{registered_model.name}/1",
    }
    assert (baked_model_dir / "MLmodel").is_file()
    assert (baked_model_dir / "model.skops").is_file()
    # Only the model and its meta: no staging directory left beside it.
    assert [p.name for p in baked_model_dir.parent.iterdir()] == [baked_model_dir.name]


def test_fetch_mode_serves_the_same_model_as_baked_mode(
    registered_model, baked_settings: Settings
) -> None:
    fetch = Settings(
        model_uri=f"models:/{registered_model.name}@{registered_model.alias}",
        mlflow_tracking_uri=registered_model.tracking_uri,
    )
    with (
        TestClient(create_app(fetch)) as fetched,
        TestClient(create_app(baked_settings)) as baked,
    ):
        from_mlflow = fetched.post("/predict", json=SESSION_EXAMPLE)
        from_image = baked.post("/predict", json=SESSION_EXAMPLE)
        version = fetched.get("/version").json()

    assert from_mlflow.status_code == 200
    assert from_mlflow.json() == from_image.json()
    assert version["model_version"] == "1"
    assert version["model_alias"] == registered_model.alias


def test_fetch_mode_by_version_number(registered_model) -> None:
    model = load_model(
        Settings(
            model_uri=f"models:/{registered_model.name}/{registered_model.other_version}",
            mlflow_tracking_uri=registered_model.tracking_uri,
        )
    )

    assert (model.meta.version, model.meta.alias) == (registered_model.other_version, None)


def test_bake_cli_writes_outputs_and_the_directory(
    registered_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    github_output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(github_output))
    from mlflow import MlflowClient  # noqa: PLC0415

    # The test F1 the training run logged: the deploy summary shows it beside the version.
    MlflowClient(registered_model.tracking_uri).log_metric(registered_model.run_id, "f1", 0.8125)
    out = tmp_path / "model"
    result = subprocess.run(
        [
            *BAKE_CLI,
            "--model-uri",
            f"models:/{registered_model.name}@{registered_model.alias}",
            "--tracking-uri",
            registered_model.tracking_uri,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert f"model-version={registered_model.version}\n" in result.stdout
    assert "f1=0.8125\n" in result.stdout
    assert f"model-uri=models:/{registered_model.name}/1\n" in github_output.read_text()
    assert ModelMeta.read(out).run_id == registered_model.run_id
    assert load_model_dir(out).meta.version == "1"


def test_bake_cli_unknown_alias_exits_2_with_one_line(registered_model, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *BAKE_CLI,
            "--model-uri",
            f"models:/{registered_model.name}@no-such-alias",
            "--tracking-uri",
            registered_model.tracking_uri,
            "--out",
            str(tmp_path / "model"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.startswith(f"bake_model.py: cannot fetch models:/{registered_model.name}")
    assert "no-such-alias" in result.stderr
    assert not (tmp_path / "model").exists()


def test_bake_refuses_a_non_empty_directory(registered_model, tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "old.txt").write_text("an older model")

    with pytest.raises(ModelSourceError, match="is not empty"):
        bake_model.bake(
            f"models:/{registered_model.name}@{registered_model.alias}",
            tmp_path / "model",
            tracking_uri=registered_model.tracking_uri,
        )


@pytest.mark.parametrize(
    "uri", ["runs:/abc/model", "models:/name", "models:/name@", "models:/name/latest"]
)
def test_model_uri_must_name_an_alias_or_a_version(uri: str) -> None:
    with pytest.raises(ModelSourceError, match="is not models:/<name>@<alias>"):
        parse_model_uri(uri)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "set exactly one of MODEL_PATH or MODEL_URI (neither is set)"),
        (
            {"MODEL_PATH": "/srv/model", "MODEL_URI": "models:/m@a"},
            "set exactly one of MODEL_PATH or MODEL_URI (both are set)",
        ),
        ({"MODEL_URI": "models:/m@a"}, "MODEL_URI=models:/m@a needs MLFLOW_TRACKING_URI"),
        ({"MODEL_PATH": "/srv/model", "PORT": "0"}, "greater than or equal to 1"),
    ],
)
def test_settings_need_exactly_one_model_source(
    values: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Settings()


def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # How an image with MODEL_PATH baked in is switched to fetch mode: -e MODEL_PATH=
    monkeypatch.setenv("MODEL_PATH", "")
    monkeypatch.setenv("MODEL_URI", "models:/m@a")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")

    assert Settings().model_path is None


def _copy(baked_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(baked_model_dir, copy)
    return copy


def test_a_directory_without_meta_is_refused(baked_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    (model_dir / META_FILE).unlink()

    with pytest.raises(ModelSourceError, match=r"model_meta\.json is missing: bake"):
        load_model_dir(model_dir)


def test_a_threshold_outside_0_1_is_refused(baked_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    meta = json.loads((model_dir / META_FILE).read_text())
    (model_dir / META_FILE).write_text(json.dumps({**meta, "decision_threshold": 1.5}))

    with pytest.raises(ModelSourceError, match=r"decision_threshold 1.5 is not in \[0, 1\]"):
        load_model_dir(model_dir)


def test_a_corrupt_estimator_is_refused(baked_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    (model_dir / "model.skops").write_bytes(b"not a skops archive")

    with pytest.raises(ModelLoadError, match=r"cannot load .*model.skops \(skops\)"):
        load_model_dir(model_dir)


def test_a_failed_load_fails_the_start(baked_model_dir: Path, tmp_path: Path) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    (model_dir / "MLmodel").unlink()

    with (
        pytest.raises(ModelSourceError, match="MLmodel is missing"),
        TestClient(create_app(Settings(model_path=model_dir))),
    ):
        pass


def _prepare_cli(model_dir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m app.prepare model_dir`` (what the image build runs), its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "app.prepare", str(model_dir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_prepared_files_serve_the_same_predictions(
    baked_model_dir: Path, tmp_path: Path, make_sessions, as_json_records
) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    result = _prepare_cli(model_dir)
    assert result.returncode == 0, result.stderr
    assert (model_dir / PREPARED_FILE).is_file()
    assert (model_dir / COMPILED_FILE).is_file()
    assert json.loads((model_dir / PREPARED_RECORD).read_text())["compiled"] == COMPILED_FILE

    frame = make_sessions(50, 5)
    sessions = [validate_session(r) for r in as_json_records(frame)]
    started = load_model_dir(model_dir)
    original = load_model_dir(model_dir, use_prepared=False).estimator
    assert _prepared_record_matches(model_dir, model_dir / "model.skops")
    # Started from the compiled form alone: no estimator, LightGBM through its C library.
    assert started.estimator is None
    assert isinstance(started.compiled.booster, NativeBooster)
    np.testing.assert_allclose(
        started.purchase_probabilities(sessions),
        original.predict_proba(sessions_frame(sessions))[:, 1],
        rtol=0,
        atol=1e-12,
    )


def test_a_prepared_start_imports_neither_scikit_learn_nor_pandas(
    baked_model_dir: Path, tmp_path: Path, registered_model
) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    prepare_model_dir(model_dir)
    code = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from app.model.loading import load_model_dir\n"
        "from app.models import SESSION_EXAMPLE, validate_session\n"
        "model = load_model_dir(Path(sys.argv[1]))\n"
        "p = model.purchase_probabilities([validate_session(SESSION_EXAMPLE)])\n"
        "print(json.dumps({'p': float(p[0]), 'loaded': sorted(m for m in"
        " ('sklearn', 'pandas', 'lightgbm', 'mlflow') if m in sys.modules)}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(model_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])

    assert answer["loaded"] == []
    expected = registered_model.estimator.predict_proba(
        sessions_frame([validate_session(SESSION_EXAMPLE)])
    )[0, 1]
    assert answer["p"] == pytest.approx(expected, abs=1e-12)


def test_a_damaged_compiled_file_falls_back_to_the_pickle(
    baked_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    prepare_model_dir(model_dir)
    (model_dir / COMPILED_FILE).write_text('{"format": 1, "booster": "not a model"}')

    model = load_model_dir(model_dir)

    # Refused before LightGBM reads it: it is not the file the record's checksum names.
    assert f"{COMPILED_FILE} is not the file written when the model was prepared" in caplog.text
    assert model.estimator is not None  # the prepared pickle, compiled again in memory
    assert model.compiled is not None
    assert model.meta.version == "1"


def test_native_booster_answers_as_lightgbm(registered_model, make_sessions) -> None:
    booster = registered_model.estimator.named_steps["classifier"].booster_
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(200, booster.num_feature())) * 50
    matrix[::7, 0] = np.nan

    native = NativeBooster(booster.model_to_string())

    assert native.num_feature() == booster.num_feature()
    np.testing.assert_array_equal(native.predict(matrix), booster.predict(matrix))
    with pytest.raises(NativeLightGBMError, match="features"):
        native.predict(matrix[:, :3])
    with pytest.raises(NativeLightGBMError):
        NativeBooster("not a model")


def test_a_prepared_pickle_from_other_libraries_is_ignored(
    baked_model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir = _copy(baked_model_dir, tmp_path)
    prepare_model_dir(model_dir)
    record = json.loads((model_dir / PREPARED_RECORD).read_text())
    record["libraries"]["scikit-learn"] = "0.0.1"
    (model_dir / PREPARED_RECORD).write_text(json.dumps(record))

    assert not _prepared_record_matches(model_dir, model_dir / "model.skops")
    assert "['libraries'] changed" in caplog.text
    # The compiled form needs LightGBM alone: still used.
    assert load_model_dir(model_dir).estimator is None
    # Written for another LightGBM, it is not: the MLflow format is read instead (the pickle's
    # libraries changed too), and the model still loads and compiles in memory.
    record["compiled_lightgbm"] = "0.0.1"
    (model_dir / PREPARED_RECORD).write_text(json.dumps(record))
    model = load_model_dir(model_dir)
    assert model.meta.version == "1"
    assert model.estimator is not None
    assert model.compiled is not None


def test_prepare_cli_refuses_a_directory_without_a_model(tmp_path: Path) -> None:
    result = _prepare_cli(tmp_path)

    assert result.returncode == 2
    [line] = result.stdout.splitlines()
    assert "model_meta.json is missing" in json.loads(line)["message"]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory, free_port) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with proxied artifacts, as in deployment."""
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), free_port()) as uri:
        yield uri


@pytest.mark.slow
def test_bake_from_a_real_mlflow_server(
    mlflow_server: str, registered_model, tmp_path: Path
) -> None:
    import mlflow  # noqa: PLC0415
    from mlflow import MlflowClient  # noqa: PLC0415

    mlflow.set_tracking_uri(mlflow_server)
    with mlflow.start_run() as run:
        mlflow.sklearn.log_model(
            registered_model.estimator,
            name="model",
            metadata={"decision_threshold": 0.5},
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=["scikit-learn", "lightgbm", "skops"],
            registered_model_name="served-model",
        )
    MlflowClient(mlflow_server).set_registered_model_alias("served-model", "production", "1")
    mlflow.set_tracking_uri(None)

    meta = bake_model.bake(
        "models:/served-model@production", tmp_path / "model", tracking_uri=mlflow_server
    )

    assert (meta.name, meta.version, meta.alias, meta.run_id) == (
        "served-model",
        "1",
        "production",
        run.info.run_id,
    )
    assert meta.decision_threshold == 0.5
    assert load_model_dir(tmp_path / "model").meta == meta
