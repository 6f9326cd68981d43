"""Fixtures for the end-to-end suite: the real local cloud (docker engine, registry, base image,
Cloud Run stand-in), started once per session by ``scripts/local_cloud.py`` and torn down after."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from local_cloud import LocalCloud, LocalCloudError  # noqa: E402

# Cached between runs on one machine: the base image lives in the engine's data root.
STATE = Path(os.environ.get("LOCAL_CLOUD_STATE", ROOT / ".state" / "local-cloud-e2e"))


@pytest.fixture(scope="session")
def local_cloud() -> Iterator[dict[str, str]]:
    """docker + base image + registry + MLflow server + Cloud Run stand-in; the env for them."""
    missing = [
        tool
        for tool in ("dockerd", "docker-registry", "debootstrap", "gcloud")
        if not shutil.which(tool)
    ]
    if missing:
        pytest.fail(
            f"the end-to-end suite needs {', '.join(missing)} (run .ci/run or apt-get install them)"
        )
    cloud = LocalCloud(STATE)
    # Started by the caller (nox -s e2e runs the API image test on it first): the caller stops it.
    owned = not all(cloud.status().values())
    try:
        env = cloud.up(["docker", "base", "registry", "mlflow", "cloudrun"])
    except LocalCloudError as err:
        cloud.down()
        pytest.fail(f"local cloud did not start: {err}")
    try:
        yield {**os.environ, **env}
    finally:
        if owned:
            cloud.down()


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command with the local-cloud env, returning its output (never raises on exit code)."""
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
