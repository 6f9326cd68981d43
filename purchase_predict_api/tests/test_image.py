"""The image builds with the baked model and serves a prediction (needs a Docker engine).

Skipped, with the reason, when ``docker info`` fails, unless ``API_TEST_REQUIRE_DOCKER`` is set
(``nox -s e2e`` sets it: there, no engine is a failure). ``API_TEST_BASE_IMAGE`` overrides the
Dockerfile's base image (a mirror, or a local image on machines that cannot pull).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.model.frame import sessions_frame
from app.models import SESSION_EXAMPLE, validate_session
from purchase_contract.testing import ServerNotReady, wait_until_ok

API_DIR = Path(__file__).resolve().parents[1]
# The build context is the repository root: the API and the contract it installs.
REPO_ROOT = API_DIR.parent
BUILD_TIMEOUT_S = 1200
START_TIMEOUT_S = 120.0
# What the Dockerfile copies, at their places in the repository; nothing else is in the test's
# build context.
CONTEXT_FILES = (
    ".dockerignore",
    "contract/pyproject.toml",
    "contract/README.md",
    "contract/src",
    "purchase_predict_api/Dockerfile",
    "purchase_predict_api/pyproject.toml",
    "purchase_predict_api/README.md",
    "purchase_predict_api/app",
)

pytestmark = pytest.mark.slow


def _docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        pytest.fail(f"docker {args[0]} failed ({result.returncode}): {result.stderr[-3000:]}")
    return result.stdout


def _no_engine(reason: str) -> None:
    if os.environ.get("API_TEST_REQUIRE_DOCKER"):
        pytest.fail(f"API_TEST_REQUIRE_DOCKER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker_engine() -> None:
    """Skip the module unless a Docker engine answers (fail if one is required)."""
    if shutil.which("docker") is None:
        _no_engine("no docker CLI on PATH: the image test needs a Docker engine")
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        _no_engine("`docker info` timed out: no Docker engine reachable")
    if result.returncode != 0:
        reason = " ".join(result.stderr.split())[:200]
        _no_engine(f"no Docker engine reachable (`docker info` failed: {reason})")


@pytest.fixture(scope="module")
def image(docker_engine: None, baked_model_dir: Path, tmp_path_factory) -> Iterator[str]:
    """The API image built from a clean context holding the code and the baked model."""
    context = tmp_path_factory.mktemp("image-context")
    for name in CONTEXT_FILES:
        source, target = REPO_ROOT / name, context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    shutil.copytree(baked_model_dir, context / "purchase_predict_api" / "model")
    # Where google-github-actions/auth could leave one: .dockerignore must keep it out.
    api = context / "purchase_predict_api"
    (api / "app" / "gha-creds-0123.json").write_text('{"type": "external_account"}')
    (api / "model" / "gha-creds-89ab.json").write_text('{"type": "external_account"}')
    (context / "gha-creds-4567.json").write_text('{"type": "external_account"}')
    meta = json.loads((baked_model_dir / "model_meta.json").read_text())
    tag = f"purchase-predict-api-test:{uuid.uuid4().hex[:12]}"
    build_args = {
        "GIT_SHA": "c0ffee0123",
        "IMAGE_TAG": tag.split(":")[1],
        "MODEL_NAME": meta["name"],
        "MODEL_VERSION": meta["version"],
        "SOURCE_URL": "https://github.com/example/purchase-predict",
    }
    if base := os.environ.get("API_TEST_BASE_IMAGE"):
        build_args["BASE_IMAGE"] = base
    arguments = [f"--build-arg={key}={value}" for key, value in build_args.items()]
    # Host networking: the build reaches the package index the way the host does.
    _docker(
        "build",
        "--network=host",
        *arguments,
        "--file",
        str(api / "Dockerfile"),
        "--tag",
        tag,
        str(context),
        timeout=BUILD_TIMEOUT_S,
    )
    try:
        yield tag
    finally:
        _docker("image", "rm", "--force", tag, check=False)


def test_image_labels_name_the_revision_and_the_model(image: str, registered_model) -> None:
    labels = json.loads(_docker("image", "inspect", "--format", "{{json .Config.Labels}}", image))
    config = json.loads(_docker("image", "inspect", "--format", "{{json .Config}}", image))

    assert labels["org.opencontainers.image.revision"] == "c0ffee0123"
    assert (
        labels["org.opencontainers.image.source"] == "https://github.com/example/purchase-predict"
    )
    assert labels["io.purchase-predict.model.version"] == registered_model.version
    assert labels["io.purchase-predict.model.name"] == registered_model.name
    assert config["User"] == "10001"


def test_image_holds_no_credentials_file(image: str) -> None:
    found = _docker(
        "run",
        "--rm",
        "--network=host",
        "--entrypoint",
        "find",
        image,
        "/srv",
        "/opt/venv",
        "-name",
        "gha-creds-*",
    )

    assert found.strip() == ""


def test_image_ships_neither_scikit_learn_nor_pandas(image: str) -> None:
    # The build stage reads the model with them; the image serves its compiled form without.
    found = _docker(
        "run",
        "--rm",
        "--network=host",
        image,
        "python",
        "-c",
        "import importlib.util as u; "
        "print(*[m for m in ('sklearn', 'pandas', 'scipy', 'skops', 'mlflow') if u.find_spec(m)])",
    )

    assert found.strip() == ""


def test_image_serves_a_prediction_on_port(image: str, free_port, registered_model) -> None:
    port = free_port()
    container = _docker(
        "run", "--detach", "--rm", "--network=host", "--env", f"PORT={port}", image
    ).strip()
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ok(f"{url}/ready", START_TIMEOUT_S, poll_s=0.2, request_timeout_s=5)
        except ServerNotReady as err:
            logs = _docker("logs", container, check=False)
            pytest.fail(f"container not ready: {err}: {logs[-3000:]}")
        request = urllib.request.Request(
            f"{url}/predict",
            data=json.dumps(SESSION_EXAMPLE).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        with urllib.request.urlopen(f"{url}/version", timeout=5) as response:
            version = json.loads(response.read())
    finally:
        _docker("stop", "--time", "10", container, check=False)

    assert body["model_version"] == registered_model.version
    expected = registered_model.estimator.predict_proba(
        sessions_frame([validate_session(SESSION_EXAMPLE)])
    )[0, 1]
    assert body["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-12)
    assert version["git_sha"] == "c0ffee0123"
    assert version["model_alias"] == registered_model.alias
