"""Fixtures for the workflow tests: act, a throwaway repository holding the pipeline, and the
Cloud Run stand-in (purchase_rig.cloud_run_standin) with a fake docker CLI as its data plane."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from purchase_rig.act import ActRun, prepare_repo, run_act
from purchase_rig.standin_server import standin_with_fake_docker


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
    with standin_with_fake_docker(tmp_path_factory.mktemp("cloud-run")) as (_env, aimed, _port):
        yield aimed
