"""The actual workflows, run by act on this machine against the local cloud: the whole pipeline.

Only the remote actions are replaced (``tests/workflows/stand-ins``: checkout clones the local
copy, setup-uv uses the host's uv, auth mints placeholder tokens, setup-gcloud uses the host's
gcloud). Everything else is real: ``kedro run`` and ``scripts/register_model.py`` against a real
``mlflow server``, ``docker build``/``push`` to the reference registry, and ``gcloud run deploy``
/ ``update-traffic`` against the Cloud Run stand-in, which runs the image as containers.

The scenario is one story, in order (each test needs the state the previous ones left):

1. push to ``staging`` -> Training: a new model version, alias ``staging`` moved to it;
2. ``workflow_run`` built from step 1 -> API: image ``...:<sha>`` in the registry, a ready
   revision that passed its smoke test and took all traffic; ``/predict`` on the service URL
   answers with the model version of step 1;
2b. a manual rollback to that image with ``API_INJECT_FAULTS=error-rate=0.2`` -> the revision
   passes the single smoke request, fails the observed rollout step (one request in five
   answers 500): all traffic goes back to step 2's revision, the workflow fails with the
   measured error rate in its summary;
2c. a build with ``API_INJECT_FAULTS=skew=0.05`` -> the revision answers the reference sample
   differently from the model at training time and never gets traffic;
2d. a manual rollback to the same image, without faults -> a rollout like any deploy: it takes
   all traffic and the earlier tags go;
2e. staging's ``traffic_steps`` set to ``[10, 50, 100]`` in the code's pyproject, then a build
   -> a canary: 10 %, 50 %, 100 %, each judged on the stand-in's metrics against the revision
   it replaces, which served the rest; the earlier tag goes;
2f. a manual rollback to the revision 2e replaced, by its name -> nothing deployed: it is tagged
   ``rollback-...``, smoke-tested and rolled out in the same steps, and serves again;
3. a push to ``staging`` that breaks ``/predict`` -> API: the new revision fails its smoke test,
   traffic stays on the serving revision, the workflow fails with the reason in its summary;
4. push to a feature branch -> neither workflow trains or deploys anything.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from purchase_contract.features import example_session
from purchase_rig.act import (
    REPOSITORY,
    ActRun,
    git,
    prepare_project_repo,
    run_act,
)

from .conftest import assert_loopback_only, revision_port, run

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(2400)]

PROJECT_ID = "local-project"  # CLOUDSDK_CORE_PROJECT of the stand-in's gcloud environment
ENVIRONMENT = "staging"
FEATURE_BRANCH = "feature/new-features"
# Bounds of each act run: a cold uv install + kedro run, or a cold image build.
TRAINING_TIMEOUT_S = 1200
DEPLOY_TIMEOUT_S = 1200
QUICK_TIMEOUT_S = 180
BROKEN_ROUTE = "purchase_predict_api/app/api/routes/predict.py"
BREAK_AFTER = "    request.state.sessions = len(probabilities)\n"
BREAKAGE = '    raise RuntimeError("deliberately broken by the end-to-end test")\n'


class Scenario:
    """The repository copy, the tools' environment and what each step left behind."""

    def __init__(
        self, repo: Path, work: Path, env: dict[str, str], act: str, settings: dict[str, Any]
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.work = work
        self.env = env
        self.act = act
        self.done: dict[str, dict[str, str]] = {}
        self.runs = 0

    def variables(self) -> dict[str, str]:
        """Repository variables, as a real repository would set them (docs/gcp-setup.md)."""
        return {
            "GCP_PROJECT_ID": PROJECT_ID,
            "GCP_WORKLOAD_IDENTITY_PROVIDER": (
                "projects/123456789/locations/global/workloadIdentityPools/github/providers/act"
            ),
            "GCP_SERVICE_ACCOUNT": f"deployer-staging@{PROJECT_ID}.iam.gserviceaccount.com",
            # What the GitHub environment staging declares (docs/gcp-setup.md).
            "CLOUD_RUN_SERVICE": self.settings["service"],
            "CLOUD_RUN_SERVICE_ACCOUNT": f"api-staging@{PROJECT_ID}.iam.gserviceaccount.com",
            # The stand-in's metrics have no lag: each rollout step is observed for seconds.
            "ROLLOUT_OBSERVE_SECONDS": "2",
            "ROLLOUT_METRICS_DELAY": "0",
            "ROLLOUT_PROBE_RATE": "100",
            "MLFLOW_TRACKING_URI": self.env["MLFLOW_TRACKING_URI"],
            "ARTIFACT_REGISTRY_HOST": self.env["REGISTRY"],
            "API_BASE_IMAGE": self.env["BASE_IMAGE"],
            "TRAINING_SAMPLE_DATA": "true",
        }

    def act_run(
        self,
        event: str,
        workflow: str,
        payload: dict[str, Any],
        timeout: float,
        variables: dict[str, str] | None = None,
    ) -> ActRun:
        self.runs += 1
        payload = {"repository": {"full_name": REPOSITORY}, **payload}
        return run_act(
            self.repo,
            event,
            workflow,
            payload,
            act=self.act,
            work=self.work / f"run-{self.runs}",
            variables={**self.variables(), **(variables or {})},
            # The runner's environment: this engine has no bridge network (docs/workflows.md).
            host_env={**self.env, "DOCKER_BUILD_NETWORK": "host"},
            timeout=timeout,
        )

    def require(self, step: str) -> dict[str, str]:
        if step not in self.done:
            pytest.skip(f"needs step {step!r} of the scenario, which did not complete")
        return self.done[step]


@pytest.fixture(scope="module")
def scenario(
    local_cloud: dict[str, str],
    act_binary: str,
    project: dict[str, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Scenario:
    base = tmp_path_factory.mktemp("act-pipeline")
    repo = base / "repo"
    repo.mkdir()
    prepare_project_repo(repo, branch=ENVIRONMENT)
    return Scenario(
        repo, base / "work", local_cloud, act_binary, project["environments"][ENVIRONMENT]
    )


# --- observations of the real parts ------------------------------------------------------------


def _report(run: ActRun) -> dict[str, str]:
    lines = [line for line in run.lines("Report") if line.startswith("REPORT ")]
    assert len(lines) == 1, run.explain()[-6000:]
    return dict(pair.split("=", 1) for pair in lines[0].removeprefix("REPORT ").split())


def _alias_version(env: dict[str, str], model_name: str, alias: str) -> str | None:
    try:
        return (
            MlflowClient(env["MLFLOW_TRACKING_URI"])
            .get_model_version_by_alias(model_name, alias)
            .version
        )
    except MlflowException:
        return None


def _model_versions(env: dict[str, str], model_name: str) -> set[str]:
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    return {v.version for v in client.search_model_versions(f"name='{model_name}'")}


def _registry_tags(env: dict[str, str], project: dict[str, Any]) -> set[str]:
    repository = project["environments"][ENVIRONMENT]["artifact_repository"]
    url = f"http://{env['REGISTRY']}/v2/{PROJECT_ID}/{repository}/{project['image_name']}/tags/list"
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return set(json.load(resp).get("tags") or [])
    except urllib.error.HTTPError as err:
        if err.code == 404:  # the repository does not exist yet
            return set()
        raise


def _service(env: dict[str, str], project: dict[str, Any]) -> dict[str, Any] | None:
    settings = project["environments"][ENVIRONMENT]
    out = run(
        [
            "gcloud",
            "run",
            "services",
            "describe",
            settings["service"],
            f"--region={settings['region']}",
            "--format=json",
        ],
        env,
        timeout=60,
    )
    if out.returncode != 0:
        assert "Cannot find service" in out.stderr, out.stderr
        return None
    return json.loads(out.stdout)


def _serving(service: dict[str, Any]) -> dict[str, int]:
    """Revision name -> percent of traffic, for the revisions that get some."""
    return {
        t["revisionName"]: t["percent"]
        for t in service["status"].get("traffic", [])
        if t.get("percent")
    }


def _predict(env: dict[str, str], url: str) -> tuple[int, dict[str, Any]]:
    """POST the smoke request (the contract's example session) to ``url`` through the stand-in
    (as a client of Cloud Run would)."""
    body = json.dumps(example_session()).encode()
    request = urllib.request.Request(
        f"{url}/predict", data=body, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({"http": env["STANDIN_PROXY"]})
    )
    try:
        with opener.open(request, timeout=30) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as err:
        return err.code, {"body": err.read().decode(errors="replace")}


# --- the scenario --------------------------------------------------------------------------------


def test_1_push_to_staging_trains_and_moves_the_staging_alias(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    alias = project["environments"][ENVIRONMENT]["alias"]
    before = _model_versions(scenario.env, project["model_name"])
    sha = git(scenario.repo, "rev-parse", "HEAD")

    run = scenario.act_run(
        "push", "training.yml", {"ref": f"refs/heads/{ENVIRONMENT}"}, TRAINING_TIMEOUT_S
    )

    assert run.returncode == 0, run.explain()[-8000:]
    assert run.job("Resolve environment") == "success"
    assert run.job(f"Train ({ENVIRONMENT})") == "success"
    report = _report(run)
    assert report["result"] == "success"
    assert report["promoted"] == "true", report
    version = report["model-version"]
    assert version.isdigit() and version not in before, (version, before)
    # The registry itself says so: the alias points at the new version, tagged with lineage.
    assert _alias_version(scenario.env, project["model_name"], alias) == version
    tags = (
        MlflowClient(scenario.env["MLFLOW_TRACKING_URI"])
        .get_model_version(project["model_name"], version)
        .tags
    )
    assert tags.get("git_commit") == sha, tags
    assert tags.get("git_branch") == ENVIRONMENT, tags
    assert tags.get("workflow_run_url", "").startswith(
        f"https://github.com/{REPOSITORY}/actions/runs/"
    )
    assert tags.get("data_fingerprint"), tags
    summary = run.summary("Train")
    assert f"Model version | {version}" in summary, summary
    assert "promoted" in summary
    # train.yml installs the API beside the gate: the version carries its compiled form, for
    # fetch mode to start without MLflow's client (app/model/publish.py).
    assert f"logged with version {version}." in summary and "Compiled form" in summary, summary
    scenario.done["train"] = {"sha": sha, "model-version": version}


def test_2_training_success_deploys_the_api_with_that_model(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    trained = scenario.require("train")
    payload = {
        "action": "completed",
        "workflow": {"name": "Training"},
        "workflow_run": {
            "name": "Training",
            "event": "push",
            "status": "completed",
            "conclusion": "success",
            "head_branch": ENVIRONMENT,
            "head_sha": trained["sha"],
            "head_repository": {"full_name": REPOSITORY},
        },
    }

    run = scenario.act_run("workflow_run", "api.yml", payload, DEPLOY_TIMEOUT_S)

    assert run.returncode == 0, run.explain()[-8000:]
    assert run.job(f"Deploy API ({ENVIRONMENT})") == "success"
    report = _report(run)
    assert report["decision"] == "deployed", report
    assert report["git-sha"] == trained["sha"]
    assert report["model-version"] == trained["model-version"]
    # The image, tagged with the trained commit, is in the registry, deployed by digest.
    assert trained["sha"] in _registry_tags(scenario.env, project)
    assert "@sha256:" in report["image"]
    # The revision is ready, passed its smoke test and takes all the traffic.
    service = _service(scenario.env, project)
    assert service is not None
    assert _serving(service) == {report["revision"]: 100}
    ready = {c["type"]: c["status"] for c in service["status"]["conditions"]}
    assert ready.get("Ready") == "True", service["status"]
    assert service["status"]["url"] == report["url"]
    # The API image honours HOST: its revision listens on loopback only (--network host here).
    assert_loopback_only(
        revision_port(scenario.env, report["revision"]), f"revision {report['revision']}"
    )
    # A client of the service URL gets a prediction from the model trained in step 1.
    status, answer = _predict(scenario.env, report["url"])
    assert status == 200, answer
    assert answer["model_version"] == trained["model-version"]
    assert 0.0 <= answer["predictions"][0]["probability"] <= 1.0
    summary = run.summary("Deploy API")
    assert "**deployed** (smoke test: passed)" in summary, summary
    assert report["revision"] in summary
    scenario.done["deploy"] = {**report}


def _dispatch(
    scenario: Scenario, faults: str = "", image_tag: str = "", revision: str = ""
) -> ActRun:
    """A manual API run on the environment's branch, the revision started with ``faults``."""
    inputs = {"image-tag": image_tag, "revision": revision, "model-version": ""}
    payload = {"ref": f"refs/heads/{ENVIRONMENT}", "inputs": {"environment": ENVIRONMENT, **inputs}}
    variables = {"API_INJECT_FAULTS": faults} if faults else {}
    return scenario.act_run("workflow_dispatch", "api.yml", payload, DEPLOY_TIMEOUT_S, variables)


def test_2b_a_revision_failing_one_request_in_five_is_rolled_back(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    deployed = scenario.require("deploy")
    run = _dispatch(scenario, faults="error-rate=0.2", image_tag=deployed["git-sha"])

    assert run.returncode != 0, "a failed rollout step must fail the workflow"
    summary = run.summary("Deploy API")
    assert "## API deploy: staging - rolled-back" in summary, summary
    # The one smoke request passed; the observed step measured the failures.
    assert "(smoke test: passed)" in summary, summary
    assert "rolled back" in summary and "FAIL: 5xx error rate" in summary, summary
    assert "rolled-back at 100%" in summary, summary
    service = _service(scenario.env, project)
    assert service is not None and _serving(service) == {deployed["revision"]: 100}
    status, answer = _predict(scenario.env, deployed["url"])
    assert status == 200 and answer["model_version"] == deployed["model-version"], answer


def test_2c_a_revision_predicting_differently_never_gets_traffic(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    deployed = scenario.require("deploy")
    run = _dispatch(scenario, faults="skew=0.05")

    assert run.returncode != 0, "a failed reference sample must fail the workflow"
    summary = run.summary("Deploy API")
    assert "## API deploy: staging - sample-failed" in summary, summary
    assert "### Reference sample failed" in summary, summary
    assert re.search(r"\d+ of 20 probabilities differ", summary), summary
    service = _service(scenario.env, project)
    assert service is not None and _serving(service) == {deployed["revision"]: 100}


def test_2d_a_manual_rollback_is_a_rollout_too(scenario: Scenario, project: dict[str, Any]) -> None:
    deployed = scenario.require("deploy")
    run = _dispatch(scenario, image_tag=deployed["git-sha"])

    assert run.returncode == 0, run.explain()[-8000:]
    report = _report(run)
    assert report["decision"] == "deployed", report
    summary = run.summary("Deploy API")
    assert f"### Rollout of `{report['revision']}`: promoted" in summary, summary
    service = _service(scenario.env, project)
    assert service is not None and _serving(service) == {report["revision"]: 100}
    # The failed revisions' tags (2b, 2c) and step 2's go once all traffic has moved.
    tags = {t.get("tag") for t in service["status"]["traffic"] if t.get("tag")}
    assert tags == {f"sha-{deployed['git-sha'][:7]}"}, tags
    scenario.done["deploy"] = {**deployed, "revision": report["revision"]}


def test_2e_a_canary_goes_10_50_100_as_the_configuration_says(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    deployed = scenario.require("deploy")
    config = scenario.repo / "pyproject.toml"
    text = config.read_text(encoding="utf-8")
    one_step = "traffic_steps = [100]\n"
    assert text.count(one_step) == 1, "staging's traffic_steps changed: update this test"
    config.write_text(text.replace(one_step, "traffic_steps = [10, 50, 100]\n"), encoding="utf-8")
    git(scenario.repo, "commit", "--quiet", "--all", "--message", "staging: a canary rollout")

    run = _dispatch(scenario)

    assert run.returncode == 0, run.explain()[-8000:]
    report = _report(run)
    summary = run.summary("Deploy API")
    rows = list(
        dict.fromkeys(re.findall(r"^\| (\d+)% \| (\d+) requests.*? \| (\d+|none)", summary, re.M))
    )
    assert [r[0] for r in rows] == ["10", "50", "100"], summary
    # The revision it replaced served the rest of the probes at 10 % and 50 %.
    assert all(r[2] != "none" and int(r[2]) > 0 for r in rows[:2]), rows
    service = _service(scenario.env, project)
    assert service is not None and _serving(service) == {report["revision"]: 100}
    tags = {t.get("tag") for t in service["status"]["traffic"] if t.get("tag")}
    assert tags == {f"sha-{git(scenario.repo, 'rev-parse', 'HEAD')[:7]}"}, tags
    scenario.done["deploy"] = {
        **deployed,
        "revision": report["revision"],
        "replaced": deployed["revision"],
    }


def test_2f_a_manual_rollback_to_a_revision_is_a_rollout_of_it(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    deployed = scenario.require("deploy")
    earlier = deployed["replaced"]  # untagged since 2e, still a revision of the service
    run = _dispatch(scenario, revision=earlier)

    assert run.returncode == 0, run.explain()[-8000:]
    report = _report(run)
    assert (report["decision"], report["revision"], report["git-sha"]) == ("deployed", earlier, "")
    summary = run.summary("Deploy API")
    assert f"rollback to the revision `{earlier}`" in summary, summary
    # The same checks and steps as a deploy (staging's are 10, 50, 100 since 2e).
    assert "(smoke test: passed)" in summary and f"### Rollout of `{earlier}`: promoted" in summary
    rows = set(re.findall(r"^\| (\d+)% \|", summary, re.M))
    assert rows == {"10", "50", "100"}, summary
    service = _service(scenario.env, project)
    assert service is not None and _serving(service) == {earlier: 100}
    name = project["environments"][ENVIRONMENT]["service"]
    tags = {t.get("tag") for t in service["status"]["traffic"] if t.get("tag")}
    assert tags == {f"rollback-{earlier.removeprefix(name + '-')}"}, tags
    status, answer = _predict(scenario.env, deployed["url"])
    assert status == 200 and answer["model_version"] == deployed["model-version"], answer
    scenario.done["deploy"] = {**deployed, "revision": earlier}


def test_3_an_image_failing_its_smoke_test_never_takes_traffic(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    deployed = scenario.require("deploy")
    route = scenario.repo / BROKEN_ROUTE
    code = route.read_text(encoding="utf-8")
    assert BREAK_AFTER in code, f"{BROKEN_ROUTE} changed: update BREAK_AFTER"
    route.write_text(code.replace(BREAK_AFTER, BREAK_AFTER + BREAKAGE, 1), encoding="utf-8")
    git(scenario.repo, "commit", "--quiet", "--all", "--message", "API: break /predict")
    broken_sha = git(scenario.repo, "rev-parse", "HEAD")

    run = scenario.act_run(
        "push", "api.yml", {"ref": f"refs/heads/{ENVIRONMENT}"}, DEPLOY_TIMEOUT_S
    )

    assert run.returncode != 0, "the workflow must fail when the smoke test fails"
    assert run.job(f"Deploy API ({ENVIRONMENT})") == "failure", run.results
    # (act stops at the failed job: the Report job, `if: always()` on GitHub, does not run.)
    assert "## API deploy: staging - smoke-test-failed" in run.summary("Deploy API")
    # It got as far as the registry and a revision, tagged but without traffic.
    assert broken_sha in _registry_tags(scenario.env, project)
    service = _service(scenario.env, project)
    assert service is not None
    assert _serving(service) == {deployed["revision"]: 100}
    tags = {t.get("tag"): t for t in service["status"]["traffic"] if t.get("tag")}
    broken_tag = f"sha-{broken_sha[:7]}"
    assert broken_tag in tags and not tags[broken_tag].get("percent"), tags
    # The reason is in the job summary; the service URL still answers with the old revision.
    summary = run.summary("Deploy API")
    assert "smoke-test-failed" in summary, summary
    assert "POST /predict answered 500" in summary, summary
    assert f"traffic stays on {deployed['revision']}=100" in summary, summary
    status, answer = _predict(scenario.env, deployed["url"])
    assert status == 200, answer
    assert answer["model_version"] == deployed["model-version"]
    scenario.done["smoke"] = {"sha": broken_sha}


def test_4_a_feature_branch_neither_trains_nor_deploys(
    scenario: Scenario, project: dict[str, Any]
) -> None:
    scenario.require("deploy")
    git(scenario.repo, "checkout", "--quiet", "-b", FEATURE_BRANCH)
    params = scenario.repo / "purchase_predict" / "conf" / "base" / "parameters_training.yml"
    params.write_text(params.read_text() + "# tuned on a feature branch\n")
    git(scenario.repo, "commit", "--quiet", "--all", "--message", "feature work")
    versions = _model_versions(scenario.env, project["model_name"])
    images = _registry_tags(scenario.env, project)
    service = _service(scenario.env, project)
    assert service is not None
    revisions = _serving(service)
    ref = {"ref": f"refs/heads/{FEATURE_BRANCH}"}

    for workflow in ("training.yml", "api.yml"):
        run = scenario.act_run("push", workflow, ref, QUICK_TIMEOUT_S)
        assert run.returncode == 0, run.explain()[-6000:]
        assert run.job("Resolve environment") == "success"
        assert run.outputs("Resolve environment")["deploy"] == "false"
        # Job names are "<workflow>/<job>": only the resolve job ran.
        assert [name.split("/")[-1] for name in run.results] == ["Resolve environment"], run.results
        assert "maps to no environment" in run.summary("Resolve environment")

    assert _model_versions(scenario.env, project["model_name"]) == versions
    assert _registry_tags(scenario.env, project) == images
    after = _service(scenario.env, project)
    assert after is not None and _serving(after) == revisions
