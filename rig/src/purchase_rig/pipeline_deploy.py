"""The local pipeline's delivery stages: build, push, deploy, smoke test and traffic through
the composite actions' own scripts (aimed at the local registry and the Cloud Run stand-in),
what the service already serves, and ``--no-docker``'s uvicorn instead."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

from purchase_contract.model_dir import REFERENCE_SAMPLE_FILE
from purchase_rig.pipeline_plumbing import (
    API_DIR,
    BAKED_MODEL_DIR,
    LOCAL_PROJECT,
    ROOT,
    PipelineError,
    StagePlumbing,
    build_digest,
    ready,
    rel,
)

# What the image is built from: uncommitted changes there mean the commit does not describe it.
IMAGE_INPUTS = (str(API_DIR), str(ROOT / "contract"), ".dockerignore", "actions/docker-build")


class DeployStages(StagePlumbing):
    """Bake's output to a revision with all the traffic (``Pipeline`` sets ``cloud``,
    ``environment`` and ``git``)."""

    def build_push_deploy(self, model_version: str) -> None:
        env = self.environment
        sha = self.git("rev-parse", "HEAD")
        if len(sha) != 40:
            raise PipelineError("not a git checkout with a commit: the image tag is the commit SHA")
        built = self.build(sha, model_version)
        pushed = self.push(built, sha)
        self.summary["image"] = pushed["image"]
        deploy_env = self.deploy_env(pushed["image"], sha)
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
            deployed = self.deploy_smoke_traffic(deploy_env)
        proxy = self.env["STANDIN_PROXY"]
        self.summary.update(revision=deployed["revision"], URL=deployed["url"])
        self.summary["prediction"] = self.predict(deployed["url"], proxy=proxy)
        self.reach = self.reach_lines(deployed)

    def build(self, sha: str, model_version: str) -> dict[str, str]:
        env = self.environment
        with self.stage("build", "docker build of the API image with the baked model"):
            built = self.step_script(
                "actions/docker-build/build.sh",
                {
                    "CONTEXT": str(ROOT),
                    "DOCKERFILE": str(API_DIR / "Dockerfile"),
                    "IMAGE_NAME": env["image-name"],
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
            print(f"[build] {build_digest(self.log)}", flush=True)
        return built

    def push(self, built: dict[str, str], sha: str) -> dict[str, str]:
        env = self.environment
        with self.stage("push", f"tag with the commit SHA, push to {self.env['REGISTRY']}"):
            pushed = self.step_script(
                "actions/docker-push/push.sh",
                {
                    "LOCAL_IMAGE": built["image"],
                    "GIT_SHA": sha,
                    "IMAGE_NAME": env["image-name"],
                    "REPOSITORY": env["artifact-repository"],
                    "REGION": env["region"],
                    "PROJECT_ID": LOCAL_PROJECT,
                    "REGISTRY": self.env["REGISTRY"],
                    "CONFIGURE_AUTH": "none",
                },
            )
        return pushed

    def deploy_env(self, image: str, sha: str) -> dict[str, str]:
        """The deploy script's inputs for the branch's environment."""
        env = self.environment
        return {
            "SERVICE": env["service"],
            "REGION": env["region"],
            "PROJECT_ID": LOCAL_PROJECT,
            "IMAGE": image,
            "GIT_SHA": sha,
            "TAG": "",
            "MIN_INSTANCES": env["min-instances"],
            "MAX_INSTANCES": env["max-instances"],
            "MEMORY": env["memory"],
            "CPU": env["cpu"],
            "CONCURRENCY": env["concurrency"],
            "ENV_VARS": "",
            "FLAGS": "",
            "CUSTOM_AUDIENCE": "",
            "TRAFFIC": "tag",
        }

    def deploy_smoke_traffic(self, deploy_env: dict[str, str]) -> dict[str, str]:
        """A tagged revision with no traffic, its smoke test, then all the traffic to it."""
        env = self.environment
        with self.stage(
            "deploy", f"gcloud run deploy {env['service']} --no-traffic (Cloud Run stand-in)"
        ):
            deployed = self.step_script("actions/cloud-run-deploy/deploy.sh", deploy_env, "deploy")
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
                    "SMOKE_REQUEST": str(self.smoke_request),
                    "IDENTITY_TOKEN": "local-stand-in",
                    "IDENTITY_TOKEN_COMMAND": "",
                    "SMOKE_TIMEOUT": "120",
                },
                "smoke",
            )
        self.rollout(deploy_env, deployed)
        return deployed

    def rollout(self, deploy_env: dict[str, str], deployed: dict[str, str]) -> None:
        """The reference-sample check, then traffic in the environment's steps, as the action
        runs them (``rollout_env``)."""
        step_env = rollout_env(deploy_env, deployed, self.environment, self.smoke_request)
        with self.stage("sample", f"the reference sample on {deployed['tag-url']}"):
            self.step_script("actions/cloud-run-deploy/deploy.sh", step_env, "rollout", "sample")
        steps = self.environment["traffic-steps"].replace(",", "% -> ")
        with self.stage("rollout", f"traffic {steps}% to {deployed['revision']}, each step judged"):
            self.step_script("actions/cloud-run-deploy/deploy.sh", step_env, "rollout", "rollout")

    def reach_lines(self, deployed: dict[str, str]) -> list[str]:
        """curl lines that work as printed: the service and tag URLs through the stand-in's
        proxy, and the revision's container on loopback."""
        proxy, request = self.env["STANDIN_PROXY"], rel(self.smoke_request)
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
        if self.git("status", "--porcelain", "--", *IMAGE_INPUTS):
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
                while not ready(url):
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


def rollout_env(
    deploy_env: dict[str, str], deployed: dict[str, str], environment: dict[str, str], body: Path
) -> dict[str, str]:
    """The sample and rollout steps' inputs: each traffic step observed for 3 s (the stand-in's
    metrics have no lag), the baked model's reference sample when the bake wrote one."""
    sample = ROOT / BAKED_MODEL_DIR / REFERENCE_SAMPLE_FILE
    return {
        **deploy_env,
        "GITHUB_ACTION_PATH": str(ROOT / "actions" / "cloud-run-deploy"),
        "TAG": deployed["tag"],
        "REVISION": deployed["revision"],
        "SERVICE_URL": deployed["url"],
        "TAG_URL": deployed["tag-url"],
        "FIRST_DEPLOY": deployed["first-deploy"],
        "PREVIOUS_TRAFFIC": deployed["previous-traffic"],
        "REFERENCE_SAMPLE": str(sample) if sample.exists() else "",
        "SMOKE_REQUEST": str(body),
        "IDENTITY_TOKEN": "local-stand-in",
        "TRAFFIC_STEPS": environment["traffic-steps"],
        "OBSERVE_SECONDS": "3",
        "METRICS_DELAY": "0",
        "PROBE_RATE": "50",
    }
