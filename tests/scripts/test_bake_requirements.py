"""The deploy's bake step installs a lock (scripts/bake-requirements.{in,txt}), not "latest".

An unpinned ``mlflow-skinny`` would let any new release (a 4.0 included) decide how the
production model is read, though training is constrained to ``mlflow>=3.1,<4``. The pins live in
one place, scripts/bake-requirements.in, and these tests hold them to the projects' own
constraints and to the lock the workflow installs.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PINS = ROOT / "scripts" / "bake-requirements.in"
LOCK = ROOT / "scripts" / "bake-requirements.txt"
DEPLOY = ROOT / ".github" / "workflows" / "deploy-api.yml"
BAKE_STEP = "Set up Python for baking the model"


def _requirements(path: Path) -> dict[str, Requirement]:
    """Requirement lines of a requirements file (no hashes, comments or continuations)."""
    found = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip().removesuffix("\\").strip()
        if line and not line.startswith("--"):
            requirement = Requirement(line)
            found[canonicalize_name(requirement.name)] = requirement
    return found


def _pinned_version(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} is not an exact pin"
    return specifier.version


def _project_constraints() -> dict[str, list[Requirement]]:
    """Every requirement of the training and API projects (dependencies and extras)."""
    constraints: dict[str, list[Requirement]] = {}
    for pyproject in (
        ROOT / "purchase_predict" / "pyproject.toml",
        ROOT / "purchase_predict_api" / "pyproject.toml",
    ):
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
        lines = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            lines += extra
        for line in lines:
            requirement = Requirement(line)
            constraints.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return constraints


def test_the_bake_step_installs_the_lock_with_hashes_required() -> None:
    steps = yaml.safe_load(DEPLOY.read_text(encoding="utf-8"))["jobs"]["deploy"]["steps"]
    (step,) = [step for step in steps if step.get("name") == BAKE_STEP]
    # setup-python-uv splits the evaluated input into `uv pip install` arguments.
    assert step["with"]["packages"] == (
        "--require-hashes -r ${{ steps.env.outputs.scripts }}/bake-requirements.txt"
    )


def test_the_direct_requirements_are_exact_pins() -> None:
    pins = _requirements(PINS)
    assert set(pins) == {"mlflow-skinny", "google-cloud-storage"}
    for requirement in pins.values():
        _pinned_version(requirement)


@pytest.mark.parametrize(
    ("pinned", "constrained_by"),
    [
        # The bake reads models that training logged with full mlflow, and uses the API's
        # registry code (its `[mlflow]` extra names mlflow-skinny).
        ("mlflow-skinny", "mlflow"),
        ("mlflow-skinny", "mlflow-skinny"),
    ],
)
def test_the_mlflow_pin_satisfies_the_projects_constraints(
    pinned: str, constrained_by: str
) -> None:
    version = _pinned_version(_requirements(PINS)[pinned])
    constraints = _project_constraints()[constrained_by]
    for requirement in constraints:
        assert requirement.specifier.contains(version), (
            f"bake pins {pinned}=={version}, outside the projects' {requirement}"
        )


def test_the_lock_pins_the_same_versions_and_hashes_every_package() -> None:
    pins = {name: _pinned_version(r) for name, r in _requirements(PINS).items()}
    locked = {name: _pinned_version(r) for name, r in _requirements(LOCK).items()}
    assert {name: locked.get(name) for name in pins} == pins, (
        "scripts/bake-requirements.txt is stale: compile it again (command in bake-requirements.in)"
    )
    lines = LOCK.read_text(encoding="utf-8").splitlines()
    unhashed = [
        line.split()[0]
        for line, following in zip(lines, [*lines[1:], ""], strict=True)
        if line[:1].isalnum() and "--hash=sha256:" not in following
    ]
    assert not unhashed, f"locked without hashes (compile with --generate-hashes): {unhashed}"
