"""purchase_delivery.train_steps: train.yml's Settings (plan, identity, refusals), Read the
training run, and Result (decision, outputs, summary) steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from purchase_delivery import train_steps
from purchase_delivery.workflow_step import StepRefused

REPO_ROOT = Path(__file__).resolve().parents[2]
PROVIDER = "projects/1/locations/global/workloadIdentityPools/gh/providers/repo"
TRAINER = "trainer@p.iam.gserviceaccount.com"


@pytest.fixture
def project_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A checkout with the Kedro project directory, as the Settings step sees it."""
    (tmp_path / "purchase_predict").mkdir()
    monkeypatch.chdir(tmp_path)
    return {"PROJECT_DIRECTORY": "purchase_predict", "ENVIRONMENT": "staging", "SCRIPTS": "/s"}


def test_the_default_plan_trains_with_kedro_run_and_promotes_to_the_environment(
    project_env,
) -> None:
    result = train_steps.settings(project_env)

    assert result.outputs == {
        "mode": "train",
        "kedro": "kedro run",
        "register-args": "--training-run-json "
        "purchase_predict/data/08_reporting/training_run.json --environment staging",
        "google-auth": "false",
        "workload-identity-provider": "",
        "service-account": "",
        "project": "",
    }
    assert result.log[0].startswith("google: no authentication (no GCP_TRAINING_SERVICE_ACCOUNT")
    assert result.log[1] == (
        "plan: (cd purchase_predict && kedro run) && python /s/register_model.py "
        "--training-run-json purchase_predict/data/08_reporting/training_run.json "
        "--environment staging"
    )


def test_inputs_shape_the_plan(project_env) -> None:
    env = {
        **project_env,
        "KEDRO_ENV": "cloud",
        "MAX_EVALS": "3",
        "FORCE": "true",
        "DRY_RUN": "true",
    }

    out = train_steps.settings(env).outputs

    assert out["mode"] == "dry-run"
    assert out["kedro"] == "kedro run --env cloud --params automl_max_evals=3"
    assert out["register-args"].endswith("--environment staging --force")


def test_a_training_service_account_authenticates_through_the_provider(project_env) -> None:
    env = {
        **project_env,
        "SERVICE_ACCOUNT": TRAINER,
        "WORKLOAD_IDENTITY_PROVIDER": PROVIDER,
        "DEPLOYER_SERVICE_ACCOUNT": "deployer@p.iam.gserviceaccount.com",
        "PROJECT_ID": "p",
    }

    result = train_steps.settings(env)

    out = result.outputs
    assert (out["google-auth"], out["service-account"], out["project"]) == ("true", TRAINER, "p")
    assert out["workload-identity-provider"] == PROVIDER
    assert result.log[0] == f"google: authenticate as {TRAINER} through {PROVIDER}"


def test_the_provider_alone_is_no_reason_to_authenticate(project_env) -> None:
    out = train_steps.settings({**project_env, "WORKLOAD_IDENTITY_PROVIDER": PROVIDER}).outputs
    assert (out["google-auth"], out["workload-identity-provider"]) == ("false", "")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"PROJECT_DIRECTORY": "absent"}, "project-directory 'absent' is not a directory"),
        ({"PROJECT_DIRECTORY": "purchase_predict;rm"}, "is not a directory of the checkout"),
        ({"KEDRO_ENV": "../x"}, "kedro-env must be a plain name, got '../x'"),
        ({"MAX_EVALS": "0"}, "automl-max-evals must be a positive integer, got '0'"),
        ({"SERVICE_ACCOUNT": "not-an-email"}, "the training service account must be an email"),
        (
            {"SERVICE_ACCOUNT": TRAINER, "DEPLOYER_SERVICE_ACCOUNT": TRAINER},
            f"training must not run as the deployer ({TRAINER}, GCP_SERVICE_ACCOUNT)",
        ),
        (
            {"SERVICE_ACCOUNT": TRAINER},
            f"the training service account {TRAINER} needs a workload identity provider",
        ),
    ],
    ids=["missing-dir", "odd-dir", "kedro-env", "max-evals", "email", "deployer", "provider"],
)
def test_settings_refuse_what_cannot_be_used(project_env, change, message) -> None:
    with pytest.raises(StepRefused) as refused:
        train_steps.settings({**project_env, **change})
    assert message in str(refused.value)


def test_the_training_record_gives_run_version_and_f1(tmp_path: Path) -> None:
    record = tmp_path / "training_run.json"
    record.write_text(json.dumps({"run_id": "r1", "model_version": 3, "metrics": {"f1": 0.8}}))

    result = train_steps.training_run({"TRAINING_RUN": str(record)})

    assert result.outputs == {"run-id": "r1", "model-version": "3", "f1": "0.8"}


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read the training record"), ('{"run_id": "r"}', "is not a training record")],
    ids=["missing", "incomplete"],
)
def test_a_missing_or_incomplete_record_is_refused(tmp_path: Path, content, message) -> None:
    record = tmp_path / "training_run.json"
    if content is not None:
        record.write_text(content)
    with pytest.raises(StepRefused, match=message):
        train_steps.training_run({"TRAINING_RUN": str(record)})


@pytest.mark.parametrize(
    ("env", "decision", "promoted"),
    [
        ({"MODE": "dry-run"}, "dry-run", "false"),
        ({"MODE": "train", "DECISION": "passed", "PROMOTED": "true"}, "passed", "true"),
        ({"MODE": "train", "DECISION": "refused", "PROMOTED": "false"}, "refused", "false"),
        (
            {"MODE": "train", "REGISTER_OUTCOME": "skipped"},
            "training or promotion failed (skipped)",
            "false",
        ),
        ({"MODE": ""}, "training or promotion failed (not reached)", "false"),
    ],
    ids=["dry-run", "passed", "refused", "train-failed", "settings-refused"],
)
def test_the_result(env, decision, promoted) -> None:
    result = train_steps.result(env)
    assert (result.outputs["decision"], result.outputs["promoted"]) == (decision, promoted)
    headline = "promoted" if promoted == "true" else "not promoted"
    assert result.summary.startswith(f"## Training: ? - {headline}\n")
    assert f"| Decision | **{decision}** |" in result.summary


def test_the_summary_names_the_alias_the_run_and_both_f1() -> None:
    where = {"MODE": "train", "ENVIRONMENT": "staging", "GIT_SHA": "abc"}
    model = {"MODEL_NAME": "purchase_predict", "ALIAS": "staging", "MODEL_VERSION": "4"}
    run = {"RUN_ID": "r1", "RUN_VERSION": "3", "RUN_F1": "0.8", "CHAMPION_F1": "0.79"}
    env = {**where, **model, **run, "DECISION": "passed", "PROMOTED": "true"}

    result = train_steps.result(env)

    assert result.outputs == {
        "model-version": "4",
        "run-id": "r1",
        "f1": "0.8",
        "promoted": "true",
        "decision": "passed",
    }
    assert result.summary == (
        "## Training: staging - promoted\n\n| | |\n|---|---|\n"
        "| Environment | `staging` (alias `purchase_predict@staging`) |\n"
        "| Code | `abc` |\n"
        "| MLflow run | `r1` |\n"
        "| Model version | 4 |\n"
        "| Test F1 | 0.8 (alias holder: 0.79) |\n"
        "| Decision | **passed** |\n"
    )


def test_a_dry_run_summary_says_what_would_run() -> None:
    env = {"MODE": "dry-run", "PLAN_KEDRO": "kedro run", "PLAN_REGISTER": "--environment staging"}
    summary = train_steps.result(env).summary
    assert "| Would run | `kedro run` then `register_model.py --environment staging` |" in summary
    assert "| Model version | - |" in summary


def test_the_command_line_refuses_with_one_annotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # (scripts/train_steps.py is this main; the act tests run it as train.yml does.)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROJECT_DIRECTORY", "absent")
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))

    assert train_steps.main(["settings"]) == 1
    assert capsys.readouterr().out == (
        "::error title=train::project-directory 'absent' is not a directory of the checkout\n"
    )
    assert not (tmp_path / "out").exists()
