"""purchase_delivery.deploy_steps: deploy-api.yml's Settings (plan, refusals, smoke request)
and Result (decision, outputs, summary) steps, through the functions and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from purchase_contract.features import example_session
from purchase_delivery import deploy_steps
from purchase_delivery.workflow_step import StepRefused

REPO_ROOT = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
# What the workflow's Settings step passes for a dry run on staging (no Google settings).
DRY_RUN = {
    "DRY_RUN": "true",
    "SERVICE": "api-staging",
    "ENVIRONMENT": "staging",
    "REGION": "europe-west1",
    "ARTIFACT_REPOSITORY": "images",
    "IMAGE_NAME": "api",
    "MODEL_NAME": "purchase_predict",
    "ALIAS": "staging",
    "GIT_SHA": SHA,
}
# Everything a real deploy needs, as the GitHub environment and the variables give it.
REAL = {
    **DRY_RUN,
    "DRY_RUN": "false",
    "PROJECT_ID": "my-project",
    "WORKLOAD_IDENTITY_PROVIDER": "projects/1/locations/global/workloadIdentityPools/gh/providers/r",
    "SERVICE_ACCOUNT": "deployer@my-project.iam.gserviceaccount.com",
    "RUNTIME_SERVICE_ACCOUNT": "runtime@my-project.iam.gserviceaccount.com",
    "DECLARED_SERVICE": "api-staging",
}


@pytest.fixture
def runner_temp(tmp_path: Path) -> dict[str, str]:
    return {"RUNNER_TEMP": str(tmp_path)}


def test_a_dry_run_plans_the_image_and_the_alias_without_google_settings(runner_temp) -> None:
    result = deploy_steps.settings({**DRY_RUN, **runner_temp})

    out = result.outputs
    assert out["mode"] == "dry-run"
    assert out["image"] == f"europe-west1-docker.pkg.dev/PROJECT/images/api:{SHA}"
    assert (out["image-tag"], out["model-uri"]) == (SHA, "models:/purchase_predict@staging")
    assert (out["project"], out["flags"]) == ("", "--remove-env-vars=INJECT_FAULTS")
    assert result.log == [f"mode dry-run: models:/purchase_predict@staging -> {out['image']}"]


def test_a_real_build_names_the_project_registry_version_and_runtime_identity(runner_temp) -> None:
    env = {**REAL, **runner_temp, "REGISTRY": "mirror.local:5000", "MODEL_VERSION": "7"}

    out = deploy_steps.settings(env).outputs

    assert out["mode"] == "build"
    assert out["image"] == f"mirror.local:5000/my-project/images/api:{SHA}"
    assert out["model-uri"] == "models:/purchase_predict/7"
    # INJECT_FAULTS is removed on every deploy that does not set it: a faulty deploy's
    # variable would otherwise outlive it (gcloud keeps a service's variables).
    assert out["flags"] == (
        "--service-account=runtime@my-project.iam.gserviceaccount.com"
        " --remove-env-vars=INJECT_FAULTS"
    )
    assert out["service-account"] == REAL["SERVICE_ACCOUNT"]


def test_faults_are_deployed_only_where_the_configuration_allows_them(runner_temp) -> None:
    faulty = {**REAL, **runner_temp, "INJECT_FAULTS": "error-rate=0.2, latency-ms=100"}
    with pytest.raises(StepRefused, match="environment staging does not allow fault injection"):
        deploy_steps.settings(faulty)
    out = deploy_steps.settings({**faulty, "ALLOW_FAULTS": "true"}).outputs
    # One word (the flags are split on spaces), gcloud's ^|^ delimiter keeps the commas.
    assert out["flags"].split()[-1] == (
        "--update-env-vars=^|^INJECT_FAULTS=error-rate=0.2,latency-ms=100"
    )


def test_an_image_tag_is_a_rollback_to_that_image(runner_temp) -> None:
    other = "f" * 40
    out = deploy_steps.settings({**REAL, **runner_temp, "IMAGE_TAG": other}).outputs
    assert (out["mode"], out["image-tag"]) == ("rollback", other)
    assert out["image"].endswith(f"/api:{other}")


def test_a_revision_is_a_rollback_that_changes_nothing_but_traffic(runner_temp) -> None:
    faulty = {**REAL, **runner_temp, "REVISION": "api-staging-00042-abc", "INJECT_FAULTS": "x"}
    out = deploy_steps.settings(faulty).outputs
    assert (out["mode"], out["revision"], out["image"], out["image-tag"]) == (
        "revision",
        "api-staging-00042-abc",
        "",
        "",
    )
    # Its account and environment are the revision's own: no flag could change them.
    assert out["flags"] == ""
    summary = deploy_steps.result(
        {"MODE": "revision", "TO_REVISION": "api-staging-00042-abc", "DEPLOY_OUTCOME": "success"}
    ).summary
    assert (
        "| Model | rollback to the revision `api-staging-00042-abc`: the model baked into its "
        "image |" in summary
    )
    assert "| Code | - (the revision's image) |" in summary


def test_gcloud_s_own_project_stands_in_for_the_variable(runner_temp) -> None:
    env = {**REAL, **runner_temp, "PROJECT_ID": "", "CLOUDSDK_CORE_PROJECT": "from-gcloud"}
    assert deploy_steps.settings(env).outputs["project"] == "from-gcloud"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"IMAGE_TAG": "abc123"}, "image-tag must be a full 40-character commit SHA"),
        ({"MODEL_VERSION": "v3"}, "model-version must be a number, got 'v3'"),
        ({"REVISION": "Api-1"}, "revision must be a Cloud Run revision name"),
        ({"REVISION": "api-1", "MODEL_VERSION": "3"}, "give neither image-tag nor model-version"),
        ({"REVISION": "api-1", "IMAGE_TAG": "f" * 40}, "give neither image-tag nor model-version"),
        (
            {"DECLARED_SERVICE": "api-production"},
            "the code maps environment staging to the Cloud Run service 'api-staging', but the "
            "GitHub environment staging declares CLOUD_RUN_SERVICE='api-production': refusing",
        ),
        ({"PROJECT_ID": ""}, "set the GCP_PROJECT_ID variable or the gcp-project-id input"),
        ({"WORKLOAD_IDENTITY_PROVIDER": ""}, "set the GCP_WORKLOAD_IDENTITY_PROVIDER variable"),
        ({"SERVICE_ACCOUNT": ""}, "set the GCP_SERVICE_ACCOUNT variable"),
        (
            {"DECLARED_SERVICE": ""},
            "set the variable CLOUD_RUN_SERVICE=api-staging on the GitHub environment staging",
        ),
        (
            {"RUNTIME_SERVICE_ACCOUNT": ""},
            "set the CLOUD_RUN_SERVICE_ACCOUNT variable (on the GitHub environment staging)",
        ),
    ],
    ids=[
        "image-tag",
        "model-version",
        "revision-name",
        "revision-with-version",
        "revision-with-image",
        "service",
        "project",
        "provider",
        "deployer",
        "declared",
        "runtime",
    ],
)
def test_a_real_deploy_refuses_what_it_cannot_use(runner_temp, change, message) -> None:
    with pytest.raises(StepRefused) as refused:
        deploy_steps.settings({**REAL, **runner_temp, **change})
    assert message in str(refused.value)


def test_a_dry_run_still_refuses_a_service_its_environment_does_not_declare(runner_temp) -> None:
    env = {**DRY_RUN, **runner_temp, "DECLARED_SERVICE": "elsewhere"}
    with pytest.raises(StepRefused, match="refusing to deploy"):
        deploy_steps.settings(env)


def test_without_a_smoke_request_the_contract_example_is_written_to_runner_temp(
    runner_temp,
) -> None:
    path = Path(deploy_steps.settings({**DRY_RUN, **runner_temp}).outputs["smoke-request"])

    assert path == Path(runner_temp["RUNNER_TEMP"]) / "smoke-request.json"
    assert json.loads(path.read_text()) == example_session()


def test_a_given_smoke_request_is_sent_as_it_is(tmp_path, runner_temp) -> None:
    # actions/check-layout has checked it holds a JSON object (tests/scripts/test_check_layout.py).
    body = tmp_path / "body.json"
    out = deploy_steps.settings({**DRY_RUN, **runner_temp, "SMOKE_REQUEST": str(body)}).outputs
    assert out["smoke-request"] == str(body)
    assert not (Path(runner_temp["RUNNER_TEMP"]) / "smoke-request.json").exists()


# --- result ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "decision"),
    [
        ({"MODE": "dry-run", "DEPLOY_OUTCOME": ""}, "dry-run"),
        ({"MODE": "build", "DEPLOY_OUTCOME": "success", "SMOKE_RESULT": "passed"}, "deployed"),
        (
            {"MODE": "build", "DEPLOY_OUTCOME": "failure", "SMOKE_RESULT": "ready: 503"},
            "smoke-test-failed",
        ),
        ({"MODE": "build", "DEPLOY_OUTCOME": "failure", "SMOKE_RESULT": ""}, "failed"),
        ({"MODE": "", "DEPLOY_OUTCOME": ""}, "failed"),
        (
            {"DEPLOY_OUTCOME": "failure", "SMOKE_RESULT": "passed", "SAMPLE_RESULT": "3 of 20"},
            "sample-failed",
        ),
        (
            {
                "DEPLOY_OUTCOME": "failure",
                "SMOKE_RESULT": "passed",
                "SAMPLE_RESULT": "passed",
                "ROLLOUT_RESULT": "rolled-back at 10%",
            },
            "rolled-back",
        ),
    ],
    ids=["dry-run", "deployed", "smoke", "deploy-failed", "settings-refused", "sample", "rollout"],
)
def test_the_decision(env: dict[str, str], decision: str) -> None:
    result = deploy_steps.result(env)
    assert result.outputs["decision"] == decision
    assert result.summary.startswith(f"## API deploy: ? - {decision}\n")
    assert result.log == [f"decision: {decision}"]


def test_a_deployed_summary_names_the_model_the_revision_and_the_rollback_target() -> None:
    env = {
        "ENVIRONMENT": "staging",
        "SERVICE": "api-staging",
        "REGION": "europe-west1",
        "MODE": "build",
        "GIT_SHA": SHA,
        "MODEL_URI": "models:/purchase_predict@staging",
        "MODEL_VERSION": "4",
        "MODEL_RUN": "r1",
        "MODEL_F1": "0.81",
        "IMAGE": "host/p/images/api@sha256:00",
        "DIGEST": "sha256:00",
        "DEPLOY_OUTCOME": "success",
        "SMOKE_RESULT": "passed",
        "URL": "https://api-staging.run.app",
        "TAG_URL": "https://sha-0123456---api-staging.run.app",
        "REVISION": "api-staging-00002",
        "PREVIOUS_REVISION": "api-staging-00001",
        "PREVIOUS_TRAFFIC": "api-staging-00001=100",
        "REMOVED_TAGS": "sha-aaaaaaa",
    }

    result = deploy_steps.result(env)

    assert result.outputs == {
        "decision": "deployed",
        "url": env["URL"],
        "tag-url": env["TAG_URL"],
        "revision": env["REVISION"],
        "image": env["IMAGE"],
        "digest": env["DIGEST"],
        "model-version": "4",
    }
    summary = result.summary
    assert summary.startswith("## API deploy: staging - deployed\n\n| | |\n|---|---|\n")
    assert (
        "| Model | `models:/purchase_predict@staging` -> version 4, test F1 0.81 (MLflow run `r1`) |"
        in summary
    )
    assert (
        "| Rollback target | `api-staging-00001` (`gcloud run services update-traffic api-staging "
        "--region europe-west1 --to-revisions api-staging-00001=100`) |" in summary
    )
    assert "| Tags removed | sha-aaaaaaa |" in summary
    assert "| Decision | **deployed** (smoke test: passed) |" in summary


def test_a_failed_or_rollback_summary_has_no_rollback_target_and_says_rollback() -> None:
    summary = deploy_steps.result(
        {"MODE": "rollback", "DEPLOY_OUTCOME": "failure", "PREVIOUS_REVISION": "r-1"}
    ).summary
    assert "| Rollback target | - |" in summary
    assert "| Model | rollback: the model baked into that image |" in summary
    assert "| Revision | `-` (tag URL -) |" in summary


# --- command line ---------------------------------------------------------------------------


def _cli(step: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    files = {"GITHUB_OUTPUT": tmp_path / "output", "GITHUB_STEP_SUMMARY": tmp_path / "summary"}
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "deploy_steps.py"), step],
        env={**env, **{name: str(path) for name, path in files.items()}, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_settings_command_writes_the_outputs_and_one_plan_line(tmp_path: Path) -> None:
    done = _cli("settings", {**DRY_RUN, "RUNNER_TEMP": str(tmp_path)}, tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("mode dry-run: models:/purchase_predict@staging -> ")
    written = dict(line.split("=", 1) for line in (tmp_path / "output").read_text().splitlines())
    assert written["mode"] == "dry-run"
    assert Path(written["smoke-request"]).is_file()


def test_a_refusal_is_one_error_annotation_and_exit_1(tmp_path: Path) -> None:
    done = _cli("settings", {**REAL, "PROJECT_ID": "", "RUNNER_TEMP": str(tmp_path)}, tmp_path)

    assert done.returncode == 1
    assert done.stdout == (
        "::error title=deploy-api::set the GCP_PROJECT_ID variable or the gcp-project-id input\n"
    )
    assert not (tmp_path / "output").exists()


def test_the_result_command_appends_the_summary(tmp_path: Path) -> None:
    done = _cli("result", {"MODE": "dry-run", "ENVIRONMENT": "staging"}, tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout == "decision: dry-run\n"
    assert (tmp_path / "summary").read_text().startswith("## API deploy: staging - dry-run\n")


def test_help_names_the_steps(tmp_path: Path) -> None:
    done = _cli("--help", {}, tmp_path)
    assert done.returncode == 0
    assert "settings" in done.stdout and "result" in done.stdout
