"""The local pipeline's plumbing: stages that time themselves and keep their output in a log,
commands run as a stage's, action scripts run as a runner would, one prediction by HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from purchase_contract.features import example_session_json
from purchase_rig import REPO_ROOT

ROOT = REPO_ROOT
TRAINING_DIR = ROOT / "purchase_predict"
API_DIR = ROOT / "purchase_predict_api"
LOG_TAIL_LINES = 25
# The bake's output, relative to the repository root (the image's build context), where the
# Dockerfile's MODEL_DIR default expects it.
BAKED_MODEL_DIR = "purchase_predict_api/model"
LOCAL_PROJECT = "local-project"


class PipelineError(RuntimeError):
    """A stage failed; the message says which and why."""


class StagePlumbing:
    """What every stage runs on: its log, the environment, the timings so far."""

    def __init__(self, state: Path, *, verbose: bool = False) -> None:
        self.state = state
        self.verbose = verbose
        self.logs = state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.log: Path | None = None  # the current stage's log
        self.env: dict[str, str] = dict(os.environ)
        # Download progress bars would drown the stage lines.
        self.env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        self.timings: list[tuple[str, float]] = []
        self.summary: dict[str, str] = {}

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
            where = f"  (log: {rel(self.log)})" if self.log.stat().st_size else ""
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

    @property
    def smoke_request(self) -> Path:
        """The contract's example session in the state directory: the body the deploy
        workflow's smoke test sends (deploy-api.yml without a ``smoke-request`` input)."""
        path = self.state / "smoke-request.json"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(example_session_json(), encoding="utf-8")
        return path

    @staticmethod
    def git(*args: str) -> str:
        """git in the checkout the pipeline runs (``local_pipeline.Pipeline.git``)."""
        raise NotImplementedError

    def predict(self, url: str, proxy: str | None = None) -> str:
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({"http": proxy} if proxy else {})
        )
        request = urllib.request.Request(
            f"{url}/predict",
            data=self.smoke_request.read_bytes(),
            headers={"Content-Type": "application/json"},
        )
        with opener.open(request, timeout=30) as resp:
            body = json.loads(resp.read())
        return json.dumps(body, separators=(",", ":"))[:300]


def rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def build_digest(log: Path) -> str:
    """One line for a docker build log: steps, how many came from the cache, the image."""
    lines = log.read_text(errors="replace").splitlines()
    steps = sum(1 for line in lines if line.startswith("Step "))
    cached = sum(1 for line in lines if "Using cache" in line)
    built = next((line for line in reversed(lines) if line.startswith("Successfully built")), "")
    image = built.removeprefix("Successfully built ").strip()
    return f"{steps} steps, {cached} from the cache" + (f", image {image}" if image else "")


def keep_provision_log(log: Path | None, *sources: Path) -> None:
    """Append the provisioning log to the stage log, so apt-get's output is kept, not shown."""
    if log is None:
        return
    for source in sources:
        if source.exists() and source.stat().st_size:
            with log.open("a") as out:
                out.write(source.read_text(errors="replace"))
            source.unlink()


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False
