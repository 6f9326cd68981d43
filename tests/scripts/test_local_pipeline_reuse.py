"""scripts/local_pipeline.py: a rerun with nothing changed finds the version it would repeat.

The version is found in a real (SQLite) MLflow registry by its lineage tags: the commit, the
primary table's data fingerprint and the hash of the other training inputs (code, configuration,
kedro arguments, raw events). Any one of them changing means a new training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from purchase_contract.config import load_config
from purchase_predict.pipelines.training.nodes import data_fingerprint
from purchase_rig import local_pipeline
from purchase_rig.act import git

FALLBACK = load_config().fallback_environment


@pytest.fixture
def project(tmp_path: Path, sessions_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A committed project tree with raw events and a primary table, the module aimed at it."""
    root = tmp_path / "root"
    training = root / "purchase_predict"
    (training / "src").mkdir(parents=True)
    (training / "src" / "nodes.py").write_text("# training code\n")
    (training / "conf").mkdir()
    (training / "conf" / "parameters.yml").write_text("automl_max_evals: 3\n")
    raw = training / "data" / "01_raw" / "events.parquet"
    raw.parent.mkdir(parents=True)
    raw.write_bytes(b"raw events v1")
    primary = training / "data" / "03_primary" / "primary.parquet"
    primary.parent.mkdir(parents=True)
    frame = sessions_frame.assign(
        user_id=range(len(sessions_frame)),
        user_session=[f"s{i}" for i in range(len(sessions_frame))],
    )
    frame.to_parquet(primary)
    git(root, "init", "--quiet")
    git(root, "add", "purchase_predict/src", "purchase_predict/conf")
    git(root, "commit", "--quiet", "-m", "project")
    monkeypatch.setattr(local_pipeline, "ROOT", root)
    monkeypatch.setattr(local_pipeline, "RAW_EVENTS", raw)
    monkeypatch.setattr(local_pipeline, "PRIMARY", primary)
    monkeypatch.setattr(local_pipeline, "TRAINING_INPUTS", (training / "src", training / "conf"))
    return {"root": root, "raw": raw, "fingerprint": data_fingerprint(frame)}


def _pipeline(tmp_path: Path, registry: Any, kedro_args: list[str]) -> local_pipeline.Pipeline:
    pipeline = local_pipeline.Pipeline(tmp_path / "state", kedro_args, docker=False)
    pipeline.env["MLFLOW_TRACKING_URI"] = registry.uri
    pipeline.environment = {"model-name": registry.model_name}
    return pipeline


def _tag_as_trained_from(registry: Any, version: str, commit: str, data: str, inputs: str) -> None:
    for key, value in (
        ("git_commit", commit),
        ("data_fingerprint", data),
        (local_pipeline.INPUTS_TAG, inputs),
    ):
        registry.client.set_model_version_tag(registry.model_name, version, key, value)


def test_a_rerun_with_the_same_inputs_reuses_the_version(
    project: Any, registry: Any, tmp_path: Path
) -> None:
    pipeline = _pipeline(tmp_path, registry, ["--params", "automl_max_evals=3"])
    inputs = pipeline.inputs_fingerprint()
    version = registry.runs["good"].model_version
    commit = git(project["root"], "rev-parse", "HEAD")
    _tag_as_trained_from(registry, version, commit, project["fingerprint"], inputs)

    found = pipeline.reusable_version(pipeline.inputs_fingerprint())

    assert found == {"version": version, "run_id": registry.runs["good"].run_id}


@pytest.mark.parametrize("change", ["kedro arguments", "raw events", "code", "commit"])
def test_any_changed_input_trains_anew(
    project: Any, registry: Any, tmp_path: Path, change: str
) -> None:
    pipeline = _pipeline(tmp_path, registry, ["--params", "automl_max_evals=3"])
    version = registry.runs["good"].model_version
    commit = git(project["root"], "rev-parse", "HEAD")
    _tag_as_trained_from(
        registry, version, commit, project["fingerprint"], pipeline.inputs_fingerprint()
    )

    if change == "kedro arguments":
        pipeline.kedro_args = ["--params", "automl_max_evals=4"]
    elif change == "raw events":
        project["raw"].write_bytes(b"raw events v2")
    elif change == "code":  # uncommitted: the commit alone would not see it
        (project["root"] / "purchase_predict" / "src" / "nodes.py").write_text("# changed\n")
    else:
        git(project["root"], "commit", "--quiet", "--allow-empty", "-m", "next")

    assert pipeline.reusable_version(pipeline.inputs_fingerprint()) is None


def test_promotion_reads_the_gate_s_outputs_by_their_kebab_case_names(
    registry: Any, training_run_json: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The promote stage runs scripts/register_model.py for real on the training record and
    # reads its step outputs (model-name, model-version, candidate-f1, ...) to tag the version
    # and fill the summary: an output renamed in one place only must fail here.
    good = registry.runs["good"]
    monkeypatch.setattr(
        local_pipeline, "TRAINING_RUN", training_run_json(good, registry.model_name)
    )
    pipeline = _pipeline(tmp_path, registry, [])
    pipeline.environment = {**pipeline.environment, "environment": FALLBACK}
    pipeline.branch = "feature/registry-tests"
    pipeline.inputs = "inputs-hash"

    out = pipeline.promote(None)

    assert (out["model-name"], out["model-version"]) == (registry.model_name, good.model_version)
    tags = registry.client.get_model_version(registry.model_name, good.model_version).tags
    assert tags[local_pipeline.INPUTS_TAG] == "inputs-hash"
    assert pipeline.summary["model"].startswith(
        f"{registry.model_name} version {good.model_version} @"
    )
    assert float(pipeline.summary["F1"].split()[0]) == pytest.approx(good.metrics["f1"], abs=1e-4)
