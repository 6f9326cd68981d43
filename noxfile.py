"""Developer and CI entry points: ``nox -l`` lists them.

The README's two commands are ``nox -s pipeline`` (the local pre-production pipeline on
embedded defaults) and ``nox -s lint tests`` (what CI runs through ``.ci/run``).
"""

from __future__ import annotations

import json
import os
import subprocess
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
PYTHON = "3.11"


def _paths(*patterns: str) -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for pattern in patterns for p in ROOT.glob(pattern))


def _install_group(session: nox.Session, *groups: str) -> None:
    for group in groups:
        session.install(*nox.project.dependency_groups(ROOT_PYPROJECT, group))


def _install_training(session: nox.Session) -> None:
    session.install("-e", str(TRAINING_DIR))


def _git(*args: str) -> str:
    """One git value for lineage tags, or "" outside a checkout."""
    try:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _train(session: nox.Session, *kedro_args: str) -> dict:
    """Generate the default data set when missing, run Kedro, return training_run.json."""
    session.run("purchase-predict-generate", "--out", str(RAW_EVENTS), "--if-missing")
    session.chdir(TRAINING_DIR)
    session.run("kedro", "run", *kedro_args, env={"GIT_BRANCH": _git("branch", "--show-current")})
    session.chdir(ROOT)
    return json.loads(TRAINING_RUN.read_text())


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository."""
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
    """Test suites: training (Kedro project + scripts) and api (service alone, no Kedro)."""
    _install_group(session, "test")
    if suite == "training":
        _install_training(session)
        paths = ["purchase_predict/tests", "tests", "-m", "not e2e"]
    else:
        session.install("-e", f"{API_DIR}[test]")
        paths = ["purchase_predict_api/tests"]
    session.run("pytest", *paths, *session.posargs)


@nox.session(python=PYTHON)
def e2e(session: nox.Session) -> None:
    """Offline end-to-end suite: real docker, registry, Cloud Run stand-in, gcloud and act."""
    _install_group(session, "test")
    _install_training(session)
    session.run("pytest", "tests/e2e", "-m", "e2e", *session.posargs)


@nox.session(python=PYTHON)
def train(session: nox.Session) -> None:
    """Train on the default (generated) data and log to MLflow; extra args go to kedro run."""
    _install_training(session)
    run = _train(session, *session.posargs)
    session.log(f"run {run['run_id']}: model version {run['model_version']}")


@nox.session(python=PYTHON)
def pipeline(session: nox.Session) -> None:
    """The local pre-production pipeline: generate data, train, log and register in MLflow."""
    _install_training(session)
    run = _train(session, *session.posargs)
    metrics = run["metrics"]
    session.log(
        f"model {run['registered_model_name']} version {run['model_version']}: "
        f"F1 {metrics['f1']:.3f} (all-positive baseline {metrics['baseline_f1']:.3f}), "
        f"run {run['run_id']}, tracking {os.environ.get('MLFLOW_TRACKING_URI', 'local sqlite')}"
    )
