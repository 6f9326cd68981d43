"""Section ``pipeline``: the local pipeline in a scratch copy of the repository: a cold run,
a one-line code change in the API, a warm run; seconds per stage."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

from purchase_bench.common import ROOT, say
from purchase_bench.context import Bench


def pipeline(bench: Bench) -> None:
    """Local pipeline in a scratch copy: cold run, one-line API change, warm run."""
    copy = scratch_copy(bench.work / "repo")
    env = {k: v for k, v in bench.env.items() if k != "MLFLOW_TRACKING_URI"}
    runs = {}
    try:
        for label in ("cold", "warm"):
            if label == "warm":
                main = copy / "purchase_predict_api" / "app" / "main.py"
                main.write_text(main.read_text() + "# one-line change (benchmark)\n")
            runs[label] = run_pipeline(bench, copy, env, label)
    finally:  # the stand-ins it started, whatever happened
        subprocess.run(
            [
                sys.executable,
                "-m",
                "purchase_rig.local_cloud",
                "--state",
                str(bench.work / "cloud"),
                "down",
            ],
            check=False,
            capture_output=True,
        )
    bench.results["pipeline"] = runs


def scratch_copy(copy: Path) -> Path:
    """The checkout's tracked and untracked files, committed in a fresh repository."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in filter(None, listed.split("\0")):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "bench"]):
        subprocess.run(["git", *args], cwd=copy, check=True, capture_output=True)
    return copy


def run_pipeline(bench: Bench, copy: Path, env: dict[str, str], label: str) -> dict[str, object]:
    """One run of the local pipeline in ``copy``: total seconds and its stages line."""
    say(f"local pipeline, {label} run")
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "purchase_rig.local_pipeline",
            "--state",
            str(bench.work / "cloud"),
        ],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    total = time.perf_counter() - started
    (bench.work / f"pipeline-{label}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"local pipeline failed: see {bench.work}/pipeline-{label}.log")
    stages = next(
        line.removeprefix("stages: ")
        for line in done.stdout.splitlines()
        if line.startswith("stages: ")
    )
    return {"total_s": total, "stages": stages}
