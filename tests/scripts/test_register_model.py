"""scripts/register_model.py against real MLflow registries: a SQLite store and an mlflow server.

Training runs follow the model contract (see conftest.py); names come from the root pyproject.
"""

from __future__ import annotations

import itertools
import operator
import os
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from purchase_delivery import register_model

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "register_model.py"
SETTINGS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["purchase-predict"]
ENVIRONMENTS = SETTINGS["environments"]
FALLBACK = SETTINGS["fallback_environment"]
# Any configured environment other than the fallback one.
OTHER = next(name for name in sorted(ENVIRONMENTS) if name != FALLBACK)


@dataclass(frozen=True)
class Result:
    """One invocation of the CLI: exit status, streams and the files GitHub would read."""

    status: int
    out: str
    err: str
    outputs: dict[str, str]
    step_summary: str


@pytest.fixture
def promote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Result]:
    """Run register_model.main in-process with fresh $GITHUB_OUTPUT / $GITHUB_STEP_SUMMARY."""
    calls = itertools.count()

    def run(*argv: str) -> Result:
        n = next(calls)
        output, summary = tmp_path / f"output-{n}", tmp_path / f"summary-{n}.md"
        monkeypatch.setenv("GITHUB_OUTPUT", str(output))
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
        capsys.readouterr()
        status = register_model.main(list(argv))
        captured = capsys.readouterr()
        return Result(
            status=status,
            out=captured.out,
            err=captured.err,
            outputs=_key_values(output.read_text()) if output.exists() else {},
            step_summary=summary.read_text() if summary.exists() else "",
        )

    return run


def _key_values(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line)


def alias_of(env: str) -> str:
    return ENVIRONMENTS[env]["alias"]


# --- registration -------------------------------------------------------------------------


def test_first_promotion_passes_and_reuses_the_pipelines_version(registry, promote) -> None:
    good = registry.runs["good"]

    result = promote("--run-id", good.run_id, "--environment", FALLBACK)

    assert result.status == 0, result.err
    assert registry.holder(alias_of(FALLBACK)) == good.model_version
    assert registry.versions_of(good.run_id) == [good.model_version]
    assert result.outputs["decision"] == "first"
    assert result.outputs["promoted"] == "true"
    assert result.outputs["model-version"] == good.model_version
    assert result.outputs["champion-f1"] == ""
    assert result.outputs["alias"] == alias_of(FALLBACK)
    assert result.outputs["environment"] == FALLBACK
    assert float(result.outputs["candidate-f1"]) == pytest.approx(good.metrics["f1"])


def test_rerunning_a_promotion_creates_nothing_and_reports_unchanged(registry, promote) -> None:
    good = registry.runs["good"]

    first = promote("--run-id", good.run_id, "--environment", FALLBACK)
    again = promote("--run-id", good.run_id, "--environment", FALLBACK)

    assert (first.status, again.status) == (0, 0)
    assert again.outputs["decision"] == "unchanged"
    assert again.outputs["promoted"] == "true"
    assert registry.versions_of(good.run_id) == [good.model_version]
    assert registry.holder(alias_of(FALLBACK)) == good.model_version


def test_an_unregistered_run_is_registered_exactly_once(registry, promote) -> None:
    run = registry.runs["unregistered"]
    assert registry.versions_of(run.run_id) == []

    first = promote("--run-id", run.run_id, "--environment", FALLBACK)
    again = promote("--model-uri", run.model_uri, "--environment", FALLBACK)

    versions = registry.versions_of(run.run_id)
    assert len(versions) == 1
    assert first.outputs["model-version"] == again.outputs["model-version"] == versions[0]
    assert registry.tags(versions[0])["training_run_id"] == run.run_id


# --- the quality gate ---------------------------------------------------------------------


def test_gate_refuses_a_worse_model_and_leaves_the_alias(registry, promote) -> None:
    good, worse = registry.runs["good"], registry.runs["worse"]
    alias = alias_of(FALLBACK)
    promote("--run-id", good.run_id, "--environment", FALLBACK)

    result = promote("--run-id", worse.run_id, "--environment", FALLBACK)

    assert result.status == 1
    assert registry.holder(alias) == good.model_version
    assert result.outputs["decision"] == "refused"
    assert result.outputs["promoted"] == "false"
    assert float(result.outputs["champion-f1"]) == pytest.approx(good.metrics["f1"])
    assert float(result.outputs["candidate-f1"]) < float(result.outputs["champion-f1"]) - 0.05
    assert result.err.startswith("register_model: refused:")
    assert result.err.count("\n") == 1
    tags = registry.tags(worse.model_version)
    assert tags[f"gate.{alias}.decision"] == "refused"
    assert tags[f"gate.{alias}.champion_version"] == good.model_version


def test_force_overrides_a_refusal_and_records_it(registry, promote) -> None:
    good, worse = registry.runs["good"], registry.runs["worse"]
    alias = alias_of(FALLBACK)
    promote("--run-id", good.run_id, "--environment", FALLBACK)

    result = promote("--run-id", worse.run_id, "--environment", FALLBACK, "--force")

    assert result.status == 0
    assert registry.holder(alias) == worse.model_version
    assert result.outputs["decision"] == "forced"
    assert registry.tags(worse.model_version)[f"gate.{alias}.decision"] == "forced"
    assert "Promoted with --force" in result.out


def test_gate_passes_a_better_model(registry, promote) -> None:
    good, worse = registry.runs["good"], registry.runs["worse"]
    promote("--run-id", worse.run_id, "--environment", FALLBACK)

    result = promote("--run-id", good.run_id, "--environment", FALLBACK)

    assert result.status == 0
    assert result.outputs["decision"] == "passed"
    assert result.outputs["champion-version"] == worse.model_version
    assert registry.holder(alias_of(FALLBACK)) == good.model_version


@pytest.mark.parametrize(
    ("candidate", "tolerance", "f1_against_champion"),
    [
        pytest.param("good_twin", "0", operator.eq, id="an-equal-model-at-zero-tolerance"),
        pytest.param("worse", "1", operator.lt, id="a-worse-model-within-the-tolerance"),
    ],
)
def test_gate_passes_a_model_within_the_tolerance(
    registry, promote, candidate: str, tolerance: str, f1_against_champion: Callable
) -> None:
    good, challenger = registry.runs["good"], registry.runs[candidate]
    promote("--run-id", good.run_id, "--environment", FALLBACK)

    result = promote(
        "--run-id", challenger.run_id, "--environment", FALLBACK, "--tolerance", tolerance
    )

    assert result.status == 0
    assert result.outputs["decision"] == "passed"
    candidate_f1 = float(result.outputs["candidate-f1"])
    champion_f1 = float(result.outputs["champion-f1"])
    assert f1_against_champion(candidate_f1, champion_f1), (candidate_f1, champion_f1)


def test_each_model_is_scored_at_its_own_threshold(registry) -> None:
    good = registry.runs["good"]
    features, labels = register_model.load_test_set(good.run_id)
    scored = register_model.VersionEvaluator(registry.model_name, features, labels)

    evaluation = scored(good.model_version)

    probability = mlflow.sklearn.load_model(good.model_uri).predict_proba(features)[:, 1]
    assert evaluation.threshold == good.decision_threshold == 0.4
    assert evaluation.f1 == pytest.approx(f1_score(labels, probability >= 0.4))
    assert evaluation.f1 == pytest.approx(good.metrics["f1"])
    assert evaluation.rows == len(labels)
    assert list(features.columns) == list(pd.read_parquet(_test_set(good.run_id)).columns[:-1])


def _test_set(run_id: str) -> str:
    return mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=register_model.TEST_SET_ARTIFACT
    )


# --- lineage and summary ------------------------------------------------------------------


def test_lineage_defaults_to_the_runs_tags_and_the_github_run(
    registry, promote, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = registry.runs["good"]
    monkeypatch.setenv("GITHUB_SHA", "ffffffffffffffffffffffffffffffffffffffff")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.example")
    monkeypatch.setenv("GITHUB_REPOSITORY", "shop/purchase-predict")
    monkeypatch.setenv("GITHUB_RUN_ID", "4242")

    result = promote("--run-id", good.run_id, "--environment", FALLBACK)

    tags = registry.tags(good.model_version)
    run_url = "https://github.example/shop/purchase-predict/actions/runs/4242"
    assert result.status == 0
    # The run's own tags describe the code that trained it; GITHUB_SHA only fills gaps.
    assert tags["git_commit"] == good.git_commit
    assert tags["git_branch"] == good.git_branch
    assert tags["data_fingerprint"] == good.data_fingerprint
    assert tags["workflow_run_url"] == run_url
    assert tags["training_run_id"] == good.run_id
    assert f"[workflow run]({run_url})" in result.out


def test_lineage_flags_win(registry, promote) -> None:
    good = registry.runs["good"]

    result = promote(
        "--run-id",
        good.run_id,
        "--environment",
        FALLBACK,
        "--git-sha",
        "abc123",
        "--branch",
        "hotfix/price",
        "--run-url",
        "https://ci.example/run/7",
        "--data-fingerprint",
        "feed",
    )

    tags = registry.tags(good.model_version)
    assert result.status == 0
    assert (tags["git_commit"], tags["git_branch"]) == ("abc123", "hotfix/price")
    assert (tags["workflow_run_url"], tags["data_fingerprint"]) == (
        "https://ci.example/run/7",
        "feed",
    )


def test_summary_shows_version_metrics_of_both_and_decision(registry, promote) -> None:
    good, twin = registry.runs["good"], registry.runs["good_twin"]
    alias = alias_of(FALLBACK)
    promote("--run-id", good.run_id, "--environment", FALLBACK)

    result = promote("--run-id", twin.run_id, "--environment", FALLBACK)

    summary = result.out
    assert summary == result.step_summary
    assert (
        f"## Promotion of `{registry.model_name}` version {twin.model_version} to `@{alias}`"
        in summary
    )
    assert "**Decision: passed**" in summary
    assert (
        f"| Candidate | {twin.model_version} | `{twin.run_id}` | 0.4 | {twin.metrics['f1']:.4f} |"
        in summary
    )
    assert f"| Previous `@{alias}` | {good.model_version} | `{good.run_id}` | 0.4 |" in summary
    assert f"git commit `{good.git_commit}`" in summary
    assert f"data fingerprint `{twin.data_fingerprint}`" in summary


# --- inputs -------------------------------------------------------------------------------


def test_training_run_json_promotes_to_the_branch_environment_or_the_fallback(
    registry, promote, training_run_json
) -> None:
    good = registry.runs["good"]
    path = training_run_json(good, registry.model_name)
    assert good.git_branch not in {table["branch"] for table in ENVIRONMENTS.values()}

    unmapped = promote("--training-run-json", str(path))
    mapped = promote("--training-run-json", str(path), "--branch", ENVIRONMENTS[OTHER]["branch"])

    assert (unmapped.status, mapped.status) == (0, 0)
    assert unmapped.outputs["environment"] == FALLBACK
    assert mapped.outputs["environment"] == OTHER
    assert registry.holder(alias_of(FALLBACK)) == good.model_version
    assert registry.holder(alias_of(OTHER)) == good.model_version
    assert registry.versions_of(good.run_id) == [good.model_version]


def test_training_run_json_for_another_model_is_refused(
    registry, promote, training_run_json
) -> None:
    path = training_run_json(registry.runs["good"], "someone_elses_model")

    result = promote("--training-run-json", str(path), "--environment", FALLBACK)

    assert result.status == 2
    assert str(path) in result.err
    assert "registered_model_name 'someone_elses_model'" in result.err


def test_a_staging_version_is_promoted_to_another_environment_by_alias_uri(
    registry, promote
) -> None:
    good = registry.runs["good"]
    promote("--run-id", good.run_id, "--environment", FALLBACK)
    source = f"models:/{registry.model_name}@{alias_of(FALLBACK)}"

    result = promote("--model-uri", source, "--environment", OTHER)

    assert result.status == 0
    assert result.outputs["decision"] == "first"
    assert registry.holder(alias_of(OTHER)) == good.model_version
    assert registry.versions_of(good.run_id) == [good.model_version]


def test_alias_override(registry, promote) -> None:
    good = registry.runs["good"]

    result = promote("--run-id", good.run_id, "--alias", "canary")

    assert result.status == 0
    assert registry.holder("canary") == good.model_version
    assert result.outputs["environment"] == ""


@pytest.mark.parametrize(
    ("argv_of", "fragment"),
    [
        (
            lambda runs: ["--run-id", runs["good"].run_id, "--environment", "qa"],
            "unknown environment 'qa'",
        ),
        (lambda runs: ["--run-id", "0" * 32, "--environment", FALLBACK], "MLflow ("),
        (
            lambda runs: ["--run-id", runs["no_test_set"].run_id, "--environment", FALLBACK],
            "has no test_set/test_set.parquet",
        ),
        (
            lambda runs: ["--model-uri", "s3://bucket/model", "--environment", FALLBACK],
            "is neither runs:/",
        ),
        (
            lambda runs: [
                "--run-id",
                runs["good"].run_id,
                "--environment",
                FALLBACK,
                "--tolerance",
                "2",
            ],
            "--tolerance must be in [0, 1]",
        ),
    ],
    ids=["unknown-env", "unknown-run", "no-test-set", "bad-uri", "bad-tolerance"],
)
def test_bad_input_is_a_one_line_error(registry, promote, argv_of, fragment: str) -> None:
    result = promote(*argv_of(registry.runs))

    assert result.status == 2
    assert result.err.splitlines()[-1].startswith("register_model: error: ")
    assert fragment in result.err.splitlines()[-1]
    assert result.out == ""
    assert result.outputs == {}


# --- race: the alias moves while the gate runs --------------------------------------------


def test_gate_is_rerun_when_the_alias_moves_during_evaluation(registry) -> None:
    good, worse = registry.runs["good"], registry.runs["worse"]
    alias = alias_of(FALLBACK)
    features, labels = register_model.load_test_set(worse.run_id)
    real = register_model.VersionEvaluator(registry.model_name, features, labels)
    concurrent_promotions = []

    def evaluate_while_another_promotion_lands(version: str):
        if not concurrent_promotions:
            # Another job promotes the good model while this one scores its candidate.
            registry.client.set_registered_model_alias(
                registry.model_name, alias, good.model_version
            )
            concurrent_promotions.append(good.model_version)
        return real(version)

    outcome = register_model.promote(
        registry.client,
        model_name=registry.model_name,
        alias=alias,
        version=worse.model_version,
        evaluate=evaluate_while_another_promotion_lands,
        tolerance=0.01,
        force=False,
    )

    # Without the re-check this would have been "first" and overwritten the good model.
    assert outcome.decision == "refused"
    assert outcome.holder == outcome.champion.version == good.model_version
    assert registry.holder(alias) == good.model_version
    assert registry.tags(worse.model_version)[f"gate.{alias}.decision"] == "refused"
    assert outcome.candidate.f1 < outcome.champion.f1


def test_tags_are_written_before_the_alias_moves(registry, promote) -> None:
    good = registry.runs["good"]
    alias = alias_of(FALLBACK)

    result = promote("--run-id", good.run_id, "--environment", FALLBACK)

    holder_tags = registry.tags(registry.holder(alias))
    assert result.status == 0
    assert {"git_commit", "git_branch", "data_fingerprint", "training_run_id"} <= set(holder_tags)
    assert holder_tags[f"gate.{alias}.decision"] == "first"


# --- the real CLI against a real mlflow server --------------------------------------------


def test_help_lists_inputs_decisions_and_outputs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        register_model.main(["--help"])

    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0
    for word in ("--training-run-json", "--force", "refused", "model-version", "champion-f1"):
        assert word in help_text


@pytest.mark.slow
def test_cli_against_an_mlflow_server(
    mlflow_server: str,
    project_config,
    log_contract_run,
    promote,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A model name of its own: the server is shared by the whole session.
    model_name = f"{SETTINGS['model_name']}_{uuid.uuid4().hex[:8]}"
    project_config(model_name=model_name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    client = mlflow.MlflowClient(mlflow_server)
    experiment_id = client.create_experiment(f"registry-tests-{model_name}")
    good = log_contract_run(experiment_id=experiment_id, model_name=model_name)
    worse = log_contract_run(
        experiment_id=experiment_id, model_name=model_name, shuffle_labels=True
    )
    alias = alias_of(FALLBACK)

    # The script as a workflow runs it: a separate interpreter, names from the environment.
    cli = subprocess.run(
        [sys.executable, str(SCRIPT), "--run-id", good.run_id, "--environment", FALLBACK],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    refused = promote("--run-id", worse.run_id, "--environment", FALLBACK)
    holder_after_refusal = client.get_registered_model(model_name).aliases.get(alias)
    forced = promote("--run-id", worse.run_id, "--environment", FALLBACK, "--force")

    assert cli.returncode == 0, cli.stderr
    assert f"{model_name}` version {good.model_version} to `@{alias}`" in cli.stdout
    assert "**Decision: first**" in cli.stdout
    assert refused.status == 1
    assert holder_after_refusal == good.model_version
    assert forced.status == 0
    assert client.get_registered_model(model_name).aliases[alias] == worse.model_version
    good_tags = client.get_model_version(model_name, good.model_version).tags
    worse_tags = client.get_model_version(model_name, worse.model_version).tags
    assert good_tags["git_commit"] == good.git_commit
    assert good_tags["data_fingerprint"] == good.data_fingerprint
    assert good_tags[f"gate.{alias}.decision"] == "first"
    assert worse_tags[f"gate.{alias}.decision"] == "forced"
    assert worse_tags[f"gate.{alias}.champion_version"] == good.model_version
