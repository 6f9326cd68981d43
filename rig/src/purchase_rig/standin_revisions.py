"""The Cloud Run stand-in's data plane side: one Docker container per revision, marked ready
once its port answers, failed when it exits or stays silent."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

from purchase_rig.standin_model import Revision, Service, log


class RevisionRunner:
    """Starts, watches and removes the revisions' containers with the ``docker`` CLI."""

    def __init__(self, docker: str, ready_timeout: float, lock: threading.RLock) -> None:
        self.docker = docker
        self.ready_timeout = ready_timeout
        self.lock = lock

    def launch(self, svc: Service, rev: Revision) -> None:
        """Start ``rev`` in the background; its state changes when it is ready or has failed."""
        threading.Thread(target=self.start, args=(svc, rev), daemon=True).start()

    def run_command(self, svc: Service, rev: Revision) -> list[str]:
        """``docker run`` for a revision: its template's container, env and command."""
        spec = rev.template.get("spec", {})
        container = (spec.get("containers") or [{}])[0]
        env = {e["name"]: e.get("value", "") for e in container.get("env") or []}
        env.update(
            PORT=str(rev.port), K_SERVICE=svc.name, K_REVISION=rev.name, K_CONFIGURATION=svc.name
        )
        # Containers share the host's network here (no bridge): HOST keeps the revision on
        # loopback, where Cloud Run's own sandbox would keep it private (images honouring HOST).
        env["HOST"] = "127.0.0.1"
        cmd = [self.docker, "run", "-d", "--network", "host", "--name", rev.container]
        for key, value in env.items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [
            *(["--entrypoint", container["command"][0]] if container.get("command") else []),
            rev.image,
        ]
        cmd += [*container.get("command", [])[1:], *container.get("args", [])]
        return cmd

    def start(self, svc: Service, rev: Revision) -> None:
        cmd = self.run_command(svc, rev)
        log("starting revision", revision=rev.name, image=rev.image, port=rev.port)
        started = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if started.returncode != 0:
            return self._fail(rev, f"container failed to start: {started.stderr.strip()[-500:]}")
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._port_answers(rev.port):
                self._ready(svc, rev)
                return None
            if not self._running(rev.container):
                logs = self._logs(rev.container)
                return self._fail(
                    rev, f"container exited before listening on PORT={rev.port}: {logs}"
                )
            time.sleep(0.25)
        return self._fail(
            rev,
            f"container did not listen on PORT={rev.port} within {self.ready_timeout:.0f}s: {self._logs(rev.container)}",
        )

    def _ready(self, svc: Service, rev: Revision) -> None:
        with self.lock:
            rev.state = "Ready"
            if svc.revisions.index(rev.name) >= (
                svc.revisions.index(svc.latest_ready) if svc.latest_ready else -1
            ):
                svc.latest_ready = rev.name
        log("revision ready", revision=rev.name)

    def _fail(self, rev: Revision, message: str) -> None:
        with self.lock:
            rev.state, rev.message = "Failed", f"Revision '{rev.name}' is not ready: {message}"
        log("revision failed", revision=rev.name, reason=message)

    @staticmethod
    def _port_answers(port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _docker_output(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.docker, *args], capture_output=True, text=True, check=False)

    def _running(self, container: str) -> bool:
        out = self._docker_output("inspect", "-f", "{{.State.Running}}", container)
        return out.stdout.strip() == "true"

    def _logs(self, container: str) -> str:
        out = self._docker_output("logs", "--tail", "5", container)
        return " | ".join((out.stdout + out.stderr).strip().splitlines()[-5:])

    def remove(self, container: str) -> None:
        subprocess.run([self.docker, "rm", "-f", container], capture_output=True, check=False)
