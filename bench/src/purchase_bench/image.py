"""Section ``image``: the API image's size and container cold start, when a Docker engine can
be started (the same engine and base image as ``nox -s pipeline``)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from purchase_bench.common import API_DIR, ROOT, say
from purchase_bench.context import Bench
from purchase_bench.servers import Server

TAG = "purchase-predict-api:bench"


def image(bench: Bench, repeats: int = 3) -> None:
    from purchase_rig.local_cloud import DEFAULT_STATE, LocalCloud, LocalCloudError  # noqa: PLC0415

    if not shutil.which("dockerd"):
        bench.results["image"] = {"skipped": "no dockerd on this machine"}
        return
    cloud = LocalCloud(DEFAULT_STATE)
    was_up = cloud.docker_ready()
    try:
        env = {**bench.env, **cloud.up(["docker", "base"])}
    except LocalCloudError as err:
        bench.results["image"] = {"skipped": f"no Docker engine could start: {err}"}
        return
    try:
        build_s = build(bench, env)
        size = image_size(bench, env, TAG)
        base_size = image_size(bench, env, env["BASE_IMAGE"])
        times = cold_starts(bench, env, repeats)
        bench.results["image"] = {
            "size_mb": size / 1e6,
            "base_size_mb": base_size / 1e6,
            "base_image": env["BASE_IMAGE"],
            "build_s": build_s,
            "cold_start_median_s": statistics.median(times),
            "cold_start_runs": times,
        }
        say(f"image {size / 1e6:.0f} MB, container cold start {statistics.median(times):.2f} s")
    finally:
        if not was_up:
            cloud.down()


def build_context(context: Path, model_dir: Path) -> None:
    """The repository's layout (the build context is its root): the contract, the API with
    ``model_dir`` as its baked model, no tests or caches."""
    skip = shutil.ignore_patterns("tests", "__pycache__", "*.egg-info")

    def skip_api(directory: str, names: list[str]) -> set[str]:
        # A model directory baked into the checkout, not the app.model package (skipping every
        # "model" left the image without app/model/: the build failed).
        top = {"model"} if Path(directory) == API_DIR else set()
        return skip(directory, names) | (top & set(names))

    context.mkdir()
    shutil.copy2(ROOT / ".dockerignore", context / ".dockerignore")
    shutil.copytree(ROOT / "contract", context / "contract", ignore=skip)
    shutil.copytree(API_DIR, context / "purchase_predict_api", ignore=skip_api)
    shutil.copytree(model_dir, context / "purchase_predict_api" / "model")


def build(bench: Bench, env: dict[str, str]) -> float:
    """Build the API image with the baked model; seconds it took (its log: docker-build.log)."""
    context = bench.work / "context"
    build_context(context, bench.model_dir)
    say("building the API image (docker build)")
    started = time.perf_counter()
    bench.run(
        [
            "docker",
            "build",
            "--network=host",
            f"--build-arg=BASE_IMAGE={env['BASE_IMAGE']}",
            "--file",
            str(context / "purchase_predict_api" / "Dockerfile"),
            "--tag",
            TAG,
            str(context),
        ],
        env=env,
        stdout=(bench.work / "docker-build.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    return time.perf_counter() - started


def image_size(bench: Bench, env: dict[str, str], image_ref: str) -> int:
    return int(
        bench.run(
            ["docker", "image", "inspect", "--format", "{{.Size}}", image_ref],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    )


def cold_starts(bench: Bench, env: dict[str, str], repeats: int) -> list[float]:
    """Seconds from ``docker run`` to the first 200, ``repeats`` times."""
    times = []
    for i in range(repeats):
        server = Server(
            name="image",
            cmd=[
                "docker",
                "run",
                "--rm",
                "--network=host",
                f"--name=bench-cold-{i}",
                "-e",
                "PORT={port}",
                TAG,
            ],
            env=env,
            path="/predict",
            body=json.dumps(bench.session).encode(),
            log=bench.work / "image.log",
        )
        times.append(server.start(cpu=None))
        bench.run(["docker", "rm", "-f", f"bench-cold-{i}"], env=env, capture_output=True)
        server.stop()
    return times
