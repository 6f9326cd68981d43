"""The real gcloud CLI against the Cloud Run stand-in, with the fake docker CLI as its data
plane (no Docker engine): deploy, a tagged no-traffic revision, describe, update-traffic, the
data plane through the proxy and the warm-instances read-out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from purchase_rig import fake_docker
from purchase_rig.cloud_run_standin import gcloud_env

REGION = "europe-west1"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    if not shutil.which("gcloud"):
        pytest.skip("needs the gcloud CLI")
    state = tmp_path_factory.mktemp("standin")
    bin_dir = state / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_docker.__file__}" "$@"\n')
    docker.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_DOCKER_STATE": str(state / "containers"),
    }
    port_file = state / "port"
    with (state / "standin.log").open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "purchase_rig.cloud_run_standin", "--port-file",
             str(port_file), "--gcloud-config", str(state / "gcloud"), "--ready-timeout", "20"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and not _written(port_file):
                time.sleep(0.1)
            port = int(port_file.read_text())
            yield {**env, **gcloud_env(port, str(state / "gcloud")), "STANDIN_PORT": str(port)}
        finally:
            server.terminate()
            server.wait(timeout=10)


def _written(port_file: Path) -> bool:
    return port_file.exists() and port_file.read_text().strip().isdigit()


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
