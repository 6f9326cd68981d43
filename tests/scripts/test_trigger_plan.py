"""scripts/trigger_plan.py on real git repositories: trust, refs, which commit ships.

The payload shapes follow GitHub's webhook schemas (octokit/webhooks ``workflow_run``: ``event``,
``head_repository``, ``head_branch``, ``head_sha`` are always present) and the events doc
("Events that trigger workflows": for ``workflow_run`` and ``repository_dispatch``,
``GITHUB_SHA`` is the last commit on the default branch).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from purchase_delivery.trigger_plan import Context, Refused, api_plan, summary, training_plan
from purchase_rig.act import git

REPOSITORY = "example/purchase-predict"
# The API plan for an event resolved to staging, as api.yml's resolve job calls it.
STAGING_API = ("api", "--environment", "staging", "--branch", "staging")
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "trigger_plan.py"


def _commit(repo: Path, message: str) -> str:
    (repo / "log.txt").open("a").write(f"{message}\n")
    git(repo, "add", "log.txt")
    git(repo, "commit", "--quiet", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> dict[str, Any]:
    """A clone (the resolve job's fetch-depth: 0 checkout) of an origin where master has
    m1 <- m2 and staging forked at m1 with s1 <- s2."""
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "--quiet", "--initial-branch", "master")
    m1 = _commit(origin, "m1")
    git(origin, "checkout", "--quiet", "-b", "staging")
    s1 = _commit(origin, "s1")
    s2 = _commit(origin, "s2")
    git(origin, "checkout", "--quiet", "master")
    m2 = _commit(origin, "m2")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(origin), str(clone))
    return {"path": clone, "m1": m1, "m2": m2, "s1": s1, "s2": s2}


def _ctx(event: str, payload: dict[str, Any], **kwargs: Any) -> Context:
    fields: dict[str, Any] = {
        "event_name": event,
        "payload": payload,
        "repository": REPOSITORY,
        "sha": "",
        "ref": "refs/heads/master",
        "environment": "staging",
        "branch": "staging",
    }
    fields.update(kwargs)
    return Context(**fields)


def _workflow_run(head_sha: str, event: str = "push", head_repo: str = REPOSITORY) -> dict:
    return {
        "workflow_run": {
            "name": "Training",
            "conclusion": "success",
            "event": event,
            "head_branch": "staging",
            "head_sha": head_sha,
            "head_repository": {"full_name": head_repo},
        }
    }


# --- workflow_run: trust --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "head_repo", "why"),
    [
        ("pull_request", "someone/purchase-predict", "triggered by 'pull_request'"),
        ("pull_request", REPOSITORY, "triggered by 'pull_request'"),
        ("pull_request_target", REPOSITORY, "triggered by 'pull_request_target'"),
        ("push", "someone/purchase-predict", "ran on someone/purchase-predict's code"),
        ("workflow_dispatch", "", "ran on an unknown repository's code"),
    ],
)
def test_workflow_run_from_an_untrusted_run_deploys_nothing(
    repo: dict[str, Any], event: str, head_repo: str, why: str
) -> None:
    plan = api_plan(_ctx("workflow_run", _workflow_run(repo["s2"], event, head_repo)), repo["path"])
    assert not plan.go
    assert plan.reason.startswith("untrusted trigger: ")
    assert why in plan.reason
    assert plan.ref == ""


def test_workflow_run_payload_without_the_run_fields_is_untrusted(repo: dict[str, Any]) -> None:
    payload = {"workflow_run": {"conclusion": "success", "head_branch": "staging"}}
    plan = api_plan(_ctx("workflow_run", payload), repo["path"])
    assert not plan.go and "untrusted trigger" in plan.reason


# --- workflow_run: which commit ships ------------------------------------------------------


def test_workflow_run_builds_the_branch_head_not_the_training_commit(
    repo: dict[str, Any],
) -> None:
    # Training ran on s1; s2 (API code) was pushed while it ran.
    plan = api_plan(_ctx("workflow_run", _workflow_run(repo["s1"])), repo["path"])
    assert plan.go
    assert plan.ref == repo["s2"]
    assert plan.training_sha == repo["s1"]
    assert any("moved on" in note for note in plan.notes)


def test_workflow_run_at_the_branch_head_builds_it(repo: dict[str, Any]) -> None:
    plan = api_plan(_ctx("workflow_run", _workflow_run(repo["s2"])), repo["path"])
    assert (plan.ref, plan.training_sha, plan.notes) == (repo["s2"], repo["s2"], [])


def test_workflow_run_from_a_manual_training_run_is_trusted(repo: dict[str, Any]) -> None:
    plan = api_plan(
        _ctx("workflow_run", _workflow_run(repo["s2"], "workflow_dispatch")), repo["path"]
    )
    assert plan.go and plan.ref == repo["s2"]


def test_unmapped_branch_deploys_nothing(repo: dict[str, Any]) -> None:
    plan = api_plan(
        _ctx("workflow_run", _workflow_run(repo["s2"]), environment="", branch="feature/x"),
        repo["path"],
    )
    assert not plan.go and "maps to no environment" in plan.reason


# --- repository_dispatch: refs -------------------------------------------------------------


def _dispatch(**client: str) -> dict[str, Any]:
    return {"action": "model-promoted", "client_payload": {"environment": "staging", **client}}


@pytest.mark.parametrize("ref", ["", "staging", "refs/heads/staging"])
def test_repository_dispatch_builds_the_environment_branch_head(
    repo: dict[str, Any], ref: str
) -> None:
    payload = _dispatch(model_version="7", **({"ref": ref} if ref else {}))
    plan = api_plan(_ctx("repository_dispatch", payload), repo["path"])
    assert (plan.ref, plan.model_version) == (repo["s2"], "7")


def test_repository_dispatch_accepts_a_commit_on_the_branch(repo: dict[str, Any]) -> None:
    plan = api_plan(
        _ctx("repository_dispatch", _dispatch(model_version="3", ref=repo["s1"])), repo["path"]
    )
    assert plan.ref == repo["s1"]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("master", "neither the environment's branch 'staging' nor a full commit SHA"),
        ("refs/pull/12/head", "neither the environment's branch"),
        ("m2", "neither the environment's branch"),
        ("0" * 40, "is not in this repository"),
    ],
)
def test_repository_dispatch_refuses_other_refs(
    repo: dict[str, Any], ref: str, message: str
) -> None:
    with pytest.raises(Refused, match=r"client_payload\.ref: ") as err:
        api_plan(_ctx("repository_dispatch", _dispatch(model_version="3", ref=ref)), repo["path"])
    assert message in str(err.value)


def test_repository_dispatch_refuses_a_commit_of_another_branch(repo: dict[str, Any]) -> None:
    with pytest.raises(Refused, match="is not on the environment's branch 'staging'"):
        api_plan(
            _ctx("repository_dispatch", _dispatch(model_version="3", ref=repo["m2"])),
            repo["path"],
        )


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ({"model_version": "latest"}, "client_payload.model_version"),
        ({"model_version": "0"}, "client_payload.model_version"),
        ({"model_version": "3", "sha": "abc"}, "client_payload.sha"),
    ],
)
def test_repository_dispatch_refuses_a_bad_payload(
    repo: dict[str, Any], client: dict[str, str], message: str
) -> None:
    with pytest.raises(Refused, match=message):
        api_plan(_ctx("repository_dispatch", _dispatch(**client)), repo["path"])


# --- workflow_dispatch ---------------------------------------------------------------------


def test_api_dispatch_on_the_environment_branch_builds_it(repo: dict[str, Any]) -> None:
    ctx = _ctx("workflow_dispatch", {}, sha=repo["s2"], ref="refs/heads/staging")
    assert api_plan(ctx, repo["path"]).ref == repo["s2"]


def test_api_dispatch_on_another_branch_is_refused(repo: dict[str, Any]) -> None:
    ctx = _ctx("workflow_dispatch", {}, sha=repo["m2"], ref="refs/heads/master")
    with pytest.raises(Refused, match="must run on its branch 'staging'"):
        api_plan(ctx, repo["path"])


def test_api_dispatch_of_a_rollback_is_accepted_from_any_ref(repo: dict[str, Any]) -> None:
    old = repo["m1"]
    ctx = _ctx("workflow_dispatch", {}, sha=repo["m2"], inputs={"image-tag": old})
    plan = api_plan(ctx, repo["path"])
    # Started from master, for staging: the configuration comes from staging's head.
    assert (plan.go, plan.image_tag, plan.ref) == (True, old, repo["s2"])


def test_api_dispatch_rollback_needs_a_full_sha(repo: dict[str, Any]) -> None:
    ctx = _ctx("workflow_dispatch", {}, sha=repo["m2"], inputs={"image-tag": "v1.2"})
    with pytest.raises(Refused, match="image-tag must be the full 40-character commit SHA"):
        api_plan(ctx, repo["path"])


def test_api_dispatch_of_a_rollback_to_a_revision_is_accepted_from_any_ref(
    repo: dict[str, Any],
) -> None:
    inputs = {"revision": "purchase-predict-api-staging-00042-abc"}
    ctx = _ctx("workflow_dispatch", {}, sha=repo["m2"], inputs=inputs)
    plan = api_plan(ctx, repo["path"])
    assert (plan.go, plan.revision, plan.image_tag, plan.ref) == (
        True,
        inputs["revision"],
        "",
        repo["s2"],
    )
    assert "roll back to the revision `purchase-predict-api-staging-00042-abc`" in summary(
        "api", ctx, plan
    )


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"revision": "Svc-00001-abc"}, "revision must be a Cloud Run revision name"),
        ({"revision": "svc-00001-abc-"}, "revision must be a Cloud Run revision name"),
        ({"revision": "s" * 64}, "revision must be a Cloud Run revision name"),
        ({"revision": "svc-1", "image-tag": "a" * 40}, "image-tag or revision, not both"),
        ({"revision": "svc-1", "model-version": "3"}, "model-version cannot change a revision"),
    ],
)
def test_api_dispatch_of_a_bad_revision_rollback_is_refused(
    repo: dict[str, Any], inputs: dict[str, str], message: str
) -> None:
    ctx = _ctx("workflow_dispatch", {}, sha=repo["m2"], inputs=inputs)
    with pytest.raises(Refused, match=message):
        api_plan(ctx, repo["path"])


def test_training_dispatch_must_be_on_the_environment_branch(repo: dict[str, Any]) -> None:
    on_branch = _ctx("workflow_dispatch", {}, sha=repo["s1"], ref="refs/heads/feature")
    assert training_plan(on_branch, repo["path"]).ref == repo["s1"]
    elsewhere = _ctx("workflow_dispatch", {}, sha=repo["m2"], ref="refs/heads/master")
    with pytest.raises(Refused, match=r"refs/heads/master at .* is not on it"):
        training_plan(elsewhere, repo["path"])


def test_push_plans_the_pushed_commit(repo: dict[str, Any]) -> None:
    assert api_plan(_ctx("push", {}, sha=repo["s2"]), repo["path"]).ref == repo["s2"]
    assert training_plan(_ctx("push", {}, sha=repo["s2"]), repo["path"]).ref == repo["s2"]


# --- the command line ----------------------------------------------------------------------


def _cli(repo: dict[str, Any], tmp_path: Path, event: str, payload: dict[str, Any], *extra: str):
    event_path = tmp_path / "event.json"
    event_path.write_text(json.dumps(payload))
    output, summary = tmp_path / "output", tmp_path / "summary"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *extra],
        cwd=repo["path"],
        capture_output=True,
        text=True,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "GITHUB_EVENT_NAME": event,
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_REPOSITORY": REPOSITORY,
            "GITHUB_SHA": repo["m2"],
            "GITHUB_REF": "refs/heads/master",
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
        },
    )
    lines = output.read_text() if output.exists() else ""
    outputs = dict(line.split("=", 1) for line in lines.splitlines())
    return done, outputs, summary.read_text() if summary.exists() else ""


def test_cli_writes_every_output_and_the_summary(repo: dict[str, Any], tmp_path: Path) -> None:
    args = (*STAGING_API, "--dry-run", "true")
    done, out, summary = _cli(repo, tmp_path, "workflow_run", _workflow_run(repo["s1"]), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert out == {
        "deploy": "true",
        "reason": "",
        "ref": repo["s2"],
        "dry-run": "true",
        "model-version": "",
        "image-tag": "",
        "revision": "",
        "training-sha": repo["s1"],
    }
    assert "## API deploy: workflow_run" in summary and "moved on" in summary


def test_cli_untrusted_run_succeeds_with_nothing_to_deploy(
    repo: dict[str, Any], tmp_path: Path
) -> None:
    payload = _workflow_run(repo["s2"], "pull_request", "someone/fork")
    done, out, summary = _cli(
        repo,
        tmp_path,
        "workflow_run",
        payload,
        *STAGING_API,
    )
    assert done.returncode == 0
    assert out["deploy"] == "false" and out["ref"] == ""
    assert "## API deploy: skipped" in summary
    assert "untrusted trigger" in summary and "'pull_request'" in summary


def test_cli_refusal_exits_1_with_an_annotation(repo: dict[str, Any], tmp_path: Path) -> None:
    payload = _dispatch(model_version="3", ref="master")
    done, out, summary = _cli(
        repo,
        tmp_path,
        "repository_dispatch",
        payload,
        *STAGING_API,
    )
    assert done.returncode == 1
    assert out == {}
    assert done.stdout.startswith("::error title=trigger-plan::client_payload.ref: ")
    assert "## Refused: repository_dispatch" in summary


def test_cli_without_the_github_context_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "api", "--branch", "staging"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "needs the GitHub event name" in done.stdout


def test_help_explains_outputs_and_exit_status() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    for words in ("training-sha", "exit status", "1 refused", "GITHUB_EVENT_PATH"):
        assert words in done.stdout
