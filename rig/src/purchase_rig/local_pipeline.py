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
6. ``build`` / ``push`` / ``deploy`` / ``smoke`` / ``sample`` / ``rollout``: the very scripts
               behind the composite actions (``actions/*/*.sh``, ``scripts/rollout.py``), aimed
               at the local registry and, through the real ``gcloud``, at the Cloud Run
               stand-in; the rollout observes each of the environment's traffic steps for 3 s;
7. a summary: model version, F1, image, revision, URL, one prediction through the service URL,
   then what is still running, how to reach it (a ``curl`` line that works as printed) and how
   to stop it.

Each stage prints one line with its elapsed time; its full output goes to
``<state>/logs/<stage>.log`` (``--verbose`` shows it as it runs). A refused promotion, a failed
smoke test, reference sample or rollout step stops the run with a non-zero exit; nothing after it
runs, and traffic stays (or goes back) where it was. Without a Docker engine (none can be used, started or installed) the run stops and says
what to install; ``--no-docker`` instead serves the promoted model with uvicorn (fetch-from-MLflow
mode) and stops it at the end. Ctrl+C or SIGTERM stops the running stage and whatever this run
started.

The stages' plumbing is ``purchase_rig.pipeline_plumbing``; build to rollout (and
``--no-docker``'s uvicorn) are ``purchase_rig.pipeline_deploy``; the training side is here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from purchase_rig.local_cloud import COMPONENTS, DEFAULT_STATE, LocalCloud, LocalCloudError
from purchase_rig.pipeline_deploy import DeployStages
from purchase_rig.pipeline_plumbing import (
    API_DIR,
    BAKED_MODEL_DIR,
    LOCAL_PROJECT,
    LOG_TAIL_LINES,
    ROOT,
    TRAINING_DIR,
    PipelineError,
)
from purchase_rig.pipeline_plumbing import build_digest as _build_digest
from purchase_rig.pipeline_plumbing import keep_provision_log as _keep_provision_log
from purchase_rig.pipeline_plumbing import ready as _ready
from purchase_rig.pipeline_plumbing import rel as _rel

__all__ = [
    "API_DIR",
    "BAKED_MODEL_DIR",
    "INPUTS_TAG",
    "LOCAL_PROJECT",
    "LOG_TAIL_LINES",
    "PRIMARY",
    "RAW_EVENTS",
    "ROOT",
    "TRAINING_DIR",
    "TRAINING_INPUTS",
    "TRAINING_RUN",
    "Pipeline",
    "PipelineError",
    "_build_digest",
    "_ready",
    "main",
]

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


class Pipeline(DeployStages):
    def __init__(
        self, state: Path, kedro_args: list[str], *, docker: bool = True, verbose: bool = False
    ) -> None:
        super().__init__(state, verbose=verbose)
        self.kedro_args = kedro_args
        self.use_docker = docker
        self.cloud = LocalCloud(state)
        self.started: list[str] = []  # local-cloud parts this run started (stopped on interrupt)
        self.still_running: list[str] = []

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
            f"name = '{self.environment['model-name']}' and tags.git_commit = '{commit}'"
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
                out["model-name"], out["model-version"], INPUTS_TAG, self.inputs
            )
        self.summary.update(
            {
                "model": f"{out['model-name']} version {out['model-version']} @{out['alias']} ({out['decision']})",
                "F1": f"{float(out['candidate-f1']):.4f}"
                + (
                    f" (champion {float(out['champion-f1']):.4f})" if out.get("champion-f1") else ""
                ),
            }
        )
        return out

    def bake(self, model_name: str, alias: str) -> dict[str, str]:
        with self.stage("bake", f"models:/{model_name}@{alias} into the build context"):
            # The previous run's bake: generated (git-ignored), replaced on every run.
            shutil.rmtree(ROOT / BAKED_MODEL_DIR, ignore_errors=True)
            return self.python_script(
                "bake_model.py",
                f"--model-uri=models:/{model_name}@{alias}",
                f"--out={ROOT / BAKED_MODEL_DIR}",
            )

    # ---- the whole run --------------------------------------------------------
    def main(self) -> None:
        self.branch = self.git("branch", "--show-current") or "detached"
        self.environment = self.branch_environment(self.branch)
        self.summary["environment"] = f"{self.environment['environment']} (branch {self.branch})"
        self.reach: list[str] = []
        self.start_cloud()
        self.data()
        promoted = self.promote(self.train())
        model_name, alias = promoted["model-name"], promoted["alias"]
        if self.use_docker and (current := self.already_deployed(promoted["model-version"])):
            self.keep_serving(current, promoted["model-version"])
        elif self.use_docker:
            baked = self.bake(model_name, alias)
            self.build_push_deploy(baked["model-version"])
        else:
            self.serve_locally(model_name, alias)

    @staticmethod
    def branch_environment(branch: str) -> dict[str, str]:
        """The environment ``branch`` deploys to (scripts/branch_env.py, with its fallback)."""
        resolved = subprocess.run(
            [
                sys.executable,
                str(ROOT / "scripts" / "branch_env.py"),
                "--fallback",
                "--json",
                branch,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return {k: str(v) for k, v in json.loads(resolved.stdout).items()}

    def keep_serving(self, current: dict[str, str], model_version: str) -> None:
        """Nothing to deliver: the service already serves this commit and model version."""
        with self.stage("deploy", f"what {self.environment['service']} serves"):
            print(
                f"[deploy] nothing changed: revision {current['revision']} serves an image of "
                f"this commit with model version {model_version} and all the "
                "traffic: no bake, build, push or deploy",
                flush=True,
            )
        self.summary.update(image=current["image"], revision=current["revision"])
        self.summary["URL"] = current["url"]
        self.summary["prediction"] = self.predict(current["url"], proxy=self.env["STANDIN_PROXY"])
        self.reach = self.reach_lines(current)

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
