#!/usr/bin/env python3
"""Check what a triggering GitHub event asks for, and plan the run: which commit, which model.

Standard library only: the entry workflows (api.yml, training.yml) run it with a bare
``python3`` right after the checkout, before anything is installed, in a checkout with the
whole history (``fetch-depth: 0``) so that it can tell whether a commit is on a branch.

The rules (docs/workflows.md, "Who can deploy what"):

- ``workflow_run`` (API after Training) deploys only when the Training run was a ``push`` or a
  ``workflow_dispatch`` of this very repository. GitHub matches ``workflows: [Training]`` by
  name, and a ``pull_request`` run (a fork's included) runs the pull request's own workflow
  files, so anything else is untrusted: nothing is deployed and the summary says why.
  It builds the environment branch's head *now*, not the Training commit (``head_sha``), so
  that API commits pushed while Training ran are not rolled back; ``head_sha`` stays the
  image's training-commit label.
- ``repository_dispatch`` ``client_payload.ref`` and ``workflow_dispatch`` runs accept only the
  environment's branch or a commit on it; a ``workflow_dispatch`` of the API with an
  ``image-tag`` is an explicit rollback to a pushed image, and one with a ``revision`` a
  rollback to an existing revision of the service; both are accepted from any ref (they still
  read the configuration of the environment's branch).
- A refused request exits 1 with the reason; a request that deploys nothing exits 0.

Outputs are ``key=value`` lines on stdout, appended to ``$GITHUB_OUTPUT`` when it is set; a
Markdown summary goes to ``$GITHUB_STEP_SUMMARY`` when it is set.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from purchase_contract.command_line import command_parser
from purchase_contract.step_outputs import append_to

FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
VERSION = re.compile(r"^[1-9][0-9]*$")
# A Cloud Run revision name: a DNS label (lowercase letters, digits, dashes; 63 at most).
REVISION = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$")
# Training runs whose workflow files this repository controls (pull_request runs use the PR's).
TRUSTED_TRAINING_EVENTS = ("push", "workflow_dispatch")

EPILOG = """\
The GitHub context comes from the runner's variables (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH,
GITHUB_REPOSITORY, GITHUB_SHA, GITHUB_REF); --environment and --branch come from
actions/resolve-environment (the environment resolved from the event, and its branch).

api outputs:       deploy, reason, ref (full SHA to build), model-version, image-tag,
                   revision, training-sha, dry-run
training outputs:  train, reason, ref (full SHA to train), dry-run

exit status: 0 planned (deploy/train may be false), 1 refused (the reason is printed as a
GitHub error annotation), 2 bad invocation.
"""


class Refused(ValueError):
    """The event asks for something this pipeline does not do; the message says why."""


@dataclass(frozen=True)
class Context:
    """The parts of the GitHub context a plan reads."""

    event_name: str
    payload: dict[str, Any]
    repository: str
    sha: str
    ref: str
    environment: str  # empty: the event maps to no environment
    branch: str  # the environment's branch (or the event's, when there is no environment)
    dry_run: bool = False
    inputs: dict[str, str] = field(default_factory=dict)


@dataclass
class Plan:
    """What to run; ``go`` false with a ``reason`` means nothing runs (and that is fine)."""

    go: bool
    reason: str = ""
    ref: str = ""
    model_version: str = ""
    image_tag: str = ""
    revision: str = ""
    training_sha: str = ""
    notes: list[str] = field(default_factory=list)


# --- git --------------------------------------------------------------------------------------


def git(*args: str, cwd: Path | None = None) -> str | None:
    """Stripped output of a git command, or None when it fails."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=60
    )
    return done.stdout.strip() if done.returncode == 0 else None


def branch_head(branch: str, cwd: Path | None = None) -> str:
    """The full SHA the branch points to in the checkout (its remote-tracking ref first)."""
    for ref in (f"refs/remotes/origin/{branch}", f"refs/heads/{branch}"):
        if sha := git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", cwd=cwd):
            return sha
    raise Refused(
        f"branch {branch!r} is not in the checkout: the resolve job checks out with "
        "fetch-depth: 0, so the branch does not exist in this repository"
    )


def commit_on_branch(commit: str, branch: str, cwd: Path | None = None) -> str:
    """``commit`` (a full SHA, a branch name or ``refs/heads/<name>``) as a full SHA, provided it
    is the branch itself or a commit the branch contains; Refused otherwise."""
    head = branch_head(branch, cwd)
    name = commit.removeprefix("refs/heads/")
    if name == branch:
        return head
    if not FULL_SHA.match(commit):
        raise Refused(
            f"ref {commit!r} is neither the environment's branch {branch!r} nor a full commit SHA"
        )
    if git("cat-file", "-e", f"{commit}^{{commit}}", cwd=cwd) is None:
        raise Refused(f"commit {commit} is not in this repository")
    if git("merge-base", "--is-ancestor", commit, head, cwd=cwd) is None:
        raise Refused(f"commit {commit} is not on the environment's branch {branch!r}")
    return commit


# --- plans ------------------------------------------------------------------------------------


def untrusted_training_run(ctx: Context) -> str:
    """Why a ``workflow_run`` payload must not deploy, or "" when it may."""
    run = ctx.payload.get("workflow_run")
    if not isinstance(run, dict):
        return "the workflow_run payload has no workflow_run object"
    event = run.get("event")
    head_repository = (run.get("head_repository") or {}).get("full_name")
    if event not in TRUSTED_TRAINING_EVENTS:
        return (
            f"the Training run was triggered by {event or 'an unknown event'!r}, not by a push "
            "or a manual run: its workflow files are not this repository's"
        )
    if head_repository != ctx.repository:
        return (
            f"the Training run ran on {head_repository or 'an unknown repository'}'s code, "
            f"not {ctx.repository}'s"
        )
    return ""


def api_plan(ctx: Context, cwd: Path | None = None) -> Plan:
    """What the API workflow deploys for this event (see the module docstring)."""
    if ctx.event_name == "workflow_run" and (why := untrusted_training_run(ctx)):
        return Plan(go=False, reason=f"untrusted trigger: {why}")
    if not ctx.environment:
        return Plan(
            go=False,
            reason=f"branch `{ctx.branch}` maps to no environment in `[tool.purchase-predict]`",
        )
    # push: GitHub sends the pushed commit, which is the branch's head.
    planner = _API_PLANNERS.get(ctx.event_name, lambda ctx, _cwd: Plan(go=True, ref=ctx.sha))
    return planner(ctx, cwd)


def _after_training(ctx: Context, cwd: Path | None) -> Plan:
    head_sha = str(ctx.payload["workflow_run"].get("head_sha") or "")
    if not FULL_SHA.match(head_sha):
        raise Refused(f"workflow_run.head_sha must be a full commit SHA, got {head_sha!r}")
    plan = Plan(go=True, ref=branch_head(ctx.branch, cwd), training_sha=head_sha)
    if plan.ref != head_sha:
        plan.notes.append(
            f"`{ctx.branch}` moved on since Training ran on `{head_sha[:12]}`: "
            f"building its head `{plan.ref[:12]}` (newer code, the promoted model)"
        )
    return plan


def _model_promoted(ctx: Context, cwd: Path | None) -> Plan:
    client = ctx.payload.get("client_payload") or {}
    version = str(client.get("model_version") or "")
    if not VERSION.match(version):
        raise Refused(
            f"client_payload.model_version must be a registered model version number, got {version!r}"
        )
    sha = str(client.get("sha") or "")
    if sha and not FULL_SHA.match(sha):
        raise Refused(f"client_payload.sha must be a full commit SHA, got {sha!r}")
    try:
        ref = commit_on_branch(str(client.get("ref") or ctx.branch), ctx.branch, cwd)
    except Refused as err:
        raise Refused(f"client_payload.ref: {err}") from None
    return Plan(go=True, ref=ref, model_version=version, training_sha=sha)


def _manual_deploy(ctx: Context, cwd: Path | None) -> Plan:
    version = ctx.inputs.get("model-version", "")
    if version and not VERSION.match(version):
        raise Refused(f"model-version must be a registered model version number, got {version!r}")
    image_tag, revision = ctx.inputs.get("image-tag", ""), ctx.inputs.get("revision", "")
    if not (image_tag or revision):
        return Plan(go=True, ref=_dispatched_commit(ctx, cwd), model_version=version)
    if image_tag and revision:
        raise Refused("give image-tag or revision, not both: each is a rollback of its own")
    if image_tag and not FULL_SHA.match(image_tag):
        raise Refused(
            f"image-tag must be the full 40-character commit SHA an image was pushed with, got {image_tag!r}"
        )
    if revision and not REVISION.match(revision):
        raise Refused(
            f"revision must be a Cloud Run revision name (lowercase letters, digits and dashes, "
            f"as `gcloud run revisions list` shows it), got {revision!r}"
        )
    if revision and version:
        raise Refused(
            "model-version cannot change a revision: it serves the model baked into its image"
        )
    # A rollback builds nothing and may be started from any ref; the configuration and the
    # smoke request still come from the environment's branch, not from that ref.
    return Plan(
        go=True,
        ref=branch_head(ctx.branch, cwd),
        model_version=version,
        image_tag=image_tag,
        revision=revision,
    )


_API_PLANNERS = {
    "workflow_run": _after_training,
    "repository_dispatch": _model_promoted,
    "workflow_dispatch": _manual_deploy,
}


def training_plan(ctx: Context, cwd: Path | None = None) -> Plan:
    """What the Training workflow trains for this event: refuses a manual run for an
    environment whose branch does not contain the commit run on."""
    if not ctx.environment:
        return Plan(
            go=False,
            reason=f"branch `{ctx.branch}` maps to no environment in `[tool.purchase-predict]`",
        )
    if ctx.event_name == "workflow_dispatch":
        return Plan(go=True, ref=_dispatched_commit(ctx, cwd))
    return Plan(go=True, ref=ctx.sha)


def _dispatched_commit(ctx: Context, cwd: Path | None) -> str:
    """The commit a manual run was started on, provided the environment's branch has it."""
    try:
        return commit_on_branch(ctx.sha, ctx.branch, cwd)
    except Refused:
        raise Refused(
            f"a manual run for {ctx.environment!r} must run on its branch {ctx.branch!r} (or a "
            f"commit on it); {ctx.ref or ctx.sha} at {ctx.sha[:12]} is not on it"
        ) from None


# --- output -----------------------------------------------------------------------------------


def outputs(kind: str, ctx: Context, plan: Plan) -> dict[str, str]:
    """The step outputs, every key always present."""
    flag = "true" if plan.go else "false"
    common = {"reason": plan.reason, "ref": plan.ref, "dry-run": _bool(ctx.dry_run)}
    if kind == "training":
        return {"train": flag, **common}
    return {
        "deploy": flag,
        **common,
        "model-version": plan.model_version,
        "image-tag": plan.image_tag,
        "revision": plan.revision,
        "training-sha": plan.training_sha,
    }


def summary(kind: str, ctx: Context, plan: Plan) -> str:
    """The Markdown a person reads first in the run's summary."""
    title = "API deploy" if kind == "api" else "Training"
    if not plan.go:
        nothing = "nothing to deploy" if kind == "api" else "nothing to train"
        return f"## {title}: skipped\n\n{ctx.event_name}: {plan.reason}: {nothing}.\n"
    if kind == "api":
        what = f"build `{plan.ref}`"
        if plan.image_tag:
            what = f"roll back to the image `{plan.image_tag}`"
        elif plan.revision:
            what = f"roll back to the revision `{plan.revision}`"
        line = (
            f"Branch `{ctx.branch}`: {what} and deploy it to **{ctx.environment}** (model version "
            f"{plan.model_version or 'of the alias'}, dry run: {_bool(ctx.dry_run)})."
        )
    else:
        line = (
            f"Train `{plan.ref}` for **{ctx.environment}** (branch `{ctx.branch}`, dry run: "
            f"{_bool(ctx.dry_run)})."
        )
    notes = "".join(f"\n- {note}" for note in plan.notes)
    return f"## {title}: {ctx.event_name}\n\n{line}\n{notes}\n"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _context(args: argparse.Namespace) -> Context:
    event_path = Path(args.event_path)
    try:
        payload = json.loads(event_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise Refused(f"cannot read the event payload {event_path}: {err}") from None
    inputs = payload.get("inputs") if isinstance(payload.get("inputs"), dict) else {}
    return Context(
        event_name=args.event_name,
        payload=payload if isinstance(payload, dict) else {},
        repository=args.repository,
        sha=args.sha,
        ref=args.ref,
        environment=args.environment,
        branch=args.branch,
        dry_run=args.dry_run == "true",
        inputs={str(k): str(v if v is not None else "") for k, v in inputs.items()},
    )


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = command_parser(
        "trigger_plan.py",
        "Check a triggering GitHub event and plan the API or Training run.",
        EPILOG,
    )
    parser.add_argument("kind", choices=("api", "training"), help="which entry workflow plans")
    parser.add_argument("--environment", default="", help="resolved environment (empty: none)")
    parser.add_argument("--branch", required=True, help="the environment's (or event's) branch")
    parser.add_argument(
        "--dry-run", default="", help="`true` (the PIPELINE_DRY_RUN variable) plans a dry run"
    )
    parser.add_argument("--event-name", default=env("GITHUB_EVENT_NAME", ""))
    parser.add_argument("--event-path", default=env("GITHUB_EVENT_PATH", ""))
    parser.add_argument("--repository", default=env("GITHUB_REPOSITORY", ""))
    parser.add_argument("--sha", default=env("GITHUB_SHA", ""))
    parser.add_argument("--ref", default=env("GITHUB_REF", ""))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    if not (args.event_name and args.event_path and args.repository and args.sha):
        print("trigger_plan: error: needs the GitHub event name, payload, repository and sha")
        return 2
    try:
        ctx = _context(args)
        plan = (api_plan if args.kind == "api" else training_plan)(ctx)
    except Refused as err:
        print(f"::error title=trigger-plan::{err}")
        append_to("GITHUB_STEP_SUMMARY", f"## Refused: {args.event_name}\n\n{err}.\n")
        return 1
    lines = "".join(f"{key}={value}\n" for key, value in outputs(args.kind, ctx, plan).items())
    append_to("GITHUB_OUTPUT", lines)
    append_to("GITHUB_STEP_SUMMARY", summary(args.kind, ctx, plan))
    print(lines, end="")
    for note in plan.notes:
        print(f"note: {note}")
    if not plan.go:
        print(f"{args.event_name}: {plan.reason}: nothing to do")
    return 0


if __name__ == "__main__":
    sys.exit(main())
