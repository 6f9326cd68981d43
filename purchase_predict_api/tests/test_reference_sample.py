"""The fetch and the bake copy the training run's reference sample into the model directory.

A run that logged none (the conftest's registered model, like runs trained before reference
samples existed) still fetches and bakes, with one log line and no file.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.pipeline import Pipeline

from app.core.config import Settings
from app.main import create_app
from app.model import bake as bake_model
from app.model.loading import load_model_dir, prepare_model_dir
from purchase_contract.model_dir import (
    REFERENCE_SAMPLE_ARTIFACT,
    REFERENCE_SAMPLE_FILE,
    ModelMeta,
    ModelSourceError,
    ReferenceSample,
)
from purchase_contract.testing import isolated_mlflow

SAMPLED = "sampled-model"
BROKEN = "broken-sample-model"
ALIAS = "staging"
SKOPS_TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
]


@dataclass(frozen=True)
class SampledStore:
    """A SQLite MLflow whose runs logged a reference sample: a valid one, and a broken one."""

    tracking_uri: str
    run_id: str
    sample: ReferenceSample


def _log_run(estimator: Pipeline, name: str, document: dict[str, Any]) -> str:
    """A run logging the model (registered as ``name``, alias -> 1) and ``document`` as its
    reference sample artifact (written as is, so a broken one can be logged too)."""
    import mlflow  # noqa: PLC0415

    artifact = PurePosixPath(REFERENCE_SAMPLE_ARTIFACT)
    with mlflow.start_run() as run, tempfile.TemporaryDirectory() as directory:
        mlflow.sklearn.log_model(
            estimator,
            name="model",
            pyfunc_predict_fn="predict_proba",
            metadata={"decision_threshold": 0.5},
            skops_trusted_types=SKOPS_TRUSTED_TYPES,
            pip_requirements=[
                f"{package}=={metadata.version(package)}"
                for package in ("scikit-learn", "lightgbm", "skops", "pandas", "numpy")
            ],
            registered_model_name=name,
        )
        path = Path(directory) / artifact.name
        path.write_text(json.dumps({**document, "run_id": run.info.run_id}), encoding="utf-8")
        mlflow.log_artifact(str(path), artifact_path=str(artifact.parent))
    mlflow.MlflowClient().set_registered_model_alias(name, ALIAS, "1")
    return run.info.run_id


@pytest.fixture(scope="module")
def sampled_store(
    tmp_path_factory: pytest.TempPathFactory, registered_model, make_sessions, as_json_records
) -> SampledStore:
    """The conftest's estimator logged twice: with its reference sample, with a broken one."""
    import mlflow  # noqa: PLC0415

    home = tmp_path_factory.mktemp("sampled-mlflow")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    estimator = registered_model.estimator
    frame = make_sessions(20, 11)
    sample = {
        "model_uri": "",
        "sessions": as_json_records(frame),
        "probabilities": [float(p) for p in estimator.predict_proba(frame)[:, 1]],
    }
    with pytest.MonkeyPatch.context() as patch, isolated_mlflow(patch):
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(
            experiment_id=mlflow.create_experiment(
                "sampled", artifact_location=(home / "artifacts").as_uri()
            )
        )
        run_id = _log_run(estimator, SAMPLED, sample)
        # Lengths that differ: the fetch must refuse it rather than ship it.
        _log_run(estimator, BROKEN, {**sample, "probabilities": sample["probabilities"][:-1]})
    return SampledStore(uri, run_id, ReferenceSample(run_id=run_id, **sample))


@pytest.fixture
def sampled_dir(sampled_store: SampledStore, tmp_path: Path) -> Path:
    """The sampled model's alias baked into ``tmp_path/model``."""
    out = tmp_path / "model"
    bake_model.bake(f"models:/{SAMPLED}@{ALIAS}", out, tracking_uri=sampled_store.tracking_uri)
    return out


def test_a_baked_directory_holds_the_sample_with_the_concrete_model_uri(
    sampled_store: SampledStore, sampled_dir: Path
) -> None:
    sample = ReferenceSample.read(sampled_dir / REFERENCE_SAMPLE_FILE)

    assert sample.model_uri == f"models:/{SAMPLED}/1"
    assert asdict(sample) == {**asdict(sampled_store.sample), "model_uri": f"models:/{SAMPLED}/1"}
    assert ModelMeta.read(sampled_dir).run_id == sample.run_id == sampled_store.run_id
    # Downloaded inside the staging directory: nothing but the model directory beside it.
    assert [p.name for p in sampled_dir.parent.iterdir()] == [sampled_dir.name]
    assert [p.name for p in sampled_dir.iterdir() if p.name.startswith(".")] == []


def test_the_bake_outputs_name_the_sample(sampled_dir: Path, baked_model_dir: Path) -> None:
    with_sample = bake_model.outputs(ModelMeta.read(sampled_dir), sampled_dir)
    without = bake_model.outputs(ModelMeta.read(baked_model_dir), baked_model_dir)

    assert with_sample["reference-sample"] == str(sampled_dir / REFERENCE_SAMPLE_FILE)
    assert without["reference-sample"] == ""
    assert "reference-sample" in bake_model.EPILOG


def test_a_prepared_directory_answers_the_sample_s_probabilities(sampled_dir: Path) -> None:
    # What a deploy checks on a new revision: the image prepares the directory, then serves it.
    prepare_model_dir(sampled_dir)
    sample = ReferenceSample.read(sampled_dir / REFERENCE_SAMPLE_FILE)

    with TestClient(create_app(Settings(model_path=sampled_dir))) as client:
        response = client.post("/predict", json=sample.sessions)

    assert response.status_code == 200, response.text
    answered = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(answered, sample.probabilities, rtol=0, atol=1e-12)


def test_a_run_without_a_sample_bakes_with_one_log_line(
    registered_model, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "model"

    with caplog.at_level(logging.WARNING, logger="app.model.source"):
        meta = bake_model.bake(
            f"models:/{registered_model.name}/1", out, tracking_uri=registered_model.tracking_uri
        )

    assert not (out / REFERENCE_SAMPLE_FILE).exists()
    [record] = [r for r in caplog.records if r.name == "app.model.source"]
    assert record.getMessage() == (
        f"models:/{registered_model.name}/1: its training run ({registered_model.run_id}) "
        f"logged no {REFERENCE_SAMPLE_ARTIFACT} (trained before reference samples): "
        f"the model directory has no {REFERENCE_SAMPLE_FILE}"
    )
    assert load_model_dir(out).meta == meta


def test_a_broken_sample_fails_the_bake_and_leaves_no_directory(
    sampled_store: SampledStore, tmp_path: Path
) -> None:
    out = tmp_path / "model"

    with pytest.raises(ModelSourceError, match="20 sessions but 19 probabilities"):
        bake_model.bake(f"models:/{BROKEN}@{ALIAS}", out, tracking_uri=sampled_store.tracking_uri)

    assert list(tmp_path.iterdir()) == []
