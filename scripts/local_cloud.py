#!/usr/bin/env python3
"""Start, inspect and stop the local stand-ins for the cloud: the offline pre-production rig.

Real parts, each started by this script under one state directory (default ``.state/local-cloud``):

- ``docker``   Debian's ``dockerd`` (own data root and socket, no iptables, no bridge:
               builds and containers use ``--network host``);
- ``base``     a local stand-in for the official slim Python image (debootstrap bookworm
               minbase + python3 + the host's CA bundle, ``docker import``), cached in the
               engine's data root between runs;
- ``registry`` Debian's ``docker-registry`` (the reference registry) on 127.0.0.1:5000;
- ``mlflow``   ``mlflow server`` on loopback with a SQLite store (needs ``mlflow`` on PATH);
- ``cloudrun`` the project's Cloud Run stand-in (``scripts/cloud_run_standin.py``) that the
               real ``gcloud`` CLI talks to.

``up`` writes ``env.sh`` / ``env.json`` in the state directory: the variables (DOCKER_HOST,
CLOUDSDK_*, MLFLOW_TRACKING_URI, REGISTRY, BASE_IMAGE, STANDIN_PROXY) that aim docker,
gcloud and MLflow at these parts. ``down`` stops everything it started. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cloud_run_standin import free_port, gcloud_env  # scripts/ is on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
# /etc/apt/apt.conf.d/docker-clean of the official debian images (python:3.11-slim's base).
APT_DOCKER_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
DEFAULT_STATE = ROOT / ".state" / "local-cloud"
# The tag names the recipe: change it when the recipe changes, so caches are rebuilt.
BASE_IMAGE = "local/python-base:bookworm-slim"
REGISTRY_PORT = 5000
COMPONENTS = ("docker", "base", "registry", "mlflow", "cloudrun")
DEBIAN_MIRROR = "http://deb.debian.org/debian"


class LocalCloudError(RuntimeError):
    """A part could not be started; the message says which and why."""


def _say(message: str) -> None:
    print(f"[local-cloud] {message}", file=sys.stderr, flush=True)


def _wait(what: str, check: Callable[[], bool], timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    tail = ""
    if log and log.exists():
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
    raise LocalCloudError(f"{what} not ready after {timeout:.0f}s{': ' + tail if tail else ''}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status < 500
    except (urllib.error.URLError, OSError):
        return False


def _other_dockerd() -> int | None:
    """The pid of a dockerd already running on this machine, if any."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() == "dockerd":
                return int(proc.name)
        except OSError:
            continue
    return None


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalCloud:
    """The stand-ins' processes, tracked by pid files in one state directory."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.state.mkdir(parents=True, exist_ok=True)
        self.env_file = state / "env.json"
        self.env: dict[str, str] = (
            json.loads(self.env_file.read_text()) if self.env_file.exists() else {}
        )

    # ---- process bookkeeping ---------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def _alive(self, name: str) -> bool:
        pidfile = self._pidfile(name)
        if not pidfile.exists():
            return False
        try:
            pid = int(pidfile.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError):
            return False
        try:  # reap it if it is our own exited child: a zombie still answers kill(pid, 0)
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return False
        except ChildProcessError:
            pass
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Path:
        log = self.state / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group: `down` stops its children too
            )
        self._pidfile(name).write_text(str(proc.pid))
        return log

    def _stop(self, name: str, timeout: float = 15) -> None:
        pidfile = self._pidfile(name)
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().strip() or 0)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(name):
                time.sleep(0.2)
            if not self._alive(name):
                break
        pidfile.unlink(missing_ok=True)
        _say(f"stopped {name}")

    def _save_env(self) -> None:
        self.env_file.write_text(json.dumps(self.env, indent=2, sort_keys=True))
        lines = [f"export {k}={json.dumps(v)}" for k, v in sorted(self.env.items())]
        (self.state / "env.sh").write_text("\n".join(lines) + "\n")

    # ---- parts -------------------------------------------------------------
    @property
    def docker_host(self) -> str:
        return f"unix://{self.state / 'docker.sock'}"

    def _docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", *args],
            env={**os.environ, "DOCKER_HOST": self.docker_host},
            capture_output=True,
            text=True,
            check=False,
            **kwargs,
        )

    def docker_ready(self) -> bool:
        return shutil.which("docker") is not None and self._docker("info").returncode == 0

    def start_docker(self) -> None:
        if self.docker_ready():
            _say("docker engine already running")
        else:
            if not shutil.which("dockerd"):
                raise LocalCloudError("no dockerd on PATH (apt-get install docker.io)")
            if other := _other_dockerd():
                # Two engines on one machine fight over containerd's socket.
                raise LocalCloudError(
                    f"another dockerd is running (pid {other}); stop it or point --state at its directory"
                )
            _say("starting docker engine")
            log = self._spawn(
                "dockerd",
                [
                    "dockerd",
                    "--iptables=false",
                    "--ip6tables=false",
                    "--bridge=none",
                    f"--data-root={self.state / 'docker'}",
                    f"--exec-root={self.state / 'exec'}",
                    f"--pidfile={self.state / 'dockerd.daemon.pid'}",
                    f"-H={self.docker_host}",
                ],
            )
            _wait("docker engine", self.docker_ready, 60, log)
        self.env["DOCKER_HOST"] = self.docker_host

    def build_base_image(self) -> None:
        if self._docker("image", "inspect", BASE_IMAGE).returncode == 0:
            _say(f"base image {BASE_IMAGE} cached")
        else:
            if not shutil.which("debootstrap"):
                raise LocalCloudError("no debootstrap on PATH (apt-get install debootstrap)")
            rootfs = self.state / "rootfs"
            shutil.rmtree(rootfs, ignore_errors=True)
            _say(f"building base image {BASE_IMAGE} with debootstrap (about a minute)")
            with (self.state / "debootstrap.log").open("w") as log:
                done = subprocess.run(
                    [
                        "debootstrap",
                        "--variant=minbase",
                        "--include=python3,python3-venv,python3-pip,ca-certificates,libgomp1",
                        "bookworm",
                        str(rootfs),
                        DEBIAN_MIRROR,
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    check=False,
                    timeout=900,
                )
            if done.returncode != 0:
                raise LocalCloudError(f"debootstrap failed: see {self.state / 'debootstrap.log'}")
            # The host's CA bundle lets pip inside `docker build` reach PyPI through the TLS proxy.
            shutil.copy(
                "/etc/ssl/certs/ca-certificates.crt", rootfs / "etc/ssl/certs/ca-certificates.crt"
            )
            # As Debian's own container images: no package caches, and apt keeps none.
            (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(APT_DOCKER_CLEAN)
            for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / cache).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            for binary_cache in (rootfs / "var/cache/apt").glob("*.bin"):
                binary_cache.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            imported = subprocess.run(
                ["docker", "import", "-", BASE_IMAGE],
                stdin=tar.stdout,
                env={**os.environ, "DOCKER_HOST": self.docker_host},
                capture_output=True,
                text=True,
                check=False,
            )
            tar.wait()
            shutil.rmtree(rootfs, ignore_errors=True)
            if imported.returncode != 0:
                raise LocalCloudError(f"docker import failed: {imported.stderr.strip()}")
        self.env["BASE_IMAGE"] = BASE_IMAGE

    def start_registry(self) -> None:
        url = f"http://127.0.0.1:{REGISTRY_PORT}/v2/"
        if _http_ok(url):
            _say("registry already running")
        else:
            if not shutil.which("docker-registry"):
                raise LocalCloudError(
                    "no docker-registry on PATH (apt-get install docker-registry)"
                )
            if _port_in_use(REGISTRY_PORT):
                raise LocalCloudError(
                    f"127.0.0.1:{REGISTRY_PORT} is taken by something that is not a registry"
                )
            config = self.state / "registry.yml"
            config.write_text(
                "version: 0.1\n"
                f"storage: {{filesystem: {{rootdirectory: {self.state / 'registry'}}}}}\n"
                f"http: {{addr: 127.0.0.1:{REGISTRY_PORT}}}\n"
            )
            _say("starting image registry")
            log = self._spawn("registry", ["docker-registry", "serve", str(config)])
            _wait("image registry", lambda: _http_ok(url), 30, log)
        self.env["REGISTRY"] = f"127.0.0.1:{REGISTRY_PORT}"

    def start_mlflow(self) -> None:
        uri = self.env.get("MLFLOW_TRACKING_URI", "")
        if uri and self._alive("mlflow") and _http_ok(f"{uri}/health"):
            _say(f"mlflow server already running at {uri}")
            return
        mlflow = shutil.which("mlflow")
        if not mlflow:
            raise LocalCloudError("no mlflow on PATH (run inside the training environment)")
        port = free_port()
        store = self.state / "mlflow"
        store.mkdir(exist_ok=True)
        _say(f"starting mlflow server on 127.0.0.1:{port}")
        log = self._spawn(
            "mlflow",
            [
                mlflow,
                "server",
                "--host=127.0.0.1",
                f"--port={port}",
                f"--backend-store-uri=sqlite:///{store / 'mlflow.db'}",
                f"--artifacts-destination={store / 'artifacts'}",
                "--workers=1",
            ],
        )
        uri = f"http://127.0.0.1:{port}"
        _wait("mlflow server", lambda: _http_ok(f"{uri}/health"), 90, log)
        self.env["MLFLOW_TRACKING_URI"] = uri

    def start_cloudrun(self) -> None:
        port = int(self.env.get("STANDIN_PORT", 0) or 0)
        if port and self._alive("cloudrun") and _port_in_use(port):
            _say(f"cloud run stand-in already running on 127.0.0.1:{port}")
            return
        port = free_port()
        _say(f"starting Cloud Run stand-in on 127.0.0.1:{port}")
        log = self._spawn(
            "cloudrun",
            [
                sys.executable,
                str(ROOT / "scripts" / "cloud_run_standin.py"),
                f"--port={port}",
                f"--gcloud-config={self.state / 'gcloud'}",
            ],
            env={"DOCKER_HOST": self.docker_host},
        )
        _wait("cloud run stand-in", lambda: _port_in_use(port), 20, log)
        self.env.update(gcloud_env(port, str(self.state / "gcloud")))
        self.env["STANDIN_PORT"] = str(port)
        self.env["STANDIN_PROXY"] = f"http://127.0.0.1:{port}"

    def up(self, parts: list[str]) -> dict[str, str]:
        starters = {
            "docker": self.start_docker,
            "base": self.build_base_image,
            "registry": self.start_registry,
            "mlflow": self.start_mlflow,
            "cloudrun": self.start_cloudrun,
        }
        for part in parts:
            starters[part]()
            self._save_env()
        return self.env

    def down(self) -> None:
        if self._alive("cloudrun") or self.docker_ready():
            # The stand-in removes its containers on SIGTERM; sweep leftovers too.
            self._stop("cloudrun")
            leftovers = self._docker("ps", "-aq", "--filter", "name=standin-").stdout.split()
            if leftovers:
                self._docker("rm", "-f", *leftovers)
        for name in ("mlflow", "registry", "dockerd"):
            self._stop(name)
        self._unmount_leftovers()
        self.env_file.unlink(missing_ok=True)
        (self.state / "env.sh").unlink(missing_ok=True)

    def _unmount_leftovers(self) -> None:
        """Unmount what the stopped engine left mounted in the state directory (its network
        namespace file under ``exec/netns``), so that the directory can be deleted."""
        root = str(self.state.resolve()) + os.sep
        try:
            mounts = Path("/proc/self/mounts").read_text().splitlines()
        except OSError:
            return
        # Mount points escape spaces as \040; deepest first.
        points = [line.split()[1].replace("\\040", " ") for line in mounts if line.split()]
        for point in sorted((p for p in points if p.startswith(root)), reverse=True):
            done = subprocess.run(
                ["umount", "--lazy", point], check=False, capture_output=True, text=True
            )
            if done.returncode == 0:
                _say(f"unmounted {point}")
            else:
                _say(f"cannot unmount {point}: {done.stderr.strip()}")

    def status(self) -> dict[str, bool]:
        return {
            "docker": self.docker_ready(),
            "registry": _http_ok(f"http://127.0.0.1:{REGISTRY_PORT}/v2/"),
            "mlflow": self._alive("mlflow"),
            "cloudrun": self._alive("cloudrun"),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start, inspect and stop the local cloud stand-ins (docker engine, base image, "
        "image registry, mlflow server, Cloud Run stand-in).",
        epilog="Example: python scripts/local_cloud.py up && source .state/local-cloud/env.sh",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("LOCAL_CLOUD_STATE", DEFAULT_STATE)),
        help="state directory (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the parts (all by default) and write env.sh / env.json")
    up.add_argument(
        "parts",
        nargs="*",
        choices=[[], *COMPONENTS],
        default=list(COMPONENTS),
        metavar="PART",
        help=f"some of: {', '.join(COMPONENTS)}",
    )
    sub.add_parser("down", help="stop everything this state directory started")
    sub.add_parser("status", help="print which parts are running, as JSON")
    sub.add_parser("env", help="print the env.sh lines of the running parts")
    args = parser.parse_args(argv)

    cloud = LocalCloud(args.state)
    try:
        if args.command == "up":
            env = cloud.up(args.parts or list(COMPONENTS))
            print(json.dumps(env, indent=2, sort_keys=True))
        elif args.command == "down":
            cloud.down()
        elif args.command == "status":
            print(json.dumps(cloud.status(), indent=2))
        else:
            print(
                (cloud.state / "env.sh").read_text() if (cloud.state / "env.sh").exists() else "",
                end="",
            )
    except (LocalCloudError, subprocess.TimeoutExpired) as err:
        print(f"local-cloud: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
