"""Fixtures for the workflow tests: act, a throwaway repository holding the pipeline, and the
Cloud Run stand-in (purchase_rig.cloud_run_standin) with a fake docker CLI as its data plane."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from purchase_rig import fake_docker
from purchase_rig.act import ActRun, prepare_repo, run_act
from purchase_rig.cloud_run_standin import gcloud_env


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A git copy of the pipeline: staging at the first commit, master at the second."""
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    return repo, prepare_repo(repo)


@pytest.fixture
def act(
    act_binary: str, pipeline_repo: tuple[Path, dict[str, str]], tmp_path: Path
) -> Callable[..., ActRun]:
    """Run a workflow of the pipeline copy in dry-run mode (repository variable PIPELINE_DRY_RUN)."""
    repo, _ = pipeline_repo

    def _run(event: str, workflow: str, payload: dict[str, Any], **kwargs: Any) -> ActRun:
        variables = {"PIPELINE_DRY_RUN": "true", **kwargs.pop("variables", {})}
        return run_act(
            repo,
            event,
            workflow,
            payload,
            act=act_binary,
            work=tmp_path,
            variables=variables,
            **kwargs,
        )

    return _run


@pytest.fixture(scope="module")
def cloud_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The Cloud Run stand-in on a free port; yields the env that aims gcloud at it."""
    if not shutil.which("gcloud"):
        pytest.skip("needs the gcloud CLI (preinstalled on GitHub's ubuntu runners)")
    state = tmp_path_factory.mktemp("cloud-run")
    bin_dir = state / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_docker.__file__}" "$@"\n')
    docker.chmod(0o755)
    port_file = state / "port"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_DOCKER_STATE": str(state / "containers"),
    }
    log = (state / "standin.log").open("w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "purchase_rig.cloud_run_standin",
            "--port-file",
            str(port_file),
            "--gcloud-config",
            str(state / "gcloud"),
            "--ready-timeout",
            "20",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 15
        while not _port_written(port_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _port_written(port_file):
            pytest.fail(
                f"the Cloud Run stand-in did not start: {(state / 'standin.log').read_text()}"
            )
        yield gcloud_env(int(port_file.read_text()), str(state / "gcloud"))
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()


def _port_written(port_file: Path) -> bool:
    return port_file.exists() and port_file.read_text().strip().isdigit()
