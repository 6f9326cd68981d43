"""Run actions/cloud-run-deploy, and deploy-api.yml's rollback path, with act against the Cloud
Run stand-in: the real gcloud CLI, revisions served by fake_docker.py instead of containers.

What is checked is the contract of the action: a new revision gets a tag and no traffic, is
smoke-tested on its tag URL with a bearer token, and only then takes the traffic; a failed smoke
test leaves traffic where it was and fails with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from act_harness import ActRun, prepare_repo, run_act

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REGION = "europe-west1"
SERVICE = "smoke-svc"
GOOD_IMAGE = "127.0.0.1:5000/local-project/purchase-predict/api@sha256:" + "a" * 64
BROKEN_IMAGE = "127.0.0.1:5000/local-project/purchase-predict/broken@sha256:" + "b" * 64


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("deploy") / "repo"
    prepare_repo(repo, extra_workflows=(FIXTURES / "cloud-run-deploy.yml",))
    return repo


def _deploy(
    repo: Path, act_binary: str, cloud_run: dict[str, str], work: Path, *, service: str, image: str
) -> ActRun:
    """Run the fixture workflow: actions/cloud-run-deploy of ``image`` to ``service``."""
    inputs = {"service": service, "image": image, "git-sha": os.urandom(20).hex()}
    return run_act(
        repo,
        "workflow_dispatch",
        "cloud-run-deploy.yml",
        {"inputs": inputs},
        act=act_binary,
        work=work,
        env=cloud_run,
    )


def _result(run: ActRun) -> dict[str, str]:
    """The action's outputs, as the fixture workflow's last step prints them."""
    pairs = [
        line.removeprefix("RESULT ").split("=", 1)
        for line in run.lines()
        if line.startswith("RESULT ")
    ]
    assert len(pairs) == 7, run.explain()
    return {key.lower().replace("_", "-"): value for key, value in pairs}


def _traffic(cloud_run: dict[str, str], service: str) -> list[dict[str, Any]]:
    """status.traffic of the service, read back with gcloud from the stand-in."""
    described = subprocess.run(
        ["gcloud", "run", "services", "describe", service, "--region", REGION, "--format", "json"],
        env={**os.environ, **cloud_run},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(described.stdout)["status"]["traffic"]


def _serving(cloud_run: dict[str, str], service: str) -> dict[str, int]:
    return {t["revisionName"]: t["percent"] for t in _traffic(cloud_run, service) if t["percent"]}


@pytest.fixture(scope="module")
def first_deploy(
    repo: Path, act_binary: str, cloud_run: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The service's first deploy (the other tests deploy on top of it), and its traffic then."""
    work = tmp_path_factory.mktemp("first")
    run = _deploy(repo, act_binary, cloud_run, work, service=SERVICE, image=GOOD_IMAGE)
    assert run.returncode == 0, run.explain()
    return {"result": _result(run), "serving": _serving(cloud_run, SERVICE)}


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_first_deploy_is_tagged_smoke_tested_and_serves(first_deploy: dict[str, Any]) -> None:
    result = first_deploy["result"]
    assert result["first-deploy"] == "true"
    assert result["previous-traffic"] == "-"
    assert result["smoke-result"] == "passed"
    assert result["tag"].startswith("sha-") and len(result["tag"]) == 11
    assert result["tag-url"].startswith(f"http://{result['tag']}---{SERVICE}-")
    assert first_deploy["serving"] == {result["revision"]: 100}


def test_update_takes_traffic_only_after_its_smoke_test(
    first_deploy: dict[str, Any],
    repo: Path,
    act_binary: str,
    cloud_run: dict[str, str],
    tmp_path: Path,
) -> None:
    before = _serving(cloud_run, SERVICE)
    run = _deploy(repo, act_binary, cloud_run, tmp_path, service=SERVICE, image=GOOD_IMAGE)
    assert run.returncode == 0, run.explain()
    result = _result(run)
    assert result["first-deploy"] == "false"
    assert result["previous-traffic"] == ",".join(f"{rev}={pct}" for rev, pct in before.items())
    assert result["revision"] not in before
    assert _serving(cloud_run, SERVICE) == {result["revision"]: 100}
    # The smoke test called /predict on the tag URL with the token for the custom audience.
    predicted = [line for line in run.lines() if "/predict -> 200" in line]
    assert result["tag-url"] in predicted[0]
    assert _sha256(f"Bearer token-for-{SERVICE}") in predicted[0]
    tagged = {t.get("tag"): t["revisionName"] for t in _traffic(cloud_run, SERVICE)}
    assert tagged[result["tag"]] == result["revision"]


def test_failed_smoke_test_leaves_traffic_where_it_was(
    first_deploy: dict[str, Any],
    repo: Path,
    act_binary: str,
    cloud_run: dict[str, str],
    tmp_path: Path,
) -> None:
    before = _serving(cloud_run, SERVICE)
    run = _deploy(repo, act_binary, cloud_run, tmp_path, service=SERVICE, image=BROKEN_IMAGE)
    assert run.returncode != 0
    result = _result(run)
    assert result["smoke-result"].startswith("GET /ready answered 503 for 4s")
    serving = ",".join(f"{rev}={pct}" for rev, pct in before.items())
    assert f"smoke test of {result['revision']} failed" in run.explain()
    assert f"traffic stays on {serving}" in run.explain()
    assert "### Smoke test failed" in run.summary()
    assert _serving(cloud_run, SERVICE) == before


def test_api_rollback_redeploys_an_existing_image_through_deploy_api(
    repo: Path, act_binary: str, cloud_run: dict[str, str], tmp_path: Path, project: dict
) -> None:
    image_tag = os.urandom(20).hex()
    variables = {
        "GCP_PROJECT_ID": "local-project",
        "GCP_WORKLOAD_IDENTITY_PROVIDER": "projects/1/locations/global/workloadIdentityPools/gh/providers/repo",
        "GCP_SERVICE_ACCOUNT": "deployer@local-project.iam.gserviceaccount.com",
        "ARTIFACT_REGISTRY_HOST": "127.0.0.1:5000",
    }
    payload = {
        "ref": "refs/heads/master",
        "inputs": {"environment": "staging", "image-tag": image_tag},
    }
    run = run_act(
        repo,
        "workflow_dispatch",
        "api.yml",
        payload,
        act=act_binary,
        work=tmp_path,
        variables=variables,
        env=cloud_run,
    )
    assert run.returncode == 0, run.explain()
    staging = project["environments"]["staging"]
    deployed = run.outputs("Deploy API (staging)", step="result")
    assert deployed["decision"] == "deployed"
    assert deployed["image"] == (
        f"127.0.0.1:5000/local-project/{staging['artifact_repository']}/"
        f"{project['image_name']}:{image_tag}"
    )
    assert _serving(cloud_run, staging["service"]) == {deployed["revision"]: 100}
    # The smoke test used the ID token the auth action minted for the service's audience.
    token_digest = _sha256(f"Bearer standin-id-token-for-{staging['service']}")
    assert any(token_digest in line for line in run.lines()), run.explain()
    assert "now serves" in run.summary("Report")
