"""Run actions/setup-python-uv, actions/docker-build and actions/docker-push with act.

The docker CLI is fake_docker.py (it records what would be built and pushed), so what is
checked is the actions' own work: build arguments and OCI labels, the full-SHA tag, the
registry path, docker credentials configured for the Artifact Registry host only, and the
pushed image reported by digest. The real build and push are the end-to-end suite's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from purchase_rig import fake_docker
from purchase_rig.act import ActRun, prepare_repo, run_act

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("docker") / "repo"
    prepare_repo(repo, extra_workflows=(FIXTURES / "docker-actions.yml",))
    return repo


@pytest.fixture
def docker_state(tmp_path: Path) -> dict[str, str]:
    """The host environment for act: fake docker first on PATH, a private HOME for gcloud."""
    if not shutil.which("uv"):
        pytest.skip("needs uv on PATH (the setup-uv stand-in uses it)")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_docker.__file__}" "$@"\n')
    docker.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_DOCKER_STATE": str(tmp_path / "docker"),
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
    }


def _run(
    repo: Path, act_binary: str, work: Path, host_env: dict[str, str], **inputs: str
) -> ActRun:
    return run_act(
        repo,
        "workflow_dispatch",
        "docker-actions.yml",
        {"inputs": inputs},
        act=act_binary,
        work=work,
        host_env=host_env,
    )


def _result(run: ActRun) -> dict[str, str]:
    return run.printed("RESULT")


def _recorded(docker_state: dict[str, str], reference: str) -> dict:
    path = (
        Path(docker_state["FAKE_DOCKER_STATE"]) / "images" / (reference.replace("/", "%") + ".json")
    )
    return json.loads(path.read_text())


def test_build_and_push_to_a_given_registry(
    repo: Path, act_binary: str, docker_state: dict[str, str], tmp_path: Path
) -> None:
    sha = os.urandom(20).hex()
    run = _run(
        repo,
        act_binary,
        tmp_path / "act",
        docker_state,
        **{"git-sha": sha, "registry": "127.0.0.1:5000"},
    )
    assert run.returncode == 0, run.explain()
    result = _result(run)
    assert result["python"].endswith("/.venv/bin/python")
    assert result["local-image"] == f"purchase-predict-api:{sha}"
    remote = "127.0.0.1:5000/local-project/purchase-predict/purchase-predict-api"
    assert result["tagged-image"] == f"{remote}:{sha}"
    assert result["digest"].startswith("sha256:") and len(result["digest"]) == 71
    assert result["image"] == f"{remote}@{result['digest']}"

    built = _recorded(docker_state, f"{remote}:{sha}")
    assert built["pushed"] == f"{remote}:{sha}"
    assert built["id"] == result["image-id"]
    assert built["context"] == "purchase_predict_api"
    assert built["dockerfile"] == "purchase_predict_api/Dockerfile"
    assert built["build_args"] == {
        "GIT_SHA": sha,
        "IMAGE_TAG": sha,
        "MODEL_DIR": "model",
        "MODEL_VERSION": "7",
        "BASE_IMAGE": "local/python-base:bookworm",
    }
    labels = built["labels"]
    assert labels["org.opencontainers.image.revision"] == sha
    assert labels["org.opencontainers.image.version"] == "model-7"
    assert labels["purchase-predict.model-version"] == "7"
    assert labels["purchase-predict.environment"] == "staging"
    # No registry credentials were configured for a host that is not Artifact Registry.
    assert not (Path(docker_state["HOME"]) / ".docker" / "config.json").exists()


def test_default_registry_is_artifact_registry_with_credentials_for_that_host_only(
    repo: Path, act_binary: str, docker_state: dict[str, str], tmp_path: Path
) -> None:
    if not shutil.which("gcloud"):
        pytest.skip("needs the gcloud CLI (preinstalled on GitHub's ubuntu runners)")
    sha = os.urandom(20).hex()
    run = _run(repo, act_binary, tmp_path / "act", docker_state, **{"git-sha": sha})
    assert run.returncode == 0, run.explain()
    remote = "europe-west1-docker.pkg.dev/local-project/purchase-predict/purchase-predict-api"
    assert _result(run)["tagged-image"] == f"{remote}:{sha}"
    docker_config = json.loads((Path(docker_state["HOME"]) / ".docker" / "config.json").read_text())
    assert docker_config["credHelpers"] == {"europe-west1-docker.pkg.dev": "gcloud"}


BAD_INPUTS = {
    "short sha": ({"git-sha": "abc1234"}, "git-sha must be a full 40-character commit SHA"),
    "named version": (
        {"git-sha": "a" * 40, "model-version": "v7"},
        "model-version must be a number",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_inputs_fail_before_anything_is_built(
    repo: Path, act_binary: str, docker_state: dict[str, str], tmp_path: Path, case: str
) -> None:
    inputs, message = BAD_INPUTS[case]
    run = _run(repo, act_binary, tmp_path / "act", docker_state, **inputs)
    assert run.returncode != 0
    assert message in run.explain()
    assert not (Path(docker_state["FAKE_DOCKER_STATE"]) / "images").exists()
