"""The Cloud Run stand-in as a test fixture runs it: on a free port, its revisions run by the
fake docker (``purchase_rig.fake_docker``), gcloud's configuration in a state directory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from purchase_rig import fake_docker
from purchase_rig.cloud_run_standin import gcloud_env

START_TIMEOUT_S = 15


class StandInDidNotStart(RuntimeError):
    """The stand-in wrote no port in time; the message carries its log."""


@contextmanager
def standin_with_fake_docker(state: Path) -> Iterator[tuple[dict[str, str], dict[str, str], int]]:
    """Run the stand-in under ``state``; yield ``(env, gcloud, port)``.

    ``env`` is this process's environment with the fake docker first on PATH (what the stand-in
    runs with), ``gcloud`` the variables that aim gcloud at it, ``port`` its port. Stopped on exit.
    """
    bin_dir = state / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{fake_docker.__file__}" "$@"\n')
    docker.chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_DOCKER_STATE": str(state / "containers"),
    }
    port_file = state / "port"
    log_path = state / "standin.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "purchase_rig.cloud_run_standin", "--port-file",
             str(port_file), "--gcloud-config", str(state / "gcloud"), "--ready-timeout", "20"],
            env=env, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _port_written(port_file) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not _port_written(port_file):
                raise StandInDidNotStart(
                    f"the Cloud Run stand-in did not start: {log_path.read_text()}"
                )
            port = int(port_file.read_text())
            yield env, gcloud_env(port, str(state / "gcloud")), port
        finally:
            server.terminate()
            server.wait(timeout=10)


def _port_written(port_file: Path) -> bool:
    return port_file.exists() and port_file.read_text().strip().isdigit()
