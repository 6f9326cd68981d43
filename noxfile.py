"""Developer and CI entry points: ``nox -l`` lists them.

The README's two commands are ``nox -s pipeline`` (the local pre-production pipeline on
embedded defaults) and ``nox -s lint tests`` (what CI runs through ``.ci/run``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
ROOT_PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
TRAINING_DIR = ROOT / "purchase_predict"
API_DIR = ROOT / "purchase_predict_api"
RAW_EVENTS = TRAINING_DIR / "data" / "01_raw" / "events.parquet"
TRAINING_RUN = TRAINING_DIR / "data" / "08_reporting" / "training_run.json"
LOCAL_CLOUD_ENV = ROOT / ".state" / "local-cloud" / "env.json"
# The end-to-end suite's own local cloud (tests/e2e/conftest.py uses the same directory).
E2E_STATE = ROOT / ".state" / "local-cloud-e2e"
LOCAL_CLOUD_STATE = ROOT / ".state" / "local-cloud"
PYTHON = "3.11"
# Seconds a command has to clean up after Ctrl+C or SIGTERM (stopping what it started).
CLEANUP_TIMEOUT = 90.0


def _sigterm_as_ctrl_c(signum: int, _frame: object) -> None:
    """SIGTERM as Ctrl+C: nox stops the running command and runs the sessions' ``finally``
    blocks (by default SIGTERM kills nox alone and orphans the command). The command gets the
    SIGTERM too (a terminal's Ctrl+C reaches it directly; SIGINT may be ignored in background
    jobs) and up to CLEANUP_TIMEOUT seconds to stop what it started."""
    for child in _children():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(child, signal.SIGTERM)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _children() -> list[int]:
    """This process's direct children (Linux /proc; none found elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                found.append(int(stat.parent.name))
    return found


signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)


def _paths(*patterns: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern))


def _install_group(session: nox.Session, *groups: str) -> None:
    for group in groups:
        session.install(*nox.project.dependency_groups(ROOT_PYPROJECT, group))


def _install_local(session: nox.Session, *projects: str) -> None:
    """Editable installs of this repository's projects (folder names, extras allowed)."""
    session.install(*(arg for project in projects for arg in ("-e", str(ROOT / project))))


def _install_training(session: nox.Session) -> None:
    _install_local(session, "contract", "delivery[gate]", "rig", "purchase_predict")


def _git(*args: str) -> str:
    """One git value for lineage tags, or "" outside a checkout."""
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _live_local_mlflow() -> str:
    """The local pipeline's MLflow server URI when it answers, else ""."""
    if not LOCAL_CLOUD_ENV.exists():
        return ""
    uri = json.loads(LOCAL_CLOUD_ENV.read_text()).get("MLFLOW_TRACKING_URI", "")
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=2):
            return uri
    except (OSError, ValueError):
        return ""


def _tracking_uri(session: nox.Session) -> tuple[str, Callable[[], None]]:
    """Where the model to serve is registered, and how to stop what was started to reach it.

    MLFLOW_TRACKING_URI, else the local pipeline's MLflow server (started from its store when
    it is down, e.g. after `local_cloud.py down`, and stopped afterwards), else the embedded
    SQLite store of `nox -s train`. None of them: the session says what to run first, and
    creates no empty store.
    """
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri, lambda: None
    if uri := _live_local_mlflow():
        return uri, lambda: None
    cloud = ["python", "-m", "purchase_rig.local_cloud", "--state", str(LOCAL_CLOUD_STATE)]
    if (LOCAL_CLOUD_STATE / "mlflow" / "mlflow.db").exists():
        session.log("the local pipeline's MLflow server is down: starting it for this session")
        session.run(*cloud, "up", "mlflow", silent=True)
        return _live_local_mlflow(), lambda: session.run(*cloud, "down", "mlflow", silent=True)
    store = session.run(
        "python",
        "-c",
        "from purchase_contract.config import load_config; print(load_config().local_mlflow_store)",
        silent=True,
    ).strip()
    if Path(store).exists():
        return f"sqlite:///{store}", lambda: None
    session.error(
        "no model registered yet: run `nox -s pipeline` (or `nox -s train`) first, "
        "or set MLFLOW_TRACKING_URI"
    )
    raise AssertionError  # session.error raises


def _train(session: nox.Session, *kedro_args: str) -> dict:
    """Generate the default data set when missing, run Kedro, return training_run.json."""
    session.run("purchase-predict-generate", "--out", str(RAW_EVENTS), "--if-missing")
    session.chdir(TRAINING_DIR)
    session.run("kedro", "run", *kedro_args, env={"GIT_BRANCH": _git("branch", "--show-current")})
    session.chdir(ROOT)
    return json.loads(TRAINING_RUN.read_text())


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff, actionlint (with shellcheck) and zizmor over the whole repository."""
    _install_group(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    # Workflows and composite actions: actionlint runs shellcheck on every `run:` block of the
    # workflows; the actions' scripts and the act test fixtures are checked explicitly.
    session.run("actionlint")
    session.run("actionlint", *_paths("tests/workflows/fixtures/*.yml"))
    session.run("shellcheck", *_paths("actions/*/*.sh", ".ci/run"))
    session.run("zizmor", "--offline", ".")
    session.run("zizmor", "--offline", "--pedantic", ".")


@nox.session(python=PYTHON)
@nox.parametrize("suite", ["training", "api"])
def tests(session: nox.Session, suite: str) -> None:
    """Tests without Docker: suite training (Kedro, contract, delivery, rig, bench) or api."""
    _install_group(session, "test")
    if suite == "training":
        _install_training(session)
        _install_local(session, "bench")
        paths = [
            *("contract/tests", "purchase_predict/tests", "bench/tests", "rig/tests", "tests"),
            *("-m", "not e2e and not spark"),
        ]
    else:
        # The API and the contract it reads, nothing of the Kedro project.
        _install_local(session, "contract", "purchase_predict_api[test]")
        paths = ["purchase_predict_api/tests"]
    session.run("pytest", *paths, *session.posargs)


@nox.session(python=PYTHON)
def spark(session: nox.Session) -> None:
    """The data step on Apache Spark in local mode, checked against DuckDB's (needs Java 17+).

    `kedro run --env spark`'s catalog (conf/spark/) on generated and hand-made events: the
    same primary table, row for row and type for type, and the same refusals of bad events."""
    _install_group(session, "test")
    _install_local(session, "contract", "purchase_predict[spark]")
    session.run(
        "pytest",
        "purchase_predict/tests",
        "-m",
        "spark",
        "-p",
        "no:cacheprovider",
        *session.posargs,
    )


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """End-to-end, offline: the API image, then the workflows under act, on the local cloud.

    The local cloud is real: a Docker engine, a registry, an MLflow server, the Cloud Run
    stand-in reached by the real gcloud; all of it is stopped when the session ends."""
    _install_group(session, "test")
    _install_training(session)
    # The API image test's fixtures, and uv for the workflows' setup-uv stand-in.
    session.install("-e", f"{API_DIR}[test]", "uv")
    cloud = ["python", "-m", "purchase_rig.local_cloud", "--state", str(E2E_STATE)]
    session.run(*cloud, "up", "docker", "base", "registry", "mlflow", "cloudrun")
    try:
        env = json.loads((E2E_STATE / "env.json").read_text())
        session.run(
            "pytest",
            "purchase_predict_api/tests/test_image.py",
            "-p",
            "no:cacheprovider",
            env={**env, "API_TEST_BASE_IMAGE": env["BASE_IMAGE"], "API_TEST_REQUIRE_DOCKER": "1"},
        )
        # -v: one line per test as it starts and ends (act scenarios take minutes each).
        session.run(
            "pytest",
            "tests/e2e",
            "-m",
            "e2e",
            "-v",
            *session.posargs,
            env=env,
            interrupt_timeout=CLEANUP_TIMEOUT,
        )
    finally:
        # Containers, daemon and servers: nothing outlives the session.
        session.run(*cloud, "down")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (ratios against an anchor of the same run); writes docs/benchmarks.md.

    Our API vs `mlflow models serve`, cold start, batch, hostile bodies, image size, the
    feature step at 1 M and 10 M events, the local pipeline. Options after `--`, e.g.
    `nox -s bench -- --only serving,batch` (see --help)."""
    _install_training(session)
    _install_local(session, "bench", "purchase_predict_api[model]")
    # Byte-compiled, as pip installs and as the API image is: uv does not compile by default
    # and this machine sets PYTHONDONTWRITEBYTECODE, so cold starts would time the compiler
    # (importing the API took 1.6 s instead of 0.5 s). Up-to-date files are skipped.
    session.run(
        "python",
        "-c",
        "import compileall, sys, sysconfig\n"
        "for d in (sysconfig.get_path('purelib'), *sys.argv[1:]):\n"
        "    compileall.compile_dir(d, quiet=2, workers=0)",
        str(API_DIR / "app"),
        str(TRAINING_DIR / "src"),
        silent=True,
    )
    session.run("python", "-m", "purchase_bench.benchmark", *session.posargs)


@nox.session(python=PYTHON)
def soak(session: nox.Session) -> None:
    """Soak the API for 10 minutes at a fixed rate: no error, memory growth under 5 %.

    100 requests/s to the baked model, every 20th a batch of 100 sessions; resident memory may
    grow less than 5 % after the first minute. Options after `--`, e.g. `nox -s soak --
    --minutes 2 --out soak.md` (see `python -m purchase_bench.soak --help`)."""
    _install_training(session)
    _install_local(session, "bench", "purchase_predict_api[model]")
    session.run("python", "-m", "purchase_bench.soak", *session.posargs)


@nox.session(python=PYTHON)
def train(session: nox.Session) -> None:
    """Train on the default (generated) data and log to MLflow; extra args go to kedro run."""
    _install_training(session)
    run = _train(session, *session.posargs)
    session.log(f"run {run['run_id']}: model version {run['model_version']}")


@nox.session(python=PYTHON)
def pipeline(session: nox.Session) -> None:
    """The whole pipeline, locally: train, promote, bake, build, push, deploy, smoke, route.

    `-- --no-docker` serves with uvicorn instead; `-- --help` lists the options."""
    _install_training(session)
    session.install("-e", f"{API_DIR}[model]")  # the uvicorn fallback reads the MLflow format
    session.run(
        "python",
        "-m",
        "purchase_rig.local_pipeline",
        *session.posargs,
        interrupt_timeout=CLEANUP_TIMEOUT,
    )


@nox.session(python=PYTHON)
def serve(session: nox.Session) -> None:
    """Serve the current branch's alias (staging by default) with uvicorn on $PORT or 8080."""
    # Full mlflow: the embedded store is SQLite.
    _install_local(session, "contract", "delivery", "purchase_predict_api[local]")
    resolved = session.run(
        "python",
        "scripts/branch_env.py",
        "--fallback",
        "--json",
        _git("branch", "--show-current"),
        silent=True,
    )
    env = json.loads(resolved)
    model_uri = f"models:/{env['model-name']}@{env['alias']}"
    tracking_uri, stop = _tracking_uri(session)
    port = os.environ.get("PORT", "8080")
    session.log(f"serving {model_uri} from {tracking_uri} on http://127.0.0.1:{port} (/docs)")
    try:
        session.run(
            "purchase-predict-api",
            env={
                "MODEL_URI": model_uri,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "HOST": "127.0.0.1",
                "PORT": port,
                "GIT_SHA": _git("rev-parse", "HEAD") or "unknown",
                # A developer's machine: the Swagger UI at /docs (off in the image).
                "DOCS_UI": "true",
            },
        )
    finally:
        stop()
