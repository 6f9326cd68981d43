"""The real gcloud CLI against the project's Cloud Run stand-in, with real containers."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .conftest import assert_loopback_only, revision_port, run

pytestmark = pytest.mark.e2e
SERVICE = "standin-check"
REGION = "europe-west1"
DOCKERFILE = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
RUN mkdir /w && echo {body} > /w/index.html
WORKDIR /w
CMD {cmd}
"""
# As the API does (app/core/config.py): listen on $HOST:$PORT, all interfaces by default.
SERVE = '["sh", "-c", "exec python3 -m http.server --bind ${HOST:-0.0.0.0} ${PORT:-8080}"]'
CRASH = '["sh", "-c", "echo model file missing; exit 3"]'


def _image(env: dict[str, str], tmp: Path, name: str, body: str, cmd: str) -> str:
    """Build and push a one-line image; return it by digest."""
    ctx = tmp / name
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(DOCKERFILE.replace("{body}", body).replace("{cmd}", cmd))
    ref = f"{env['REGISTRY']}/standin-check:{name}"
    built = run(
        [
            "docker",
            "build",
            "--network=host",
            f"--build-arg=BASE_IMAGE={env['BASE_IMAGE']}",
            "-t",
            ref,
            str(ctx),
        ],
        env,
    )
    assert built.returncode == 0, built.stderr
    pushed = run(["docker", "push", ref], env)
    assert pushed.returncode == 0, pushed.stderr
    digest = run(
        ["docker", "inspect", "--format={{index .RepoDigests 0}}", ref], env
    ).stdout.strip()
    assert "@sha256:" in digest
    return digest


def _get(env: dict[str, str], url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": env["STANDIN_PROXY"]})
    )
    try:
        with opener.open(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _describe(env: dict[str, str]) -> dict:
    out = run(
        ["gcloud", "run", "services", "describe", SERVICE, f"--region={REGION}", "--format=json"],
        env,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _deploy(env: dict[str, str], image: str, *flags: str) -> subprocess.CompletedProcess:
    """``gcloud run deploy`` of ``image`` to the test's service, with ``flags``."""
    return run(
        ["gcloud", "run", "deploy", SERVICE, f"--image={image}", f"--region={REGION}", *flags], env
    )


def test_deploy_tag_traffic_and_failed_revision(
    local_cloud: dict[str, str], tmp_path: Path
) -> None:
    env = local_cloud
    v1 = _image(env, tmp_path, "v1", "one", SERVE)
    v2 = _image(env, tmp_path, "v2", "two", SERVE)
    bad = _image(env, tmp_path, "bad", "bad", CRASH)

    # First deploy: --no-traffic is refused for a new service by gcloud itself.
    refused = _deploy(env, v1, "--no-traffic")
    assert refused.returncode != 0 and "--no-traffic not supported" in refused.stderr
    first = _deploy(env, v1, "--tag=sha-one", "--set-env-vars=MODE=x", "--port=8080")
    assert first.returncode == 0, first.stderr
    svc = _describe(env)
    url = svc["status"]["url"]
    rev1 = svc["status"]["latestReadyRevisionName"]
    assert _get(env, url) == (200, "one\n")
    # Revision containers share the host's network here (Cloud Run would sandbox them): the
    # stand-in has them listen on loopback only.
    assert_loopback_only(revision_port(env, rev1), f"revision {rev1}")

    # Second revision without traffic: reachable on its tag only.
    second = _deploy(env, v2, "--no-traffic", "--tag=sha-two")
    assert second.returncode == 0, second.stderr
    svc = _describe(env)
    rev2 = svc["status"]["latestReadyRevisionName"]
    assert rev2 != rev1
    tag_url = next(t["url"] for t in svc["status"]["traffic"] if t.get("tag") == "sha-two")
    assert _get(env, tag_url) == (200, "two\n")
    assert _get(env, url) == (200, "one\n")
    serving = {t["revisionName"]: t["percent"] for t in svc["status"]["traffic"] if t["percent"]}
    assert serving == {rev1: 100}

    # A revision that crashes fails the deploy; the previous revision keeps all traffic.
    failed = _deploy(env, bad, "--no-traffic", "--tag=sha-bad")
    assert failed.returncode != 0
    assert "model file missing" in failed.stderr
    assert _get(env, url) == (200, "one\n")

    # Moving traffic to the tag routes the service URL to revision two.
    moved = run(
        [
            "gcloud",
            "run",
            "services",
            "update-traffic",
            SERVICE,
            f"--region={REGION}",
            "--to-tags=sha-two=100",
        ],
        env,
    )
    assert moved.returncode == 0, moved.stderr
    assert _get(env, url) == (200, "two\n")
    serving = {
        t["revisionName"]: t["percent"] for t in _describe(env)["status"]["traffic"] if t["percent"]
    }
    assert serving == {rev2: 100}


@pytest.fixture(autouse=True)
def _delete_service(local_cloud: dict[str, str]):
    yield
    run(
        ["gcloud", "run", "services", "delete", SERVICE, f"--region={REGION}", "--quiet"],
        local_cloud,
    )
