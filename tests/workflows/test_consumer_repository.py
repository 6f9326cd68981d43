"""Another repository calls the reusable workflows, exactly as docs/workflows.md shows, under act.

GitHub semantics these tests stand for (quoted from docs.github.com):

- workflow syntax, ``$/``: "`$/` always resolves against the repository of the file it appears
  in, not the repository that called it": the called workflow's actions and scripts come from
  this repository at the pinned SHA. act 0.2.89 predates ``$/``; ``act_harness``'s
  ``prepare_called_repository`` serves the pinned commit with ``$/x`` rewritten to
  ``OWNER/REPO/x@<sha>`` (``--local-repository``), and the caller holds decoy ``actions/`` and
  ``scripts/`` that fail loudly, so a resolution into the caller's workspace cannot pass.
- reusable workflows reference: "the `github` context is always associated with the caller
  workflow" (``github.sha`` and ``github.token`` are the caller's).
- variables reference: "For reusable workflows, the variables from the caller workflow's
  repository are used."
- automatic token authentication: "The token's permissions are limited to the repository that
  contains your workflow" (the checkout stand-in refuses another private repository with it).

Every act run is bounded by ``act_harness.ACT_TIMEOUT_S``.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from purchase_rig.act import (
    DECOY_ACTION,
    ROOT,
    ActRun,
    CalledRepository,
    act_compatible,
    git,
    prepare_called_repository,
    prepare_consumer_repo,
    run_act,
    serve_called_commit,
    workflow_files,
)

DOCS = ROOT / "docs" / "workflows.md"
SECTION = "## Calling the reusable workflows from another repository"
# act's github.token is the GITHUB_TOKEN secret: the caller's own token.
CALLER_TOKEN = "caller-github-token"
API_REPOSITORY = "example/purchase-predict-api"
TRAINING_REPOSITORY = "example/purchase-predict-training"
DEPLOY_REPOSITORY = "example/purchase-predict-deploy"

# The caller's own configuration: names that differ from this repository's, so the plan shows
# which one was read.
CALLER_CONFIG = """\
[tool.purchase-predict]
model_name = "caller_model"
experiment_name = "caller-experiment"
image_name = "caller-api"
fallback_environment = "staging"
gate_f1_tolerance = 0.02

[tool.purchase-predict.environments.staging]
branch = "staging"
alias = "staging"
service = "caller-api-staging"
region = "europe-west4"
artifact_repository = "caller-images"
min_instances = 0
max_instances = 1
memory = "1Gi"
cpu = "1"
concurrency = 10
"""
KEDRO_PROJECT = {
    "purchase_predict/pyproject.toml": (
        '[project]\nname = "caller-training"\nversion = "0.1.0"\n\n'
        '[tool.kedro]\npackage_name = "caller_training"\nproject_name = "caller-training"\n'
    ),
    "purchase_predict/conf/base/catalog.yml": (
        "training_run:\n  type: json.JSONDataset\n  filepath: data/08_reporting/training_run.json\n"
    ),
    "purchase_predict/conf/cloud/catalog.yml": "# gs:// paths of the cloud environment\n",
}
API_PROJECT = {
    "purchase_predict_api/Dockerfile": "FROM python:3.11-slim\nARG MODEL_DIR=model\n",
    # A caller's own smoke request (the smoke-request input; without it the contract's example).
    "purchase_predict_api/smoke.json": '{"product_id": 1005115}\n',
}


def _doc_examples() -> dict[str, str]:
    """The YAML examples of the docs section, by the repository their first comment names."""
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index(SECTION) :]
    section = section[: section.index("\n## ", len(SECTION))]
    examples = {}
    for block in re.findall(r"```yaml\n(.*?)```", section, re.DOTALL):
        where = re.match(r"# \.github/workflows/(\S+) in (\S+)", block)
        assert where, f"a caller example must say which file of which repository it is:\n{block}"
        examples[where[2].replace("OWNER/", "example/")] = block
    return examples


def _caller_workflow(example: str, called: CalledRepository, **with_: Any) -> tuple[str, str]:
    """(file name, text) of a docs example pinned to ``called``, plus a job reading its outputs.

    Only the placeholders change (``OWNER``, ``<full commit sha>``) and ``with_`` is merged into
    the calling job's ``with:``; the report job prints the called workflow's outputs on one
    ``REPORT`` line, as the entry workflows' report jobs do.
    """
    name = re.match(r"# \.github/workflows/(\S+)", example)[1]  # type: ignore[index]
    pinned = example.replace("@<full commit sha>", f"@{called.sha}").replace("OWNER/", "example/")
    document = yaml.safe_load(pinned)
    document["on"] = document.pop(True)  # YAML 1.1 reads the key `on` as true
    (job_id,) = document["jobs"]
    document["jobs"][job_id]["with"].update(with_)
    document["jobs"]["report"] = {
        "needs": job_id,
        "if": "always()",
        "runs-on": "ubuntu-latest",
        "permissions": {},
        "steps": [
            {
                "env": {"OUTPUTS": f"${{{{ toJSON(needs.{job_id}.outputs) }}}}"},
                "run": "python3 -c 'import json, os; "
                'print("REPORT", json.dumps(json.loads(os.environ["OUTPUTS"])))\'',
            }
        ],
    }
    return name, yaml.safe_dump(document, sort_keys=False)


def _report(run: ActRun) -> dict[str, str]:
    lines = [line for line in run.lines("report") if line.startswith("REPORT ")]
    assert len(lines) == 1, run.explain()
    return json.loads(lines[0].removeprefix("REPORT "))


def _no_decoy(run: ActRun) -> None:
    assert "DECOY" not in run.explain() and "title=decoy" not in run.explain(), run.explain()


@pytest.fixture(scope="module")
def called(tmp_path_factory: pytest.TempPathFactory) -> CalledRepository:
    """This repository as a caller sees it: committed as example/purchase-predict."""
    return prepare_called_repository(tmp_path_factory.mktemp("called"))


@pytest.fixture
def caller(
    act_binary: str, called: CalledRepository, tmp_path: Path
) -> Any:  # a factory: (slug, example, files, drop, with_, **run_act kwargs) -> (ActRun, sha)
    """Build a caller repository from a docs example and run it with act."""

    def _run(
        slug: str,
        example: str,
        *,
        files: dict[str, str] | None = None,
        drop: tuple[str, ...] = (),
        with_: dict[str, Any] | None = None,
        pin: CalledRepository | None = None,
        serve: dict[str, Path] | None = None,
        **kwargs: Any,
    ) -> tuple[ActRun, str]:
        """``pin``: the called commit the example pins (default ``called``); ``serve``: what
        act serves for which ``OWNER/REPO@sha`` (default: that commit, ``$/`` faithfully)."""
        pin = pin or called
        name, workflow = _caller_workflow(_doc_examples()[example], pin, **(with_ or {}))
        content = {
            "pyproject.toml": CALLER_CONFIG,
            **API_PROJECT,
            **KEDRO_PROJECT,
            **(files or {}),
            f".github/workflows/{name}": workflow,
        }
        for path in drop:
            del content[path]
        runs = len(list(tmp_path.glob("caller-*")))
        repo = tmp_path / f"caller-{runs}" / slug.replace("/", "+")
        sha = prepare_consumer_repo(repo, slug, content)
        run = run_act(
            repo,
            "workflow_dispatch",
            name,
            {},
            act=act_binary,
            work=repo.parent / "work",
            local_repositories=pin.local_repositories if serve is None else serve,
            secrets={"GITHUB_TOKEN": CALLER_TOKEN, **kwargs.pop("secrets", {})},
            **kwargs,
        )
        return run, sha

    return _run


# --- point 12: the documented calls, with $/ resolved in the called repository ---------------


def test_deploy_api_called_from_the_api_repository_as_documented(caller: Any) -> None:
    run, sha = caller(API_REPOSITORY, API_REPOSITORY, with_={"dry-run": True})
    assert run.returncode == 0, run.explain()
    _no_decoy(run)
    assert run.job("Deploy API (staging)") == "success"
    # The caller's code at the caller's commit, planned with the caller's configuration.
    assert _report(run) == {
        "environment": "staging",
        "decision": "dry-run",
        "git-sha": sha,
        "image": f"europe-west4-docker.pkg.dev/my-project/caller-images/caller-api:{sha}",
        "digest": "",
        "model-version": "",
        "revision": "",
        "tag-url": "",
        "url": "",
    }
    assert "models:/caller_model@staging" in "\n".join(run.lines("Deploy API"))


def test_train_called_from_the_training_repository_as_documented(caller: Any) -> None:
    run, sha = caller(TRAINING_REPOSITORY, TRAINING_REPOSITORY, with_={"dry-run": True})
    assert run.returncode == 0, run.explain()
    _no_decoy(run)
    assert run.job("Train (staging)") == "success"
    assert _report(run) == {
        "environment": "staging",
        "decision": "dry-run",
        "promoted": "false",
        "model-version": "",
        "run-id": "",
        "f1": "",
    }
    summary = run.summary("Train (staging)")
    assert f"`{sha}`" in summary and "caller_model@staging" in summary


def test_a_resolution_into_the_callers_workspace_would_hit_the_decoys(
    caller: Any, called: CalledRepository, tmp_path: Path
) -> None:
    """The emulation is faithful only if the other reading of `$/` fails: serve the pinned
    commit with the in-repository rewrite (`$/x` -> `./x`, the caller's workspace) instead."""
    workspace_rewrite = tmp_path / "workspace-rewrite"
    shutil.copytree(called.repo, workspace_rewrite, ignore=shutil.ignore_patterns(".git"))
    for path in workflow_files(workspace_rewrite):
        path.write_text(act_compatible(path.read_text(encoding="utf-8")), encoding="utf-8")
    wrong = {f"{called.slug}@{called.sha}": workspace_rewrite}
    run, _ = caller(API_REPOSITORY, API_REPOSITORY, with_={"dry-run": True}, serve=wrong)
    assert run.returncode != 0
    assert "of the CALLER ran: $/ resolved into the caller's workspace" in run.explain()


def test_dollar_slash_resolves_at_the_pinned_commit_not_the_called_repositorys_head(
    caller: Any, called: CalledRepository, tmp_path: Path
) -> None:
    """A newer commit of the called repository whose resolve-environment action fails loudly:
    a caller pinned to the older SHA must not see it, one pinned to the newer one must."""
    newer_repo = tmp_path / "newer"
    shutil.copytree(called.repo, newer_repo)
    action = newer_repo / "actions" / "resolve-environment" / "action.yml"
    action.write_text(DECOY_ACTION.format(name="resolve-environment").replace("CALLER", "NEWER"))
    git(newer_repo, "commit", "--quiet", "--all", "--message", "newer")
    newer = serve_called_commit(
        newer_repo, called.slug, git(newer_repo, "rev-parse", "HEAD"), tmp_path / "newer-served"
    )
    serve = {**called.local_repositories, **newer.local_repositories}
    run, _ = caller(API_REPOSITORY, API_REPOSITORY, with_={"dry-run": True}, serve=serve)
    assert run.returncode == 0, run.explain()
    assert "of the NEWER ran" not in run.explain()

    run, _ = caller(API_REPOSITORY, API_REPOSITORY, with_={"dry-run": True}, pin=newer, serve=serve)
    assert run.returncode != 0
    assert "actions/resolve-environment of the NEWER ran" in run.explain()


# --- point 13: what a caller trips on --------------------------------------------------------


def test_the_callers_pipeline_dry_run_variable_makes_a_dry_run(caller: Any) -> None:
    """No dry-run input, PIPELINE_DRY_RUN=true set by the caller: nothing real may happen."""
    run, _ = caller(API_REPOSITORY, API_REPOSITORY, variables={"PIPELINE_DRY_RUN": "true"})
    assert run.returncode == 0, run.explain()
    assert _report(run)["decision"] == "dry-run"
    assert run.outputs("Deploy API", step="settings")["mode"] == "dry-run"
    assert not run.outputs("Deploy API", step="google"), "authenticated in a dry run"


def test_the_callers_training_variables_reach_train_yml(caller: Any) -> None:
    run, _ = caller(
        TRAINING_REPOSITORY,
        TRAINING_REPOSITORY,
        variables={"PIPELINE_DRY_RUN": "true", "KEDRO_ENV": "cloud"},
    )
    assert run.returncode == 0, run.explain()
    assert _report(run)["decision"] == "dry-run"
    assert "`kedro run --env cloud`" in run.summary("Train (staging)")


def test_building_another_private_repository_needs_its_own_checkout_token(
    caller: Any, tmp_path: Path
) -> None:
    """The third docs example: a deploy repository builds the API repository's staging."""
    api = tmp_path / "api-repository"
    api_sha = prepare_consumer_repo(
        api, API_REPOSITORY, {"pyproject.toml": CALLER_CONFIG, **API_PROJECT}
    )
    git(api, "branch", "staging")
    others = {"env": {"STANDIN_REPOSITORIES": f"{API_REPOSITORY}={api}"}}
    run, caller_sha = caller(
        DEPLOY_REPOSITORY,
        DEPLOY_REPOSITORY,
        drop=tuple(API_PROJECT),
        with_={"dry-run": True},
        secrets={"API_REPOSITORY_READ_TOKEN": "fine-grained-contents-read"},
        **others,
    )
    assert run.returncode == 0, run.explain()
    assert _report(run)["git-sha"] == api_sha != caller_sha

    # Without the token, the caller's github.token cannot read the other private repository.
    run, _ = caller(
        DEPLOY_REPOSITORY,
        DEPLOY_REPOSITORY,
        drop=tuple(API_PROJECT),
        with_={"dry-run": True},
        **others,
    )
    assert run.returncode != 0
    assert "github.token reads only" in run.explain()

    # The old example's `ref: ${{ github.sha }}` is the caller's commit: not in that repository.
    run, caller_sha = caller(
        DEPLOY_REPOSITORY,
        DEPLOY_REPOSITORY,
        drop=tuple(API_PROJECT),
        with_={"dry-run": True, "ref": "${{ github.sha }}"},
        secrets={"API_REPOSITORY_READ_TOKEN": "fine-grained-contents-read"},
        **others,
    )
    assert run.returncode != 0
    assert f"{caller_sha} is not a branch or commit of {API_REPOSITORY}" in run.explain()


SMOKE = "purchase_predict_api/smoke.json"


@pytest.mark.parametrize(
    ("example", "missing", "message"),
    [
        (API_REPOSITORY, SMOKE, f"smoke-request {SMOKE} is missing"),
        (API_REPOSITORY, "purchase_predict_api/Dockerfile", "Dockerfile is missing"),
        (TRAINING_REPOSITORY, "purchase_predict/pyproject.toml", "pyproject.toml is missing"),
        (TRAINING_REPOSITORY, "pyproject.toml", "config pyproject.toml does not exist"),
    ],
)
def test_a_caller_layout_without_a_required_file_fails_first_and_clearly(
    caller: Any, example: str, missing: str, message: str
) -> None:
    # The smoke request is required only when the caller names one.
    inputs = {"dry-run": True} | ({"smoke-request": SMOKE} if missing == SMOKE else {})
    run, _ = caller(example, example, drop=(missing,), with_=inputs)
    assert run.returncode != 0
    errors = [
        line for line in run.explain().splitlines() if "::error title=caller layout::" in line
    ]
    assert any(message in line for line in errors), run.explain()
    # Before anything else: not even the commit or the environment was resolved.
    printed = "\n".join(run.lines())
    assert "building " not in printed and "deploy=true" not in printed, printed
