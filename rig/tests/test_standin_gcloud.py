"""The real gcloud CLI against the Cloud Run stand-in, with the fake docker CLI as its data
plane (no Docker engine): deploy, a tagged no-traffic revision, describe, update-traffic, the
data plane through the proxy and the warm-instances read-out."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator

import pytest

from purchase_rig.standin_server import standin_with_fake_docker

REGION = "europe-west1"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not shutil.which("gcloud"):
        pytest.skip("needs the gcloud CLI")
    with standin_with_fake_docker(tmp_path_factory.mktemp("standin")) as (env, aimed, port):
        yield {**env, **aimed, "STANDIN_PORT": str(port)}


def gcloud(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gcloud", *args, f"--region={REGION}", "--quiet"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def describe(env: dict[str, str]) -> dict:
    done = gcloud(env, "run", "services", "describe", "svc", "--format=json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def get(env: dict[str, str], url: str) -> tuple[int, dict[str, str]]:
    proxy = f"http://127.0.0.1:{env['STANDIN_PORT']}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    with opener.open(url, timeout=10) as resp:
        return resp.status, dict(resp.headers)


def test_deploy_tag_and_move_traffic(standin: dict[str, str]) -> None:
    first = gcloud(standin, "run", "deploy", "svc", "--image=registry.local/api:one",
                   "--port=8080", "--min-instances=1", "--set-env-vars=A=1")  # fmt: skip
    assert first.returncode == 0, first.stderr
    svc = describe(standin)
    first_rev = svc["status"]["latestReadyRevisionName"]
    assert svc["status"]["traffic"][0]["revisionName"] == first_rev
    status, headers = get(standin, svc["status"]["url"] + "/ready")
    assert status == 200
    assert headers["X-Serving-Revision"] == first_rev

    second = gcloud(standin, "run", "deploy", "svc", "--image=registry.local/api:two",
                    "--no-traffic", "--tag=candidate")  # fmt: skip
    assert second.returncode == 0, second.stderr
    svc = describe(standin)
    second_rev = svc["status"]["latestCreatedRevisionName"]
    assert second_rev != first_rev
    tagged = next(t for t in svc["status"]["traffic"] if t.get("tag") == "candidate")
    assert tagged["revisionName"] == second_rev
    _, headers = get(standin, tagged["url"] + "/ready")
    assert headers["X-Serving-Revision"] == second_rev

    warm = get_json(standin, "svc")
    assert warm == {"warmInstances": 1, "revisions": {second_rev: 1}}, (first_rev, warm)

    moved = gcloud(standin, "run", "services", "update-traffic", "svc", "--to-latest")
    assert moved.returncode == 0, moved.stderr
    svc = describe(standin)
    assert [t["percent"] for t in svc["status"]["traffic"] if t["revisionName"] == second_rev]
    _, headers = get(standin, svc["status"]["url"] + "/ready")
    assert headers["X-Serving-Revision"] == second_rev

    revision = gcloud(standin, "run", "revisions", "describe", first_rev, "--format=json")
    assert revision.returncode == 0, revision.stderr
    assert json.loads(revision.stdout)["spec"]["containers"][0]["image"].endswith("api:one")


def get_json(env: dict[str, str], service: str) -> dict:
    proxy = f"http://127.0.0.1:{env['STANDIN_PORT']}"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
    url = f"http://run.local/standin/v1/namespaces/local-project/services/{service}:instances"
    with opener.open(url, timeout=10) as resp:
        return json.loads(resp.read())


def test_traffic_reaches_only_the_services_own_revisions(standin: dict[str, str]) -> None:
    # Cloud Run refuses a traffic target that is not one of the service's revisions ("Revision
    # 'x' does not exist or is deleted"), and the refused update changes nothing.
    other = gcloud(standin, "run", "deploy", "other-svc", "--image=registry.local/api:other")
    assert other.returncode == 0, other.stderr
    foreign = json.loads(
        gcloud(standin, "run", "services", "describe", "other-svc", "--format=json").stdout
    )["status"]["latestReadyRevisionName"]
    before = describe(standin)["status"]["traffic"]
    for flags in ([f"--to-revisions={foreign}=100"], [f"--update-tags=stolen={foreign}"]):
        refused = gcloud(standin, "run", "services", "update-traffic", "svc", *flags)
        assert refused.returncode != 0, flags
        assert f"Revision '{foreign}' does not exist or is deleted" in refused.stderr, (
            refused.stderr
        )
        assert describe(standin)["status"]["traffic"] == before

    # One of its own older revisions can be tagged without moving traffic (a rollback's start).
    oldest = sorted(t["revisionName"] for t in before)[0]
    serving = {t["revisionName"]: t["percent"] for t in before if t["percent"]}
    tagged = gcloud(
        standin, "run", "services", "update-traffic", "svc", f"--update-tags=back={oldest}"
    )
    assert tagged.returncode == 0, tagged.stderr
    traffic = describe(standin)["status"]["traffic"]
    assert {t["revisionName"]: t["percent"] for t in traffic if t["percent"]} == serving
    back = next(t for t in traffic if t.get("tag") == "back")
    assert back["revisionName"] == oldest and not back.get("percent")
    status, headers = get(standin, back["url"] + "/ready")
    assert status == 200 and headers["X-Serving-Revision"] == oldest

    # Where a rollback's revision name comes from: gcloud run revisions list --service.
    listed = gcloud(standin, "run", "revisions", "list", "--service=svc", "--format=json")
    assert listed.returncode == 0, listed.stderr
    names = {r["metadata"]["name"] for r in json.loads(listed.stdout)}
    assert {t["revisionName"] for t in before} < names, names  # with the untagged first one
    assert foreign not in names and all(name.startswith("svc-") for name in names), names
