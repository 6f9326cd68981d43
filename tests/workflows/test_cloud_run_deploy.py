"""Run actions/cloud-run-deploy, and deploy-api.yml's rollback path, with act against the Cloud
Run stand-in: the real gcloud CLI, revisions served by fake_docker.py instead of containers.

What is checked is the contract of the action: a new revision gets a tag and no traffic, is
smoke-tested on its tag URL with an ID token minted right before the smoke test, and only then
takes the traffic, after which the earlier deploys' tags go; a failed smoke test leaves traffic
(and tags) where they were and fails with the reason. The stand-in holds the service to what Cloud
Run documents: ID tokens expire, revision-level minimum instances stay warm on tagged revisions,
custom audiences belong to the whole service.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from purchase_contract.features import example_session
from purchase_contract.model_dir import ReferenceSample
from purchase_rig.act import ActRun, git, prepare_repo, project_settings, run_act
from purchase_rig.fake_docker import fake_probability

FIXTURES = Path(__file__).resolve().parent / "fixtures"
REGION = "europe-west1"
SERVICE = "smoke-svc"
GOOD_IMAGE = "127.0.0.1:5000/local-project/purchase-predict/api@sha256:" + "a" * 64
BROKEN_IMAGE = "127.0.0.1:5000/local-project/purchase-predict/broken@sha256:" + "b" * 64
CUSTOM_AUDIENCES = "run.googleapis.com/custom-audiences"
Deploy = Callable[..., ActRun]


SAMPLE = "reference-sample.json"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("deploy") / "repo"
    prepare_repo(repo, extra_workflows=(FIXTURES / "cloud-run-deploy.yml",))
    # A reference sample as training writes it, with what the fake revisions' model answers.
    sessions = [{**example_session(), "minute": minute} for minute in range(5)]
    probabilities = [fake_probability(s) for s in sessions]
    ReferenceSample("", "fixture-run", sessions, probabilities).write(repo / SAMPLE)
    git(repo, "add", SAMPLE)
    git(repo, "commit", "--quiet", "--message", "reference sample")
    return repo


def _deploy(
    repo: Path,
    act_binary: str,
    cloud_run: dict[str, str],
    work: Path,
    *,
    service: str,
    image: str,
    min_instances: str = "0",
    identity_token: str = "",
    **rollout: str,
) -> ActRun:
    """Run the fixture workflow: actions/cloud-run-deploy of ``image`` to ``service``;
    ``rollout`` are more of its inputs (``traffic_steps="10,50,100"``, ``faults=...``)."""
    inputs = {
        "service": service,
        "image": image,
        "git-sha": os.urandom(20).hex(),
        "min-instances": min_instances,
        "identity-token": identity_token,
        **{key.replace("_", "-"): value for key, value in rollout.items()},
    }
    return run_act(
        repo,
        "workflow_dispatch",
        "cloud-run-deploy.yml",
        {"inputs": inputs},
        act=act_binary,
        work=work,
        env=cloud_run,
    )


@pytest.fixture
def deploy(repo: Path, act_binary: str, cloud_run: dict[str, str], tmp_path: Path) -> Deploy:
    """``_deploy`` on the stand-in, working in this test's directory unless given ``work``."""

    def run(*, service: str, image: str, work: Path = tmp_path, **inputs: str) -> ActRun:
        return _deploy(repo, act_binary, cloud_run, work, service=service, image=image, **inputs)

    return run


def _result(run: ActRun) -> dict[str, str]:
    """The action's outputs, as the fixture workflow's last step prints them."""
    result = run.printed("RESULT")
    assert len(result) == 13, run.explain()
    return result


def _gcloud(cloud_run: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        ["gcloud", *args],
        env={**os.environ, **cloud_run},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def _describe(cloud_run: dict[str, str], service: str) -> dict[str, Any]:
    """The service, read back with gcloud from the stand-in."""
    return json.loads(
        _gcloud(
            cloud_run,
            "run",
            "services",
            "describe",
            service,
            "--region",
            REGION,
            "--format",
            "json",
        )
    )


def _traffic(cloud_run: dict[str, str], service: str) -> list[dict[str, Any]]:
    return _describe(cloud_run, service)["status"]["traffic"]


def _serving(cloud_run: dict[str, str], service: str) -> dict[str, int]:
    return {t["revisionName"]: t["percent"] for t in _traffic(cloud_run, service) if t["percent"]}


def _tags(cloud_run: dict[str, str], service: str) -> dict[str, str]:
    return {t["tag"]: t["revisionName"] for t in _traffic(cloud_run, service) if t.get("tag")}


def _standin_log(cloud_run: dict[str, str], since: str) -> list[dict[str, Any]]:
    """The stand-in's JSON log records from ``since`` on (conftest writes it beside the config)."""
    log = Path(cloud_run["CLOUDSDK_CONFIG"]).parent / "standin.log"
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [r for r in records if r["time"] >= since]


def _now() -> str:
    """The stand-in's timestamp format, for comparing with its log."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token_timeline(cloud_run: dict[str, str], since: str, service: str, tag_url: str) -> dict:
    """When the deploy reached Cloud Run, and what the smoke requests to ``tag_url`` carried."""
    records = _standin_log(cloud_run, since)
    # gcloud run deploy creates (POST) or replaces (PUT) the Knative service: the new revision.
    services = "/apis/serving.knative.dev/v1/namespaces/local-project/services"
    deploys = [
        r
        for r in records
        if r["msg"] == "request"
        and urlsplit(r["line"].split()[1]).path.endswith((services, f"{services}/{service}"))
        and r["line"].split()[0] in ('"POST', '"PUT')
    ]
    smoke = [
        r for r in records if r["msg"] == "data plane" and r["host"] == urlsplit(tag_url).hostname
    ]
    assert deploys and smoke, records
    return {"deployed": deploys[0]["time"], "smoke": smoke}


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


def _id_token(audience: str, issued: float, lifetime: float = 600) -> str:
    """A token shaped like the auth stand-in's (and Google's) ID tokens: a JWT, unsigned here."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    claims = {
        "iss": "https://accounts.google.com",
        "aud": audience,
        "iat": int(issued),
        "exp": int(issued + lifetime),
        "jti": "made-by-the-test",
    }
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c3RhbmQtaW4"


def test_first_deploy_is_tagged_smoke_tested_and_serves(first_deploy: dict[str, Any]) -> None:
    result = first_deploy["result"]
    assert result["first-deploy"] == "true"
    assert result["previous-traffic"] == "-"
    assert result["previous-revision"] == ""
    assert result["smoke-result"] == "passed"
    assert result["tag"].startswith("sha-") and len(result["tag"]) == 11
    assert result["tag-url"].startswith(f"http://{result['tag']}---{SERVICE}-")
    assert first_deploy["serving"] == {result["revision"]: 100}


def test_update_takes_traffic_only_after_its_smoke_test(
    first_deploy: dict[str, Any], deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    before = _serving(cloud_run, SERVICE)
    tags_before = _tags(cloud_run, SERVICE)
    since = _now()
    run = deploy(service=SERVICE, image=GOOD_IMAGE)
    assert run.returncode == 0, run.explain()
    result = _result(run)
    assert result["first-deploy"] == "false"
    assert result["previous-traffic"] == ",".join(f"{rev}={pct}" for rev, pct in before.items())
    assert result["revision"] not in before
    assert _serving(cloud_run, SERVICE) == {result["revision"]: 100}
    # Once traffic has moved, the earlier deploys' tags go; the previous revision stays, untagged,
    # as the rollback target named in the outputs.
    (previous,) = before
    assert result["previous-revision"] == previous
    assert _tags(cloud_run, SERVICE) == {result["tag"]: result["revision"]}
    assert set(result["removed-tags"].split(",")) == set(tags_before) - {result["tag"]}

    # The ID token was minted after gcloud run deploy reached Cloud Run and before the first
    # GET /ready: ID tokens live 10 minutes (google-github-actions/auth README), a build can not.
    timeline = _token_timeline(cloud_run, since, SERVICE, result["tag-url"])
    first_ready = timeline["smoke"][0]
    assert first_ready["path"] == "/ready"
    assert timeline["deployed"] < first_ready["token_jti"] < first_ready["time"], timeline
    assert first_ready["token_aud"] == SERVICE  # the service's custom audience
    # Every smoke request carried that token, and the revision got it as its Authorization header.
    assert {r["authorization_sha256"] for r in timeline["smoke"]} == {
        first_ready["authorization_sha256"]
    }
    predicted = [line for line in run.lines() if "/predict -> 200" in line]
    assert result["tag-url"] in predicted[0]
    assert first_ready["authorization_sha256"] in predicted[0]


def test_expired_id_token_fails_the_smoke_test_with_401(
    first_deploy: dict[str, Any], deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    # What a token minted before a build of more than 10 minutes meets: Cloud Run answers 401.
    before = _serving(cloud_run, SERVICE)
    stale = _id_token(SERVICE, issued=time.time() - 601)
    run = deploy(service=SERVICE, image=GOOD_IMAGE, identity_token=stale)
    assert run.returncode != 0
    assert _result(run)["smoke-result"].startswith("GET /ready answered 401"), run.explain()
    assert _serving(cloud_run, SERVICE) == before


def test_failed_smoke_test_leaves_traffic_where_it_was(
    first_deploy: dict[str, Any], deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    before = _serving(cloud_run, SERVICE)
    tags_before = _tags(cloud_run, SERVICE)
    run = deploy(service=SERVICE, image=BROKEN_IMAGE)
    assert run.returncode != 0
    result = _result(run)
    assert result["smoke-result"].startswith("GET /ready answered 503 for 4s")
    serving = ",".join(f"{rev}={pct}" for rev, pct in before.items())
    assert f"smoke test of {result['revision']} failed" in run.explain()
    assert f"traffic stays on {serving}" in run.explain()
    assert "### Smoke test failed" in run.summary()
    assert _serving(cloud_run, SERVICE) == before
    # No tag is removed: the serving revision keeps its own, the failed one keeps its for inspection.
    assert _tags(cloud_run, SERVICE) == {**tags_before, result["tag"]: result["revision"]}


def test_custom_audience_set_by_someone_else_survives_a_deploy(
    first_deploy: dict[str, Any], deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    # Custom audiences are service-level and apply to every revision at once; gcloud's
    # --set-custom-audiences "completely replace[s] the current custom audiences" (gcloud 528).
    partner = "https://partner.example/purchase-predict"
    _gcloud(
        cloud_run,
        "run",
        "services",
        "update",
        SERVICE,
        "--region",
        REGION,
        f"--add-custom-audiences={partner}",
    )
    run = deploy(service=SERVICE, image=GOOD_IMAGE)
    assert run.returncode == 0, run.explain()
    annotations = _describe(cloud_run, SERVICE)["metadata"]["annotations"]
    assert sorted(json.loads(annotations[CUSTOM_AUDIENCES])) == sorted([partner, SERVICE])


def _warm_instances(cloud_run: dict[str, str], service: str) -> dict[str, Any]:
    """The stand-in's count of the instances Cloud Run would keep warm (and bill) for ``service``."""
    proxy = f"http://{cloud_run['CLOUDSDK_PROXY_ADDRESS']}:{cloud_run['CLOUDSDK_PROXY_PORT']}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    url = f"http://run.local/standin/v1/namespaces/local-project/services/{service}:instances"
    with opener.open(url, timeout=10) as response:
        return json.load(response)


def test_three_deploys_with_min_one_keep_one_instance_warm(
    deploy: Deploy, cloud_run: dict[str, str], tmp_path: Path
) -> None:
    # Revision-level --min-instances stays warm on every tagged revision, even at 0% traffic
    # (cloud.google.com/run/docs/configuring/min-instances): with a new tag per deploy, each
    # old production revision would keep one instance billed. Service-level --min does not.
    service = "warm-svc"
    results = []
    for n in range(3):
        run = deploy(service=service, image=GOOD_IMAGE, min_instances="1", work=tmp_path / str(n))
        assert run.returncode == 0, run.explain()
        results.append(_result(run))
    warm = _warm_instances(cloud_run, service)
    assert warm == {"warmInstances": 1, "revisions": {results[-1]["revision"]: 1}}
    assert _tags(cloud_run, service) == {results[-1]["tag"]: results[-1]["revision"]}
    assert results[-1]["previous-revision"] == results[-2]["revision"]
    assert results[-1]["removed-tags"] == results[-2]["tag"]


def test_a_deploy_clears_what_revision_level_minimums_left_warm(
    deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    # A service the earlier action deployed: --min-instances 1 and a new tag on each revision.
    service = "legacy-svc"
    for n, traffic in ((1, []), (2, ["--no-traffic"])):
        tag = f"sha-{n}{n}{n}{n}{n}{n}{n}"
        _gcloud(
            cloud_run,
            *("run", "deploy", service, f"--image={GOOD_IMAGE}", f"--region={REGION}"),
            *(f"--tag={tag}", "--min-instances=1", *traffic),
        )
        _gcloud(
            cloud_run,
            "run",
            "services",
            "update-traffic",
            service,
            f"--region={REGION}",
            f"--to-tags={tag}=100",
        )
    assert _warm_instances(cloud_run, service)["warmInstances"] == 2
    run = deploy(service=service, image=GOOD_IMAGE, min_instances="1")
    assert run.returncode == 0, run.explain()
    result = _result(run)
    assert _warm_instances(cloud_run, service) == {
        "warmInstances": 1,
        "revisions": {result["revision"]: 1},
    }
    assert result["removed-tags"] == "sha-1111111,sha-2222222"


def _rollback(
    repo: Path, act_binary: str, cloud_run: dict[str, str], work: Path, image_tag: str
) -> ActRun:
    """A manual API run with ``image-tag``: deploy-api.yml redeploys that pushed image."""
    variables = {
        "GCP_PROJECT_ID": "local-project",
        "GCP_WORKLOAD_IDENTITY_PROVIDER": "projects/1/locations/global/workloadIdentityPools/gh/providers/repo",
        "GCP_SERVICE_ACCOUNT": "deployer-staging@local-project.iam.gserviceaccount.com",
        "ARTIFACT_REGISTRY_HOST": "127.0.0.1:5000",
        # What the GitHub environment staging declares (docs/gcp-setup.md).
        "CLOUD_RUN_SERVICE": project_settings()["environments"]["staging"]["service"],
        "CLOUD_RUN_SERVICE_ACCOUNT": "api-runtime-staging@local-project.iam.gserviceaccount.com",
        # The stand-in's metrics have no lag: each rollout step is observed for seconds.
        "ROLLOUT_OBSERVE_SECONDS": "2",
        "ROLLOUT_METRICS_DELAY": "0",
        "ROLLOUT_PROBE_RATE": "100",
    }
    payload = {
        "ref": "refs/heads/master",
        "inputs": {"environment": "staging", "image-tag": image_tag},
    }
    return run_act(
        repo,
        "workflow_dispatch",
        "api.yml",
        payload,
        act=act_binary,
        work=work,
        variables=variables,
        env=cloud_run,
    )


def test_api_rollback_redeploys_an_existing_image_through_deploy_api(
    repo: Path, act_binary: str, cloud_run: dict[str, str], tmp_path: Path, project: dict
) -> None:
    staging = project["environments"]["staging"]
    first = _rollback(repo, act_binary, cloud_run, tmp_path / "first", os.urandom(20).hex())
    assert first.returncode == 0, first.explain()
    earlier = first.outputs("Deploy API (staging)", step="result")

    image_tag = os.urandom(20).hex()
    since = _now()
    run = _rollback(repo, act_binary, cloud_run, tmp_path / "second", image_tag)
    assert run.returncode == 0, run.explain()
    deployed = run.outputs("Deploy API (staging)", step="result")
    assert deployed["decision"] == "deployed"
    assert deployed["image"] == (
        f"127.0.0.1:5000/local-project/{staging['artifact_repository']}/"
        f"{project['image_name']}:{image_tag}"
    )
    assert _serving(cloud_run, staging["service"]) == {deployed["revision"]: 100}
    # The smoke test used an ID token for the service's custom audience, minted after the deploy
    # (not by the job's first authentication, before the build: it lives 10 minutes).
    timeline = _token_timeline(cloud_run, since, staging["service"], deployed["tag-url"])
    first_ready = timeline["smoke"][0]
    assert first_ready["token_aud"] == staging["service"]
    assert timeline["deployed"] < first_ready["token_jti"] < first_ready["time"], timeline
    # The summary names the revision it replaced (untagged now) and the tag it removed.
    summary = run.summary("Deploy API")
    assert f"| Rollback target | `{earlier['revision']}` (" in summary, summary
    assert (
        f"| Tags removed | {earlier['tag-url'].split('---')[0].removeprefix('http://')} |"
        in summary
    )
    assert "now serves" in run.summary("Report")


def _rollout_rows(run: ActRun) -> list[str]:
    """The rows of the rollout's summary table, one per observed step (act reports the step
    summary twice)."""
    rows = [line for line in run.summary().splitlines() if re.match(r"^\| \d+% \|", line)]
    return list(dict.fromkeys(rows))


@pytest.fixture
def canary_service(deploy: Deploy) -> str:
    """A service serving one good revision, for a rollout to replace."""
    service = f"canary-{os.urandom(3).hex()}"
    run = deploy(service=service, image=GOOD_IMAGE)
    assert run.returncode == 0, run.explain()
    return service


def _refused_deploy(
    deploy: Deploy, cloud_run: dict[str, str], service: str, **inputs: str
) -> tuple[ActRun, dict[str, str]]:
    """A deploy of a good image started with faults that must fail: the job fails, the smoke
    test passed, and the traffic is where it was (or back there)."""
    before = _serving(cloud_run, service)
    run = deploy(service=service, image=GOOD_IMAGE, **inputs)
    assert run.returncode == 1, run.explain()
    result = _result(run)
    assert result["smoke-result"] == "passed"
    assert _serving(cloud_run, service) == before
    return run, result


def test_a_good_revision_goes_10_50_100_and_the_old_tag_is_removed(
    canary_service: str, deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    (old,) = _serving(cloud_run, canary_service)
    old_tags = set(_tags(cloud_run, canary_service))
    run = deploy(
        service=canary_service, image=GOOD_IMAGE, traffic_steps="10,50,100", reference_sample=SAMPLE
    )
    assert run.returncode == 0, run.explain()
    result = _result(run)
    assert result["sample-result"] == "passed"
    assert result["rollout-result"] == "promoted"
    assert result["rollout-report"] == "all steps passed"
    rows = _rollout_rows(run)
    assert [row.split("|")[1].strip() for row in rows] == ["10%", "50%", "100%"], run.summary()
    # Figures come from the stand-in's Cloud Monitoring: at 10 % and 50 % the old revision
    # served the rest of the probes (the split was real), at 100 % nothing.
    served = [[int(n) for n in re.findall(r"(\d+) requests", row)] for row in rows]
    assert all(new >= 20 for new, *_ in served), rows
    assert served[0][1] > served[0][0] and served[1][1] > 0, rows
    assert _serving(cloud_run, canary_service) == {result["revision"]: 100}
    assert _tags(cloud_run, canary_service) == {result["tag"]: result["revision"]}
    assert set(result["removed-tags"].split(",")) == old_tags
    assert result["previous-revision"] == old


def test_a_revision_failing_one_request_in_five_is_rolled_back_at_the_first_step(
    canary_service: str, deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    tags_before = _tags(cloud_run, canary_service)
    # The single smoke request passes: only the observed step sees the failures.
    run, result = _refused_deploy(
        deploy, cloud_run, canary_service, traffic_steps="10,50,100", faults="error-rate=0.2"
    )
    assert result["rollout-result"] == "rolled-back at 10%"
    rate = re.search(r"5xx error rate (\d+\.\d+)%", result["rollout-report"])
    assert rate and 15 <= float(rate.group(1)) <= 25, result["rollout-report"]
    assert "(limit <= 2.00%" in result["rollout-report"]
    # The new revision keeps its tag (no traffic) for inspection; no old tag is removed.
    assert _tags(cloud_run, canary_service) == {**tags_before, result["tag"]: result["revision"]}
    summary = run.summary()
    assert f"### Rollout of `{result['revision']}`: rolled back" in summary
    assert len(_rollout_rows(run)) == 1 and "FAIL: 5xx error rate" in summary
    assert "failed at 10%: 5xx error rate" in run.explain()


def test_a_revision_answering_differently_on_the_sample_never_gets_traffic(
    canary_service: str, deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    run, result = _refused_deploy(
        deploy,
        cloud_run,
        canary_service,
        traffic_steps="10,50,100",
        faults="skew=0.05",
        reference_sample=SAMPLE,
    )
    assert result["sample-result"].startswith("5 of 5 probabilities differ, largest gap 0.05")
    assert result["rollout-result"] == ""  # the rollout never started
    assert "### Reference sample failed" in run.summary()


def test_the_probes_alone_can_judge_a_step(
    canary_service: str, deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    # metrics: probes (a deployer without roles/monitoring.viewer): the same verdict from the
    # probes' own answers, attributed by the API's Purchase-Predict-Revision header.
    run, result = _refused_deploy(
        deploy,
        cloud_run,
        canary_service,
        traffic_steps="50,100",
        faults="error-rate=0.2",
        metrics="probes",
    )
    assert result["rollout-result"] == "rolled-back at 50%"
    assert "figures from the probes" in run.summary()


def test_a_rollback_to_a_revision_is_a_rollout_of_that_revision(
    canary_service: str, deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    (old,) = _serving(cloud_run, canary_service)
    newer = deploy(service=canary_service, image=GOOD_IMAGE)
    assert newer.returncode == 0, newer.explain()
    newer_tag = _result(newer)["tag"]

    # Back to the revision it replaced (untagged now): tagged, checked, then 50 %, 100 %.
    run = deploy(service=canary_service, image="", revision=old, traffic_steps="50,100")
    assert run.returncode == 0, run.explain()
    result = _result(run)
    tag = f"rollback-{old.removeprefix(canary_service + '-')}"
    assert (result["revision"], result["tag"], result["image"]) == (old, tag, GOOD_IMAGE)
    assert result["smoke-result"] == "passed" and result["rollout-result"] == "promoted"
    assert [row.split("|")[1].strip() for row in _rollout_rows(run)] == ["50%", "100%"]
    assert _serving(cloud_run, canary_service) == {old: 100}
    assert _tags(cloud_run, canary_service) == {tag: old}
    assert result["removed-tags"] == newer_tag
    # Nothing was deployed: the newest revision is still the one deployed before.
    assert (
        _describe(cloud_run, canary_service)["status"]["latestCreatedRevisionName"]
        == (_result(newer)["revision"])
    )

    again = deploy(service=canary_service, image="", revision=old)
    assert again.returncode == 1
    assert f"revision {old} already serves all traffic" in again.explain()


def test_a_rollback_to_a_bad_or_foreign_revision_moves_no_traffic(
    canary_service: str, deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    # A revision 120 ms slower on every request (a fault that cannot hit the single smoke
    # request by chance, as an error rate can): refused at its first step.
    _, failed = _refused_deploy(
        deploy, cloud_run, canary_service, traffic_steps="50,100", faults="latency-ms=120"
    )
    before = _serving(cloud_run, canary_service)
    # The same analysis judges a revision rolled back to: it goes again.
    run = deploy(
        service=canary_service, image="", revision=failed["revision"], traffic_steps="50,100"
    )
    assert run.returncode == 1, run.explain()
    result = _result(run)
    assert result["smoke-result"] == "passed"
    assert result["rollout-result"] == "rolled-back at 50%", result
    assert "p95 latency" in result["rollout-report"]
    assert _serving(cloud_run, canary_service) == before

    # A revision of another service is refused before anything changes.
    other = f"other-{os.urandom(3).hex()}"
    _gcloud(cloud_run, "run", "deploy", other, "--image", GOOD_IMAGE, "--region", REGION, "--quiet")
    (foreign,) = _serving(cloud_run, other)
    tags = _tags(cloud_run, canary_service)
    refused = deploy(service=canary_service, image="", revision=foreign)
    assert refused.returncode == 1
    assert f"revision {foreign} belongs to service '{other}', not to {canary_service}" in (
        refused.explain()
    )
    assert _serving(cloud_run, canary_service) == before
    assert _tags(cloud_run, canary_service) == tags

    # One that cannot be read (here: none such; on Cloud Run also a deployer that may not read
    # revisions) is left to Cloud Run, which refuses to tag it: nothing changes either.
    missing = f"{canary_service}-09999-zzz"
    refused = deploy(service=canary_service, image="", revision=missing)
    assert refused.returncode == 1
    log = refused.explain()
    assert f"cannot read revision {missing}" in log
    assert f"Cloud Run refused to tag revision {missing} of {canary_service}" in log
    assert f"Revision '{missing}' does not exist or is deleted" in log
    assert _serving(cloud_run, canary_service) == before
    assert _tags(cloud_run, canary_service) == tags


def test_a_revision_slower_than_the_one_it_replaces_is_rolled_back(
    canary_service: str, deploy: Deploy, cloud_run: dict[str, str]
) -> None:
    # Every /predict of the new revision takes 120 ms more: its p95 is judged against the
    # baseline's (x1.5, or +50 ms), from the stand-in's request_latencies distribution.
    run, result = _refused_deploy(
        deploy, cloud_run, canary_service, traffic_steps="50,100", faults="latency-ms=120"
    )
    assert result["rollout-result"] == "rolled-back at 50%", result
    assert "p95 latency" in result["rollout-report"], result["rollout-report"]
    assert "5xx error rate" not in result["rollout-report"]
    assert "FAIL: p95 latency" in run.summary()
