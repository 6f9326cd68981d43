"""Server processes under test: start one pinned to a CPU, wait for its first 200, stop it."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from purchase_bench.common import SERVER_CPU
from purchase_rig.cloud_run_standin import free_port


def pinned(cmd: list[str], cpu: int | None) -> list[str]:
    """``cmd`` run on one CPU (with everything it starts) when there are two and taskset exists."""
    if cpu is None or (os.cpu_count() or 1) < 2 or not shutil.which("taskset"):
        return cmd
    return ["taskset", "--cpu-list", str(cpu), *cmd]


def post(url: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


@dataclass
class Server:
    """A server process to benchmark: how to start it and what to send it."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    path: str  # the prediction endpoint
    body: bytes  # one single-session request
    log: Path
    port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self, cpu: int | None = SERVER_CPU) -> float:
        """Start, wait for a 200 on the endpoint; seconds from spawn to that 200."""
        self.port = free_port()
        env = {**self.env, "PORT": str(self.port)}
        cmd = pinned([part.replace("{port}", str(self.port)) for part in self.cmd], cpu)
        started = time.perf_counter()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = started + 180
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}: see {self.log}"
                )
            status, _ = post(self.url, self.body, timeout=5)
            if status == 200:
                return time.perf_counter() - started
            time.sleep(0.005)
        self.stop()
        raise RuntimeError(f"{self.name} gave no 200 on {self.path} within 180 s: see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None


@contextmanager
def running(server: Server, cpu: int | None = SERVER_CPU) -> Iterator[Server]:
    server.start(cpu)
    try:
        yield server
    finally:
        server.stop()
