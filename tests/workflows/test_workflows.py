"""Run the entry workflows with act for every trigger, in dry-run mode (no Google, no Docker).

Each run goes through the real call graph: the entry workflow's resolve job (scripts/branch_env.py
on the event payload), the reusable workflow (train.yml or deploy-api.yml) and the report job
that reads the reusable workflow's outputs. Only the Google/Docker steps are skipped by the
``PIPELINE_DRY_RUN`` repository variable.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from act_harness import ActRun

Act = Callable[..., ActRun]


def _report(run: ActRun) -> dict[str, str]:
    """The ``key=value`` pairs of the report job's REPORT line (the reusable workflow's outputs)."""
    lines = [line for line in run.lines("Report") if line.startswith("REPORT ")]
    assert len(lines) == 1, run.explain()
    return dict(pair.split("=", 1) for pair in lines[0].removeprefix("REPORT ").split())


def _image(project: dict[str, Any], environment: str, tag: str) -> str:
    env = project["environments"][environment]
    return (
        f"{env['region']}-docker.pkg.dev/PROJECT/{env['artifact_repository']}/"
        f"{project['image_name']}:{tag}"
    )


def _assert_deployed(
    run: ActRun, project: dict[str, Any], environment: str, git_sha: str, model_version: str = ""
) -> None:
    assert run.returncode == 0, run.explain()
    assert run.job("Resolve environment") == "success"
    assert run.job(f"Deploy API ({environment})") == "success"
    assert run.job("Report") == "success"
    report = _report(run)
    assert report == {
        "environment": environment,
        "result": "success",
        "decision": "dry-run",
        "git-sha": git_sha,
        "image": _image(project, environment, git_sha),
        "model-version": model_version,
        "revision": "",
        "url": "",
    }


def _assert_nothing_deployed(run: ActRun) -> None:
    assert run.returncode == 0, run.explain()
    assert run.job("Resolve environment") == "success"
    assert run.outputs("Resolve environment")["deploy"] == "false"
    assert run.job("Deploy") is None
    assert run.job("Report") is None
    assert "nothing to deploy" in run.summary("Resolve environment")


# --- API workflow: one test per trigger -------------------------------------------------------


def test_push_to_staging_deploys_the_pushed_commit(
    act: Act, project: dict[str, Any], pipeline_repo: tuple[Path, dict[str, str]]
) -> None:
    _, shas = pipeline_repo
    run = act("push", "api.yml", {"ref": "refs/heads/staging"})
    # act's github.sha is the copy's HEAD, the second commit.
    _assert_deployed(run, project, "staging", shas["second"])
    resolved = run.outputs("Resolve environment")
    assert resolved["service"] == project["environments"]["staging"]["service"]
    assert resolved["ref"] == shas["second"]


def test_push_to_master_deploys_to_production(
    act: Act, project: dict[str, Any], pipeline_repo: tuple[Path, dict[str, str]]
) -> None:
    _, shas = pipeline_repo
    run = act("push", "api.yml", {"ref": "refs/heads/master"})
    _assert_deployed(run, project, "production", shas["second"])
    summary = run.summary("Deploy API (production)")
    assert "## API deploy: production - dry-run" in summary
    assert project["environments"]["production"]["service"] in summary


def test_push_to_a_feature_branch_deploys_nothing(act: Act) -> None:
    run = act("push", "api.yml", {"ref": "refs/heads/feature/better-model"})
    _assert_nothing_deployed(run)


def test_workflow_run_success_deploys_the_trained_commit_not_github_sha(
    act: Act, project: dict[str, Any], pipeline_repo: tuple[Path, dict[str, str]]
) -> None:
    _, shas = pipeline_repo
    payload = {
        "workflow_run": {
            "name": "Training",
            "conclusion": "success",
            "head_branch": "staging",
            "head_sha": shas["first"],
            "event": "push",
        }
    }
    run = act("workflow_run", "api.yml", payload)
    _assert_deployed(run, project, "staging", shas["first"])
    assert shas["first"] != shas["second"]
    assert run.outputs("Resolve environment")["training-sha"] == shas["first"]


def test_workflow_run_failure_deploys_nothing(act: Act, pipeline_repo: tuple) -> None:
    _, shas = pipeline_repo
    payload = {
        "workflow_run": {
            "conclusion": "failure",
            "head_branch": "staging",
            "head_sha": shas["first"],
        }
    }
    run = act("workflow_run", "api.yml", payload)
    assert run.returncode == 0, run.explain()
    # The resolve job is skipped, so nothing after it runs either.
    assert run.results == {}


def test_workflow_run_from_an_unmapped_branch_deploys_nothing(
    act: Act, pipeline_repo: tuple
) -> None:
    _, shas = pipeline_repo
    payload = {
        "workflow_run": {
            "conclusion": "success",
            "head_branch": "feature/x",
            "head_sha": shas["first"],
        }
    }
    _assert_nothing_deployed(act("workflow_run", "api.yml", payload))


def test_repository_dispatch_deploys_the_promoted_version_from_the_environment_branch(
    act: Act, project: dict[str, Any], pipeline_repo: tuple[Path, dict[str, str]]
) -> None:
    _, shas = pipeline_repo
    training_sha = "1234567890abcdef1234567890abcdef12345678"
    payload = {
        "action": "model-promoted",
        "client_payload": {"environment": "staging", "model_version": "7", "sha": training_sha},
    }
    run = act("repository_dispatch", "api.yml", payload)
    # The staging branch is at the first commit of the copy.
    _assert_deployed(run, project, "staging", shas["first"], model_version="7")
    plan = run.outputs("Resolve environment")
    assert plan["training-sha"] == training_sha
    assert plan["ref"] == "staging"
    model = f"models:/{project['model_name']}/7"
    assert any(model in line for line in run.lines("Deploy API (staging)")), run.explain()


@pytest.mark.parametrize(
    ("client_payload", "message"),
    [
        ({"environment": "staging", "model_version": "latest"}, "client_payload.model_version"),
        ({"environment": "qa", "model_version": "3"}, "unknown environment 'qa'"),
        ({"environment": "staging", "model_version": "3", "sha": "abc"}, "client_payload.sha"),
    ],
)
def test_repository_dispatch_with_a_bad_payload_fails_clearly(
    act: Act, client_payload: dict[str, str], message: str
) -> None:
    run = act("repository_dispatch", "api.yml", {"client_payload": client_payload})
    assert run.returncode != 0
    assert run.job("Resolve environment") == "failure"
    assert run.job("Deploy") is None
    assert message in run.explain()


def test_workflow_dispatch_with_an_image_tag_plans_a_rollback_to_that_image(
    act: Act, project: dict[str, Any]
) -> None:
    old = "0123456789abcdef0123456789abcdef01234567"
    payload = {
        "ref": "refs/heads/master",
        "inputs": {"environment": "production", "image-tag": old, "model-version": ""},
    }
    run = act("workflow_dispatch", "api.yml", payload)
    # The deployed code is the image's commit, not the dispatching one.
    _assert_deployed(run, project, "production", old)
    assert run.outputs("Resolve environment")["image-tag"] == old
    # (The real rollback, without the dry run: test_cloud_run_deploy.py.)


def test_workflow_dispatch_for_an_unknown_environment_fails_clearly(act: Act) -> None:
    payload = {"ref": "refs/heads/master", "inputs": {"environment": "qa", "image-tag": ""}}
    run = act("workflow_dispatch", "api.yml", payload)
    assert run.returncode != 0
    assert run.job("Resolve environment") == "failure"
    assert "unknown environment 'qa'" in run.explain()


def test_deploy_outside_dry_run_requires_the_google_settings(act: Act) -> None:
    run = act("push", "api.yml", {"ref": "refs/heads/staging"}, variables={"PIPELINE_DRY_RUN": ""})
    assert run.returncode != 0
    assert run.job("Deploy API (staging)") == "failure"
    assert "set the GCP_PROJECT_ID variable" in run.explain()
    # The job's own result step still runs and says so (act then stops; GitHub runs the report).
    assert run.outputs("Deploy API (staging)")["decision"] == "failed"


# --- Training workflow -------------------------------------------------------------------------


def test_training_push_plans_training_and_promotion_for_the_branch_environment(
    act: Act, project: dict[str, Any]
) -> None:
    run = act("push", "training.yml", {"ref": "refs/heads/staging"})
    assert run.returncode == 0, run.explain()
    assert run.job("Train (staging)") == "success"
    plan = run.outputs("Train (staging)")
    assert plan["kedro"] == "kedro run"
    assert plan["register-args"] == (
        "--training-run-json purchase_predict/data/08_reporting/training_run.json "
        "--environment staging"
    )
    assert _report(run) == {
        "environment": "staging",
        "result": "success",
        "model-version": "",
        "promoted": "false",
        "decision": "dry-run",
    }
    alias = project["environments"]["staging"]["alias"]
    assert f"`{project['model_name']}@{alias}`" in run.summary("Train (staging)")


def test_training_dispatch_passes_its_inputs_to_kedro_and_the_gate(act: Act) -> None:
    payload = {
        "ref": "refs/heads/master",
        # Like GitHub's payload, event inputs are strings; the inputs context types them.
        "inputs": {"environment": "staging", "automl_max_evals": "5", "force": "true"},
    }
    run = act("workflow_dispatch", "training.yml", payload, variables={"KEDRO_ENV": "cloud"})
    assert run.returncode == 0, run.explain()
    plan = run.outputs("Train (staging)")
    assert plan["kedro"] == "kedro run --env cloud --params automl_max_evals=5"
    assert plan["register-args"].endswith("--environment staging --force")
    # Dispatched on master for staging: the API follows the branch, which maps elsewhere.
    assert run.outputs("Resolve environment", step="env")["environment"] == "staging"
    assert run.outputs("Resolve environment", step="branch")["environment"] == "production"


def test_training_on_a_feature_branch_trains_nothing(act: Act) -> None:
    run = act("push", "training.yml", {"ref": "refs/heads/feature/x"})
    assert run.returncode == 0, run.explain()
    assert run.outputs("Resolve environment")["deploy"] == "false"
    assert run.job("Train (") is None
    assert "nothing to train" in run.summary()


def test_training_rejects_a_bad_trial_count(act: Act) -> None:
    payload = {"ref": "refs/heads/staging", "inputs": {"automl_max_evals": "many"}}
    run = act("workflow_dispatch", "training.yml", payload)
    assert run.returncode != 0
    assert "automl_max_evals must be a positive integer, got 'many'" in run.explain()
