#!/usr/bin/env python3
"""The pre-production pipeline, end to end, on this machine: what ``nox -s pipeline`` runs.

Stages, each timed and reported as it goes:

1. ``cloud``   provision what this machine lacks, then start the local stand-ins
               (``purchase_rig.local_cloud``): the Docker engine that is there (or one started
               here), base image, image registry, MLflow server, Cloud Run stand-in;
2. ``data``    generate the default raw events when the file is missing;
3. ``train``   ``kedro run`` (features, hyper-parameter search, MLflow logging, registration);
4. ``promote`` ``scripts/register_model.py``: lineage, quality gate, alias of the branch's
               environment (the fallback environment when the branch maps to none);
5. ``bake``    ``scripts/bake_model.py``: resolve the alias, copy that model into the build context;
6. ``build`` / ``push`` / ``deploy`` / ``smoke`` / ``traffic``: the very scripts behind the
               composite actions (``actions/*/*.sh``), aimed at the local registry and, through
               the real ``gcloud``, at the Cloud Run stand-in;
7. a summary: model version, F1, image, revision, URL, one prediction through the service URL,
   then what is still running, how to reach it (a ``curl`` line that works as printed) and how
   to stop it.

Each stage prints one line with its elapsed time; its full output goes to
``<state>/logs/<stage>.log`` (``--verbose`` shows it as it runs). A refused promotion or a failed
smoke test stops the run with a non-zero exit; nothing after it runs, and traffic stays where it
was. Without a Docker engine (none can be used, started or installed) the run stops and says
what to install; ``--no-docker`` instead serves the promoted model with uvicorn (fetch-from-MLflow
mode) and stops it at the end. Ctrl+C or SIGTERM stops the running stage and whatever this run
started.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from purchase_rig import REPO_ROOT
from purchase_rig.local_cloud import COMPONENTS, DEFAULT_STATE, LocalCloud, LocalCloudError

ROOT = REPO_ROOT
TRAINING_DIR = ROOT / "purchase_predict"
API_DIR = ROOT / "purchase_predict_api"
RAW_EVENTS = TRAINING_DIR / "data" / "01_raw" / "events.parquet"
TRAINING_RUN = TRAINING_DIR / "data" / "08_reporting" / "training_run.json"
PRIMARY = TRAINING_DIR / "data" / "03_primary" / "primary.parquet"
# Model-version tag: a hash of what the training run was made of besides the primary table
# (project code and configuration, kedro arguments, raw events): with the git_commit and
# data_fingerprint lineage tags it finds the version a rerun with nothing changed would repeat.
INPUTS_TAG = "pipeline_inputs"
TRAINING_INPUTS = (
    TRAINING_DIR / "src",
    TRAINING_DIR / "conf",
    TRAINING_DIR / "pyproject.toml",
    ROOT / "pyproject.toml",
)
SMOKE_REQUEST = API_DIR / "smoke_request.json"
LOG_TAIL_LINES = 25
BAKED_MODEL_DIR = "model"  # inside the API build context, as the Dockerfile expects
LOCAL_PROJECT = "local-project"


class PipelineError(RuntimeError):
    """A stage failed; the message says which and why."""


class Pipeline:
    def __init__(
        self, state: Path, kedro_args: list[str], *, docker: bool = True, verbose: bool = False
    ) -> None:
        self.state = state
        self.kedro_args = kedro_args
        self.use_docker = docker
        self.verbose = verbose
        self.logs = state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log: Path | None = None  # the current stage's log
        self.env: dict[str, str] = dict(os.environ)
        # Download progress bars would drown the stage lines.
        self.env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.timings: list[tuple[str, float]] = []
        self.summary: dict[str, str] = {}
        self.cloud = LocalCloud(state)
        self.started: list[str] = []  # local-cloud parts this run started (stopped on interrupt)
        self.still_running: list[str] = []

    # ---- plumbing -----------------------------------------------------------
    @contextmanager
    def stage(self, name: str, what: str) -> Iterator[None]:
        self.log = self.logs / f"{name}.log"
        self.log.write_text("")
        print(f"[{name}] {what} ...", flush=True)
        start = time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            elapsed = time.monotonic() - start
            self.timings.append((name, elapsed))
            where = f"  (log: {_rel(self.log)})" if self.log.stat().st_size else ""
            print(f"[{name}] {'done' if ok else 'FAILED'} in {elapsed:.1f}s{where}", flush=True)
            if not ok and not self.verbose:
                lines = self.log.read_text(errors="replace").rstrip().splitlines()
                for line in lines[-LOG_TAIL_LINES:]:
                    print(f"    {line}", flush=True)

    def run(self, cmd: list[str], *, cwd: Path = ROOT, env: dict[str, str] | None = None) -> None:
        """Run a stage's command; its output goes to the stage log (and the terminal if verbose)."""
        full_env = {**self.env, **(env or {})}
        if self.verbose or self.log is None:
            done = subprocess.run(cmd, cwd=cwd, env=full_env, check=False)
        else:
            with self.log.open("a") as out:
                out.write(f"$ {' '.join(map(str, cmd))}\n")
                out.flush()
                done = subprocess.run(
                    cmd, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, check=False
                )
        if done.returncode != 0:
            raise PipelineError(f"{' '.join(map(str, cmd[:3]))} ... exited with {done.returncode}")

    def step_script(self, script: str, env: dict[str, str], *args: str) -> dict[str, str]:
        """Run an action's script as the runner would: inputs in env, outputs via GITHUB_OUTPUT."""
        with tempfile.NamedTemporaryFile("r", suffix=".out") as out:
            step_env = {
                "GITHUB_OUTPUT": out.name,
                "GITHUB_STEP_SUMMARY": str(self.state / "step_summary.md"),
                "GITHUB_SERVER_URL": "https://github.com",
                "GITHUB_REPOSITORY": "local/purchase-predict",
                **env,
            }
            self.run(["bash", str(ROOT / script), *args], env=step_env)
            return dict(line.split("=", 1) for line in out.read().splitlines() if "=" in line)

    def python_script(self, name: str, *args: str) -> dict[str, str]:
        with tempfile.NamedTemporaryFile("r", suffix=".out") as out:
            self.run(
                [sys.executable, str(ROOT / "scripts" / name), *args],
                env={"GITHUB_OUTPUT": out.name},
            )
            return dict(line.split("=", 1) for line in out.read().splitlines() if "=" in line)

    @staticmethod
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    # ---- stages ---------------------------------------------------------------
    def start_cloud(self) -> None:
        """Provision and start the stand-ins (only MLflow with --no-docker)."""
        cloud = self.cloud
        parts = ["docker", "base", "registry", "cloudrun"] if self.use_docker else []
        if "MLFLOW_TRACKING_URI" not in os.environ:
            parts.append("mlflow")
        before = {part for part, up in cloud.status().items() if up}
        with self.stage("cloud", f"local stand-ins: {', '.join(parts) or 'none'}"):
            try:
                self.env.update(cloud.up(parts))
            except LocalCloudError as err:
                raise PipelineError(str(err)) from err
            finally:
                self.started = [p for p, up in cloud.status().items() if up and p not in before]
                _keep_provision_log(self.log, (self.state / "provision.log"))
        self.env["MLFLOW_TRACKING_URI"] = (
            os.environ.get("MLFLOW_TRACKING_URI") or cloud.env["MLFLOW_TRACKING_URI"]
        )
        self.summary["MLflow"] = self.env["MLFLOW_TRACKING_URI"]

    def data(self) -> None:
        with self.stage("data", f"raw events at {RAW_EVENTS.relative_to(ROOT)}"):
            self.run(["purchase-predict-generate", "--out", str(RAW_EVENTS), "--if-missing"])

    def inputs_fingerprint(self) -> str:
        """sha256 of the training inputs besides the primary table (see INPUTS_TAG)."""
        digest = hashlib.sha256(json.dumps(self.kedro_args).encode())
        files = [RAW_EVENTS]
        for entry in TRAINING_INPUTS:
            files += (
                sorted(f for f in entry.rglob("*") if f.is_file()) if entry.is_dir() else [entry]
            )
        for path in files:
            if "__pycache__" in path.parts or not path.exists():
                continue
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
            with path.open("rb") as data:
                digest.update(hashlib.file_digest(data, "sha256").digest())
        return digest.hexdigest()

    def reusable_version(self, inputs: str) -> dict[str, str] | None:
        """The registered version trained from these very inputs, found by its lineage tags
        (git commit, data fingerprint of the primary table, INPUTS_TAG), or None."""
        commit = self.git("rev-parse", "HEAD")
        if not PRIMARY.exists() or not commit:
            return None
        # Imported here: the stand-in scripts stay importable without the training packages.
        import pandas as pd  # noqa: PLC0415
        from mlflow import MlflowClient  # noqa: PLC0415

        from purchase_predict.pipelines.training.nodes import data_fingerprint  # noqa: PLC0415

        fingerprint = data_fingerprint(pd.read_parquet(PRIMARY))
        client = MlflowClient(self.env["MLFLOW_TRACKING_URI"])
        query = (
            f"name = '{self.environment['model_name']}' and tags.git_commit = '{commit}'"
            f" and tags.data_fingerprint = '{fingerprint}' and tags.{INPUTS_TAG} = '{inputs}'"
        )
        versions = client.search_model_versions(query)
        if not versions:
            return None
        newest = max(versions, key=lambda v: int(v.version))
        return {"version": str(newest.version), "run_id": newest.run_id or ""}

    def train(self) -> dict[str, str] | None:
        """kedro run, unless a registered version was trained from the same inputs: then that
        version (and None when a new run was made)."""
        with self.stage("train", "kedro run: features, hyper-parameter search, MLflow logging"):
            self.inputs = self.inputs_fingerprint()
            if reused := self.reusable_version(self.inputs):
                print(
                    f"[train] nothing changed (commit, data fingerprint, parameters): reusing "
                    f"version {reused['version']} of run {reused['run_id']}, no new run",
                    flush=True,
                )
                self.summary["training run"] = f"{reused['run_id']} (reused)"
                return reused
            self.run(
                ["kedro", "run", *self.kedro_args],
                cwd=TRAINING_DIR,
                env={"GIT_BRANCH": self.branch},
            )
        run = json.loads(TRAINING_RUN.read_text())
        self.summary["training run"] = run["run_id"]
        return None

    def promote(self, reused: dict[str, str] | None) -> dict[str, str]:
        source = f"--run-id={reused['run_id']}" if reused else f"--training-run-json={TRAINING_RUN}"
        with self.stage(
            "promote", f"quality gate and alias for environment {self.environment['environment']}"
        ):
            try:
                out = self.python_script(
                    "register_model.py",
                    source,
                    f"--environment={self.environment['environment']}",
                    f"--branch={self.branch}",
                )
            except PipelineError as err:
                raise PipelineError(
                    f"promotion refused or failed ({err}): nothing deployed"
                ) from err
        if not reused:  # found by the next run with the same inputs
            from mlflow import MlflowClient  # noqa: PLC0415

            MlflowClient(self.env["MLFLOW_TRACKING_URI"]).set_model_version_tag(
                out["model_name"], out["model_version"], INPUTS_TAG, self.inputs
            )
        self.summary.update(
            {
                "model": f"{out['model_name']} version {out['model_version']} @{out['alias']} ({out['decision']})",
                "F1": f"{float(out['candidate_f1']):.4f}"
                + (
                    f" (champion {float(out['champion_f1']):.4f})" if out.get("champion_f1") else ""
                ),
            }
        )
        return out

    def bake(self, model_name: str, alias: str) -> dict[str, str]:
        with self.stage("bake", f"models:/{model_name}@{alias} into the build context"):
            # The previous run's bake: generated (git-ignored), replaced on every run.
            shutil.rmtree(API_DIR / BAKED_MODEL_DIR, ignore_errors=True)
            return self.python_script(
                "bake_model.py",
                f"--model-uri=models:/{model_name}@{alias}",
                f"--out={API_DIR / BAKED_MODEL_DIR}",
            )

    def build_push_deploy(self, model_version: str) -> None:
        env = self.environment
        sha = self.git("rev-parse", "HEAD")
        if len(sha) != 40:
            raise PipelineError("not a git checkout with a commit: the image tag is the commit SHA")
        with self.stage("build", "docker build of the API image with the baked model"):
            built = self.step_script(
                "actions/docker-build/build.sh",
                {
                    "CONTEXT": str(API_DIR),
                    "DOCKERFILE": "",
                    "IMAGE_NAME": env["image_name"],
                    "GIT_SHA": sha,
                    "MODEL_VERSION": model_version,
                    "MODEL_DIR": BAKED_MODEL_DIR,
                    "BASE_IMAGE": self.env["BASE_IMAGE"],
                    "EXTRA_BUILD_ARGS": "",
                    "EXTRA_LABELS": "",
                    "NETWORK": "host",
                },
            )
        if self.log and not self.verbose:
            print(f"[build] {_build_digest(self.log)}", flush=True)
        with self.stage("push", f"tag with the commit SHA, push to {self.env['REGISTRY']}"):
            pushed = self.step_script(
                "actions/docker-push/push.sh",
                {
                    "LOCAL_IMAGE": built["image"],
                    "GIT_SHA": sha,
                    "IMAGE_NAME": env["image_name"],
                    "REPOSITORY": env["artifact_repository"],
                    "REGION": env["region"],
                    "PROJECT_ID": LOCAL_PROJECT,
                    "REGISTRY": self.env["REGISTRY"],
                    "CONFIGURE_AUTH": "none",
                },
            )
        self.summary["image"] = pushed["image"]
        deploy_env = {
            "SERVICE": env["service"],
            "REGION": env["region"],
            "PROJECT_ID": LOCAL_PROJECT,
            "IMAGE": pushed["image"],
            "GIT_SHA": sha,
            "TAG": "",
            "MIN_INSTANCES": env["min_instances"],
            "MAX_INSTANCES": env["max_instances"],
            "MEMORY": env["memory"],
            "CPU": env["cpu"],
            "CONCURRENCY": env["concurrency"],
            "ENV_VARS": "",
            "FLAGS": "",
            "CUSTOM_AUDIENCE": "",
            "TRAFFIC": "tag",
        }
        current = self.serving(env["service"], env["region"])
        if current and current["image"] == pushed["image"]:
            with self.stage("deploy", f"gcloud run services describe {env['service']}"):
                print(
                    f"[deploy] unchanged: revision {current['revision']} already serves this "
                    "image with all the traffic (no deploy, smoke test or traffic move)",
                    flush=True,
                )
            deployed = current
        else:
            with self.stage(
                "deploy", f"gcloud run deploy {env['service']} --no-traffic (Cloud Run stand-in)"
            ):
                deployed = self.step_script(
                    "actions/cloud-run-deploy/deploy.sh", deploy_env, "deploy"
                )
            with self.stage("smoke", f"GET /ready and POST /predict on {deployed['tag-url']}"):
                self.step_script(
                    "actions/cloud-run-deploy/deploy.sh",
                    {
                        "SERVICE_URL": deployed["url"],
                        "TAG_URL": deployed["tag-url"],
                        "REVISION": deployed["revision"],
                        "FIRST_DEPLOY": deployed["first-deploy"],
                        "PREVIOUS_TRAFFIC": deployed["previous-traffic"],
                        "CUSTOM_AUDIENCE": "",
                        "SMOKE_REQUEST": str(SMOKE_REQUEST),
                        "IDENTITY_TOKEN": "local-stand-in",
                        "IDENTITY_TOKEN_COMMAND": "",
                        "SMOKE_TIMEOUT": "120",
                    },
                    "smoke",
                )
            with self.stage("traffic", f"route the service to revision {deployed['revision']}"):
                self.step_script(
                    "actions/cloud-run-deploy/deploy.sh",
                    {**deploy_env, "TAG": deployed["tag"], "REVISION": deployed["revision"]},
                    "traffic",
                )
        proxy = self.env["STANDIN_PROXY"]
        self.summary.update(revision=deployed["revision"], URL=deployed["url"])
        self.summary["prediction"] = self.predict(deployed["url"], proxy=proxy)
        self.reach = self.reach_lines(deployed)

    def reach_lines(self, deployed: dict[str, str]) -> list[str]:
        """curl lines that work as printed: the service and tag URLs through the stand-in's
        proxy, and the revision's container on loopback."""
        proxy, request = self.env["STANDIN_PROXY"], _rel(SMOKE_REQUEST)
        json_body = f"-H 'Content-Type: application/json' -d @{request}"
        lines = [
            "The service URL resolves only through the Cloud Run stand-in (an HTTP proxy):",
            f"  curl -x {proxy} {deployed['url']}/predict {json_body}",
            f"  curl -x {proxy} {deployed['tag-url']}/ready      # this revision, by its tag",
        ]
        if url := self.cloud.revision_url(f"standin-{deployed['revision']}"):
            lines.append(
                f"  curl {url}/predict {json_body}      # the revision's container, on loopback"
            )
        return lines

    def serving(self, service: str, region: str) -> dict[str, str] | None:
        """The ready, latest revision of ``service`` when it has all the traffic, or None."""
        described = subprocess.run(
            [
                "gcloud",
                "run",
                "services",
                "describe",
                service,
                f"--region={region}",
                "--format=json",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if described.returncode != 0:
            return None  # not deployed yet
        svc = json.loads(described.stdout)
        status = svc.get("status", {})
        containers = svc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        revision = status.get("latestReadyRevisionName", "")
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions", [])
        )
        serving: dict[str, int] = {}  # a tagged revision has a 0 % entry besides its share
        for target in status.get("traffic", []):
            name = target.get("revisionName", "")
            serving[name] = serving.get(name, 0) + int(target.get("percent", 0))
        if not (
            ready
            and containers
            and revision == status.get("latestCreatedRevisionName")
            and serving.get(revision) == 100
        ):
            return None
        tag_url = next(
            (
                t["url"]
                for t in status["traffic"]
                if t.get("revisionName") == revision and t.get("url")
            ),
            status.get("url", ""),
        )
        return {
            "url": status.get("url", ""),
            "revision": revision,
            "tag-url": tag_url,
            "image": containers[0].get("image", ""),
        }

    def already_deployed(self, model_version: str) -> dict[str, str] | None:
        """The service's revision when its image was built from this commit's API code with
        this model version (the image labels say so): then bake to traffic would repeat it."""
        env = self.environment
        if self.git("status", "--porcelain", "--", str(API_DIR), "actions/docker-build"):
            return None  # uncommitted API changes: the commit does not describe the image
        current = self.serving(env["service"], env["region"])
        if not current:
            return None
        inspected = self.cloud._docker(
            "image", "inspect", "--format", "{{json .Config.Labels}}", current["image"]
        )
        labels = json.loads(inspected.stdout or "null") if inspected.returncode == 0 else None
        if not labels or (
            labels.get("org.opencontainers.image.revision"),
            labels.get("purchase-predict.model-version"),
        ) != (self.git("rev-parse", "HEAD"), model_version):
            return None
        return current

    def serve_locally(self, model_name: str, alias: str) -> None:
        """--no-docker: serve the promoted model with uvicorn, check it, stop it."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with self.stage("serve", f"uvicorn on 127.0.0.1:{port} with models:/{model_name}@{alias}"):
            with self.log.open("a") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "app"],
                    cwd=API_DIR,
                    env={
                        **self.env,
                        "HOST": "127.0.0.1",
                        "PORT": str(port),
                        "MODEL_URI": f"models:/{model_name}@{alias}",
                    },
                    stdout=None if self.verbose else out,
                    stderr=None if self.verbose else subprocess.STDOUT,
                )
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 120
                while not _ready(url):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise PipelineError("the API did not become ready under uvicorn")
                    time.sleep(0.5)
                self.summary["URL"] = (
                    f"{url} (uvicorn, --no-docker: stopped at the end of the run; "
                    "`nox -s serve` keeps one up)"
                )
                self.summary["prediction"] = self.predict(url)
            finally:
                proc.terminate()
                proc.wait(timeout=30)

    def predict(self, url: str, proxy: str | None = None) -> str:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": proxy} if proxy else {})
        )
        request = urllib.request.Request(
            f"{url}/predict",
            data=SMOKE_REQUEST.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with opener.open(request, timeout=30) as resp:
            body = json.loads(resp.read())
        return json.dumps(body, separators=(",", ":"))[:300]

    # ---- the whole run --------------------------------------------------------
    def main(self) -> None:
        self.branch = self.git("branch", "--show-current") or "detached"
        resolved = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "branch_env.py"),
                "--fallback",
                "--json",
                self.branch,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        self.environment = {k: str(v) for k, v in json.loads(resolved.stdout).items()}
        self.summary["environment"] = f"{self.environment['environment']} (branch {self.branch})"
        self.reach: list[str] = []
        self.start_cloud()
        self.data()
        promoted = self.promote(self.train())
        model_name, alias = promoted["model_name"], promoted["alias"]
        if self.use_docker and (current := self.already_deployed(promoted["model_version"])):
            with self.stage("deploy", f"what {self.environment['service']} serves"):
                print(
                    f"[deploy] nothing changed: revision {current['revision']} serves an image of "
                    f"this commit with model version {promoted['model_version']} and all the "
                    "traffic: no bake, build, push or deploy",
                    flush=True,
                )
            self.summary.update(image=current["image"], revision=current["revision"])
            self.summary["URL"] = current["url"]
            self.summary["prediction"] = self.predict(
                current["url"], proxy=self.env["STANDIN_PROXY"]
            )
            self.reach = self.reach_lines(current)
        elif self.use_docker:
            baked = self.bake(model_name, alias)
            self.build_push_deploy(baked["model_version"])
        else:
            self.serve_locally(model_name, alias)

    def stop_started(self) -> None:
        """Interrupted: stop the local-cloud parts this run started (the user's stay)."""
        if self.started:
            print(f"stopping what this run started: {', '.join(self.started)}", flush=True)
            self.cloud.down([p for p in COMPONENTS if p in self.started])

    def report(self, ok: bool) -> str:
        lines = ["", "## Local pre-production pipeline: " + ("done" if ok else "FAILED"), ""]
        lines += [
            f"| {k} | {v} |" for k, v in [("what", "value"), ("---", "---"), *self.summary.items()]
        ]
        lines += ["", "stages: " + ", ".join(f"{n} {t:.1f}s" for n, t in self.timings)]
        running = self.cloud.running()
        if running:
            lines += ["", "Still running (state in " + _rel(self.state) + "):"]
            lines += [f"  - {line}" for line in running]
        if self.reach:
            lines += ["", *self.reach]
        if running:
            lines += [
                "",
                "Stop it all: python -m purchase_rig.local_cloud"
                + ("" if self.state == DEFAULT_STATE else f" --state {_rel(self.state)}")
                + " down",
                "(a Docker engine that was already running is left as it was)",
            ]
        return "\n".join(lines)


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def _build_digest(log: Path) -> str:
    """One line for a docker build log: steps, how many came from the cache, the image."""
    lines = log.read_text(errors="replace").splitlines()
    steps = sum(1 for line in lines if line.startswith("Step "))
    cached = sum(1 for line in lines if "Using cache" in line)
    built = next((line for line in reversed(lines) if line.startswith("Successfully built")), "")
    image = built.removeprefix("Successfully built ").strip()
    return f"{steps} steps, {cached} from the cache" + (f", image {image}" if image else "")


def _keep_provision_log(log: Path | None, *sources: Path) -> None:
    """Append the provisioning log to the stage log, so apt-get's output is kept, not shown."""
    if log is None:
        return
    for source in sources:
        if source.exists() and source.stat().st_size:
            with log.open("a") as out:
                out.write(source.read_text(errors="replace"))
            source.unlink()


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Extra arguments go to `kedro run`, e.g. --params automl_max_evals=40. "
        "Stop the stand-ins with: python -m purchase_rig.local_cloud down",
    )
    parser.add_argument(
        "--state", type=Path, default=DEFAULT_STATE, help="local-cloud state directory"
    )
    parser.add_argument(
        "--no-docker",
        action="store_true",
        help="no image, registry or deploy: serve the promoted model with uvicorn, then stop it",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="show every stage's output, not only its log path"
    )
    args, kedro_args = parser.parse_known_args(argv)
    if not args.no_docker and not shutil.which("gcloud"):
        print(
            "local pipeline: the deploy stages need the gcloud CLI on PATH "
            "(https://cloud.google.com/sdk/docs/install), or run with --no-docker",
            file=sys.stderr,
        )
        return 2
    pipeline = Pipeline(
        args.state.resolve(), kedro_args, docker=not args.no_docker, verbose=args.verbose
    )
    # SIGTERM as Ctrl+C (even in a background job, where SIGINT starts ignored): the running
    # stage's command is stopped, then what this run started.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        pipeline.main()
    except (PipelineError, subprocess.CalledProcessError) as err:
        print(pipeline.report(ok=False))
        print(f"\nlocal pipeline: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nlocal pipeline: interrupted", file=sys.stderr)
        pipeline.stop_started()
        return 130
    report = pipeline.report(ok=True)
    print(report)
    (pipeline.state / "pipeline_summary.md").write_text(report)
    return 0


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


if __name__ == "__main__":
    sys.exit(main())
