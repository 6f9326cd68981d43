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

from purchase_rig.act import REPOSITORY, ActRun, git, prepare_repo, run_act

Act = Callable[..., ActRun]
# What a real (not dry-run) deploy reads, as docs/gcp-setup.md sets it; CLOUD_RUN_SERVICE apart.
REAL_DEPLOY_VARIABLES = {
    "PIPELINE_DRY_RUN": "",
    "GCP_PROJECT_ID": "local-project",
    "GCP_WORKLOAD_IDENTITY_PROVIDER": (
        "projects/1/locations/global/workloadIdentityPools/github/providers/purchase-predict"
    ),
    "GCP_SERVICE_ACCOUNT": "deployer-staging@local-project.iam.gserviceaccount.com",
    "CLOUD_RUN_SERVICE_ACCOUNT": "api-staging@local-project.iam.gserviceaccount.com",
}


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


@pytest.mark.parametrize(("environment", "head"), [("staging", "first"), ("production", "second")])
def test_push_to_an_environment_branch_deploys_the_pushed_commit(
    act: Act,
    project: dict[str, Any],
    pipeline_repo: tuple[Path, dict[str, str]],
    environment: str,
    head: str,
) -> None:
    _, shas = pipeline_repo
    settings = project["environments"][environment]
    run = act("push", "api.yml", {"ref": f"refs/heads/{settings['branch']}"})
    # GITHUB_SHA of a push is the branch's new head: staging is at the first commit, master (the
    # production branch) at the second.
    _assert_deployed(run, project, environment, shas[head])
    resolved = run.outputs("Resolve environment")
    assert resolved["service"] == settings["service"]
    assert resolved["ref"] == shas[head]
    summary = run.summary(f"Deploy API ({environment})")
    assert f"## API deploy: {environment} - dry-run" in summary
    assert settings["service"] in summary


def test_push_to_a_feature_branch_deploys_nothing(act: Act) -> None:
    run = act("push", "api.yml", {"ref": "refs/heads/feature/better-model"})
    _assert_nothing_deployed(run)


def _training_run(head_sha: str, **fields: Any) -> dict[str, Any]:
    """A ``workflow_run`` payload of a completed Training run, shaped like GitHub's (the
    octokit/webhooks schema requires ``event``, ``head_repository``, ``head_branch``, ``head_sha``)."""
    run = {
        "name": "Training",
        "conclusion": "success",
        "event": "push",
        "head_branch": "staging",
        "head_sha": head_sha,
        "head_repository": {"full_name": REPOSITORY},
        **fields,
    }
    return {"action": "completed", "workflow_run": run}


def test_workflow_run_success_deploys_the_environment_branch(
    act: Act, project: dict[str, Any], pipeline_repo: tuple[Path, dict[str, str]]
) -> None:
    _, shas = pipeline_repo
    run = act("workflow_run", "api.yml", _training_run(shas["first"]))
    # staging is at the first commit, GITHUB_SHA (the default branch) at the second.
    _assert_deployed(run, project, "staging", shas["first"])
    assert shas["first"] != shas["second"]
    assert run.outputs("Resolve environment")["training-sha"] == shas["first"]


def test_workflow_run_builds_api_commits_pushed_while_training_ran(
    act_binary: str, project: dict[str, Any], tmp_path: Path
) -> None:
    # Training ran on staging's first commit; an API commit landed on staging meanwhile. The
    # deploy must build the branch's head, or it would roll that API commit back.
    repo = tmp_path / "repo"
    shas = prepare_repo(repo)
    git(repo, "checkout", "--quiet", "staging")
    (repo / "purchase_predict_api" / "CHANGES").write_text("API change during training\n")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--message", "API change on staging")
    newer = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "--quiet", "master")

    run = run_act(
        repo,
        "workflow_run",
        "api.yml",
        _training_run(shas["first"]),
        act=act_binary,
        work=tmp_path / "work",
        variables={"PIPELINE_DRY_RUN": "true"},
    )

    _assert_deployed(run, project, "staging", newer)
    plan = run.outputs("Resolve environment")
    assert (plan["ref"], plan["training-sha"]) == (newer, shas["first"])
    assert "moved on since Training ran" in run.summary("Resolve environment")


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        # A fork's pull request that adds a pull_request trigger to a workflow named Training,
        # on a fork branch named staging: GitHub runs the PR's workflow files and matches
        # `workflows: [Training]` by name (events doc, workflow_run).
        (
            {
                "event": "pull_request",
                "head_repository": {"full_name": "attacker/purchase-predict"},
            },
            "triggered by 'pull_request'",
        ),
        ({"event": "pull_request_target"}, "triggered by 'pull_request_target'"),
        (
            {"head_repository": {"full_name": "attacker/purchase-predict"}},
            "ran on attacker/purchase-predict's code",
        ),
    ],
)
def test_workflow_run_from_an_untrusted_run_deploys_nothing_and_says_why(
    act: Act, pipeline_repo: tuple[Path, dict[str, str]], fields: dict[str, Any], why: str
) -> None:
    _, shas = pipeline_repo
    run = act("workflow_run", "api.yml", _training_run(shas["first"], **fields))
    assert run.returncode == 0, run.explain()
    assert run.job("Resolve environment") == "success"
    assert run.outputs("Resolve environment", step="plan")["deploy"] == "false"
    assert run.job("Deploy") is None
    assert run.job("Report") is None
    summary = run.summary("Resolve environment")
    assert "## API deploy: skipped" in summary
    assert "untrusted trigger" in summary and why in summary, summary


def test_workflow_run_failure_deploys_nothing(act: Act, pipeline_repo: tuple) -> None:
    _, shas = pipeline_repo
    run = act("workflow_run", "api.yml", _training_run(shas["first"], conclusion="failure"))
    assert run.returncode == 0, run.explain()
    # The resolve job is skipped, so nothing after it runs either.
    assert run.results == {}


def test_workflow_run_from_an_unmapped_branch_deploys_nothing(
    act: Act, pipeline_repo: tuple
) -> None:
    _, shas = pipeline_repo
    run = act("workflow_run", "api.yml", _training_run(shas["first"], head_branch="feature/x"))
    _assert_nothing_deployed(run)


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
    assert plan["ref"] == shas["first"]
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


@pytest.mark.parametrize(
    "ref",
    [
        "master",  # another environment's branch
        "refs/pull/12/head",  # GitHub's ref of a pull request (a fork's included)
        "feature/x",
        "0123456789abcdef0123456789abcdef01234567",  # no such commit
    ],
)
def test_repository_dispatch_refuses_a_ref_off_the_environment_branch(act: Act, ref: str) -> None:
    payload = {"client_payload": {"environment": "staging", "model_version": "3", "ref": ref}}
    run = act("repository_dispatch", "api.yml", payload)
    assert run.returncode != 0
    assert run.job("Resolve environment") == "failure"
    assert run.job("Deploy") is None
    assert "client_payload.ref: " in run.explain()
    assert "## Refused: repository_dispatch" in run.summary("Resolve environment")


def test_repository_dispatch_accepts_a_commit_on_the_environment_branch(
    act: Act, project: dict[str, Any], pipeline_repo: tuple[Path, dict[str, str]]
) -> None:
    _, shas = pipeline_repo
    payload = {
        "client_payload": {"environment": "production", "model_version": "4", "ref": shas["first"]}
    }
    run = act("repository_dispatch", "api.yml", payload)
    _assert_deployed(run, project, "production", shas["first"], model_version="4")


def test_workflow_dispatch_of_another_branch_is_refused_unless_a_rollback(act: Act) -> None:
    # Run on master (production's branch) for staging: master's head is not on staging.
    payload = {"ref": "refs/heads/master", "inputs": {"environment": "staging", "image-tag": ""}}
    run = act("workflow_dispatch", "api.yml", payload)
    assert run.returncode != 0
    assert run.job("Resolve environment") == "failure"
    assert run.job("Deploy") is None
    assert "a manual run for 'staging' must run on its branch 'staging'" in run.explain()


def test_workflow_dispatch_on_the_environment_branch_deploys_it(
    act: Act, project: dict[str, Any], pipeline_repo: tuple[Path, dict[str, str]]
) -> None:
    _, shas = pipeline_repo
    payload = {"ref": "refs/heads/master", "inputs": {"environment": "production"}}
    _assert_deployed(
        act("workflow_dispatch", "api.yml", payload), project, "production", shas["second"]
    )


def test_a_push_cannot_point_its_environment_at_another_service(
    act_binary: str, project: dict[str, Any], tmp_path: Path
) -> None:
    # A push to staging edits pyproject.toml so that staging deploys into production's service;
    # the GitHub environment staging declares its own service (CLOUD_RUN_SERVICE).
    repo = tmp_path / "repo"
    prepare_repo(repo)
    staging = project["environments"]["staging"]["service"]
    production = project["environments"]["production"]["service"]
    git(repo, "checkout", "--quiet", "staging")
    config = repo / "pyproject.toml"
    text = config.read_text(encoding="utf-8")
    assert f'service = "{staging}"' in text
    # (Two environments may not share a service: production's is renamed out of the way.)
    text = text.replace(f'service = "{production}"\n', 'service = "renamed"\n')
    config.write_text(text.replace(f'service = "{staging}"', f'service = "{production}"'))
    git(repo, "commit", "--quiet", "--all", "--message", "staging deploys to production")
    git(repo, "checkout", "--quiet", "master")

    run = run_act(
        repo,
        "push",
        "api.yml",
        {"ref": "refs/heads/staging"},
        act=act_binary,
        work=tmp_path / "work",
        # Not a dry run: everything a real deploy needs is set, so only the check stops it.
        variables={**REAL_DEPLOY_VARIABLES, "CLOUD_RUN_SERVICE": staging},
    )

    assert run.returncode != 0
    assert run.job("Deploy API (staging)") == "failure"
    message = (
        f"maps environment staging to the Cloud Run service '{production}', but the GitHub "
        f"environment staging declares CLOUD_RUN_SERVICE='{staging}': refusing to deploy"
    )
    assert message in run.explain()
    # Refused in the settings, before any Google step ran.
    assert not any("auth stand-in" in line for line in run.lines("Deploy API")), run.explain()
    assert run.outputs("Deploy API (staging)")["decision"] == "failed"


def test_a_declared_service_that_agrees_deploys(act: Act, project: dict[str, Any]) -> None:
    staging = project["environments"]["staging"]["service"]
    run = act(
        "push", "api.yml", {"ref": "refs/heads/staging"}, variables={"CLOUD_RUN_SERVICE": staging}
    )
    assert run.returncode == 0, run.explain()
    assert _report(run)["decision"] == "dry-run"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {},
            "set the variable CLOUD_RUN_SERVICE=purchase-predict-api-staging on the GitHub environment staging",
        ),
        (
            {"CLOUD_RUN_SERVICE": "purchase-predict-api-staging"},
            "set the CLOUD_RUN_SERVICE_ACCOUNT variable (on the GitHub environment staging)",
        ),
    ],
)
def test_a_real_deploy_requires_the_environment_declarations(
    act: Act, variables: dict[str, str], message: str
) -> None:
    google = {
        key: value
        for key, value in REAL_DEPLOY_VARIABLES.items()
        if key not in ("CLOUD_RUN_SERVICE_ACCOUNT",)
    }
    run = act("push", "api.yml", {"ref": "refs/heads/staging"}, variables={**google, **variables})
    assert run.returncode != 0
    assert run.job("Deploy API (staging)") == "failure"
    # The whole log in the message: pytest would cut the right-hand side of ``in`` short.
    assert message in run.explain(), run.explain()


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
        "inputs": {"environment": "production", "automl-max-evals": "5", "force": "true"},
    }
    run = act("workflow_dispatch", "training.yml", payload, variables={"KEDRO_ENV": "cloud"})
    assert run.returncode == 0, run.explain()
    plan = run.outputs("Train (production)")
    assert plan["kedro"] == "kedro run --env cloud --params automl_max_evals=5"
    assert plan["register-args"].endswith("--environment production --force")
    assert run.outputs("Resolve environment", step="env")["environment"] == "production"
    assert run.outputs("Resolve environment", step="branch")["environment"] == "production"


def test_training_dispatch_for_an_environment_off_its_branch_is_refused(act: Act) -> None:
    # Promoting to staging's alias a model trained from code that staging does not hold.
    payload = {"ref": "refs/heads/master", "inputs": {"environment": "staging"}}
    run = act("workflow_dispatch", "training.yml", payload)
    assert run.returncode != 0
    assert run.job("Resolve environment") == "failure"
    assert run.job("Train (") is None
    assert "a manual run for 'staging' must run on its branch 'staging'" in run.explain()


def test_training_on_a_feature_branch_trains_nothing(act: Act) -> None:
    run = act("push", "training.yml", {"ref": "refs/heads/feature/x"})
    assert run.returncode == 0, run.explain()
    assert run.outputs("Resolve environment")["deploy"] == "false"
    assert run.job("Train (") is None
    assert "nothing to train" in run.summary()


def test_training_rejects_a_bad_trial_count(act: Act) -> None:
    payload = {"ref": "refs/heads/staging", "inputs": {"automl-max-evals": "many"}}
    run = act("workflow_dispatch", "training.yml", payload)
    assert run.returncode != 0
    assert "automl-max-evals must be a positive integer, got 'many'" in run.explain()
