#!/usr/bin/env python3
"""Start, inspect and stop the local stand-ins for the cloud: the offline pre-production rig.

Parts, under one state directory (default ``.state/local-cloud``):

- ``docker``   the Docker engine that is there, used as it is: ``DOCKER_HOST``, else the docker
               CLI's current context or default socket (``/var/run/docker.sock``); only when none
               answers, Debian's ``dockerd`` started here (own data root and socket, no iptables,
               no bridge: builds and containers use ``--network host``);
- ``base``     the official ``python:3.11-slim``, pulled where pulls work; else a local stand-in
               for it (debootstrap bookworm minbase + python3 + the host's CA bundle, ``docker
               import``), cached outside the clone (``~/.cache/purchase-predict/``) keyed by its
               recipe, so a fresh clone imports it in seconds instead of a minute's debootstrap;
- ``registry`` whatever answers on 127.0.0.1:5000, else the ``registry:2`` image (where it can
               be pulled), else Debian's ``docker-registry`` binary: on loopback in every case;
- ``mlflow``   ``mlflow server`` on loopback with a SQLite store (needs ``mlflow`` on PATH);
- ``cloudrun`` the project's Cloud Run stand-in (``purchase_rig.cloud_run_standin``) that the
               real ``gcloud`` CLI talks to.

``provision`` installs what the parts need and this machine lacks (``docker.io``,
``debootstrap``, ``docker-registry``) with ``apt-get`` when run as root, or stops with the exact
command to run; ``up`` does it first too. ``up`` writes ``env.sh`` / ``env.json`` in the state
directory: the variables (DOCKER_HOST, CLOUDSDK_*, MLFLOW_TRACKING_URI, REGISTRY, BASE_IMAGE,
STANDIN_PROXY) that aim docker, gcloud and MLflow at these parts. ``down`` stops what it started
(never the user's engine). Standard library only.
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
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from purchase_rig import REPO_ROOT
from purchase_rig.cloud_run_standin import free_port, gcloud_env

ROOT = REPO_ROOT
# /etc/apt/apt.conf.d/docker-clean of the official debian images (python:3.11-slim's base).
APT_DOCKER_CLEAN = """\
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
DEFAULT_STATE = ROOT / ".state" / "local-cloud"
# What the API image is built on in the cloud (the Dockerfile's default).
OFFICIAL_BASE_IMAGE = "python:3.11-slim"
REGISTRY_IMAGE = "registry:2"
# The stand-in base image's recipe: its tag and its cache file are keyed by a hash of these.
DEBOOTSTRAP_SUITE = "bookworm"
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,libgomp1"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
REGISTRY_PORT = 5000
COMPONENTS = ("docker", "base", "registry", "mlflow", "cloudrun")
DEFAULT_DOCKER_SOCKET = "unix:///var/run/docker.sock"
# The Debian package that provides each tool the parts may need.
PACKAGES = {
    "docker": "docker.io",
    "dockerd": "docker.io",
    "debootstrap": "debootstrap",
    "docker-registry": "docker-registry",
}
PULL_TIMEOUT_S = 300


def cache_dir() -> Path:
    """Caches shared by every clone on this machine ($XDG_CACHE_HOME/purchase-predict)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "purchase-predict"


class LocalCloudError(RuntimeError):
    """A part could not be started; the message says which and why."""


class CannotInstallError(LocalCloudError):
    """Tools are missing and this process cannot install them; the message says how to."""


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


def _running_dockerd_hosts() -> list[tuple[int, str]]:
    """(pid, -H socket) of the dockerd processes running on this machine."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if (proc / "comm").read_text().strip() != "dockerd":
                continue
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if args == [b""]:  # exiting (a zombie has no command line)
                continue
        except OSError:
            continue
        host = DEFAULT_DOCKER_SOCKET
        for i, raw in enumerate(args):
            arg = raw.decode(errors="replace")
            if arg.startswith(("-H=", "--host=")):
                host = arg.split("=", 1)[1]
            elif arg in ("-H", "--host") and i + 1 < len(args):
                host = args[i + 1].decode(errors="replace")
        found.append((int(proc.name), host))
    return found


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _clean_docker_env() -> dict[str, str]:
    """os.environ without the variables that pick an engine: the docker CLI's own choice."""
    return {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}


def _engine_answers(env: dict[str, str]) -> bool:
    if not shutil.which("docker", path=env.get("PATH")):
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def provision(tools: dict[str, str], *, log: Path | None = None) -> list[str]:
    """Install the missing ``tools`` (name -> what it is for) with apt-get when root, or raise
    with the exact command to run. Returns the Debian packages installed."""
    path = os.environ.get("PATH")
    missing = {tool: why for tool, why in tools.items() if not shutil.which(tool, path=path)}
    if not missing:
        return []
    packages = sorted({PACKAGES[tool] for tool in missing})
    needs = "; ".join(f"{tool} for {why}" for tool, why in missing.items())
    apt = shutil.which("apt-get", path=path)
    if not apt or os.geteuid() != 0:
        if not apt:
            hint = (
                "install Docker (Docker Engine, Docker Desktop or colima) and start it"
                if "docker.io" in packages
                else f"install {', '.join(missing)} with your package manager"
            )
        else:
            hint = f"sudo apt-get update && sudo apt-get install -y {' '.join(packages)}"
        raise CannotInstallError(
            f"this machine lacks {needs}. Run: {hint}  "
            "(or serve with uvicorn only: nox -s pipeline -- --no-docker)"
        )
    _say(f"installing {' '.join(packages)} with apt-get ({needs})")
    out = log.open("a") if log else subprocess.DEVNULL
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in ([apt, "update", "-qq"], [apt, "install", "-y", "-qq", *packages]):
            done = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
            if done.returncode != 0:
                raise LocalCloudError(
                    f"{' '.join(cmd)} exited with {done.returncode}"
                    + (f" (log: {log})" if log else "")
                )
    finally:
        if log:
            out.close()
    return packages


class Processes:
    """The stand-ins' processes, tracked by pid files in one state directory."""

    def __init__(self, state: Path) -> None:
        self.state = state

    def pidfile(self, name: str) -> Path:
        return self.state / f"{name}.pid"

    def alive(self, name: str) -> bool:
        pidfile = self.pidfile(name)
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

    def spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None) -> Path:
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
        self.pidfile(name).write_text(str(proc.pid))
        return log

    def stop(self, name: str, timeout: float = 15) -> None:
        pidfile = self.pidfile(name)
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().strip() or 0)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self.alive(name):
                time.sleep(0.2)
            if not self.alive(name):
                break
        pidfile.unlink(missing_ok=True)
        _say(f"stopped {name}")


class _Part:
    """One part of the local cloud: it reads and writes its owner's state directory and env."""

    def __init__(self, cloud: LocalCloud) -> None:
        self.cloud = cloud

    @property
    def state(self) -> Path:
        return self.cloud.state

    @property
    def env(self) -> dict[str, str]:
        return self.cloud.env

    @property
    def procs(self) -> Processes:
        return self.cloud.procs


class DockerEngine(_Part):
    """``docker``: the engine that is there, else a dockerd started in the state directory."""

    @property
    def own_host(self) -> str:
        return f"unix://{self.state / 'docker.sock'}"

    @property
    def host(self) -> str:
        return self.env.get("DOCKER_HOST") or self.own_host

    def client_env(self) -> dict[str, str]:
        return {**_clean_docker_env(), "DOCKER_HOST": self.host}

    def run(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker", *args],
            env=self.client_env(),
            capture_output=True,
            text=True,
            check=False,
            **kwargs,
        )

    def ready(self) -> bool:
        return _engine_answers(self.client_env())

    def found(self) -> bool:
        """Whether an engine answers that ``start`` would use without starting one."""
        if self.procs.alive("dockerd") and self.ready():
            return True
        if os.environ.get("DOCKER_HOST"):
            return True  # used as it is, or an error: never a reason to start one
        return _engine_answers(_clean_docker_env()) or any(
            _engine_answers({**_clean_docker_env(), "DOCKER_HOST": host})
            for _, host in _running_dockerd_hosts()
        )

    def user_engine(self) -> tuple[str, str] | None:
        """(DOCKER_HOST, how it was found) of an engine already running, or None."""
        if host := os.environ.get("DOCKER_HOST"):
            if host == self.own_host:
                return None
            if not _engine_answers({**_clean_docker_env(), "DOCKER_HOST": host}):
                raise LocalCloudError(
                    f"DOCKER_HOST={host} does not answer `docker info`: start that engine, "
                    "or unset DOCKER_HOST to use the default one"
                )
            return host, "DOCKER_HOST"
        env = _clean_docker_env()
        if _engine_answers(env):
            # The CLI's own choice: DOCKER_CONTEXT, the current context, or the default socket.
            context = subprocess.run(
                ["docker", "context", "show"], env=env, capture_output=True, text=True, check=False
            ).stdout.strip()
            host = subprocess.run(
                ["docker", "context", "inspect", "--format", "{{.Endpoints.docker.Host}}"],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            how = "the default socket" if context in ("", "default") else f"context {context}"
            return host or DEFAULT_DOCKER_SOCKET, how
        for pid, host in _running_dockerd_hosts():
            if _engine_answers({**env, "DOCKER_HOST": host}):
                return host, f"the running dockerd (pid {pid})"
        return None

    def start(self) -> None:
        if self.procs.alive("dockerd") and _engine_answers(
            {**_clean_docker_env(), "DOCKER_HOST": self.own_host}
        ):
            _say("docker engine (started here earlier) already running")
            self.env.update(DOCKER_HOST=self.own_host, DOCKER_ENGINE="started here")
            return
        if found := self.user_engine():
            host, how = found
            _say(f"using the Docker engine at {host} ({how}); it is left as it is")
            self.env.update(DOCKER_HOST=host, DOCKER_ENGINE=f"yours, via {how}")
            return
        if others := _running_dockerd_hosts():
            pid, host = others[0]
            # Two engines on one machine fight over containerd's socket.
            raise LocalCloudError(
                f"a dockerd (pid {pid}, {host}) runs but does not answer: "
                "set DOCKER_HOST to its socket, or stop it"
            )
        provision({"dockerd": "a Docker engine"}, log=self.state / "provision.log")
        _say("no Docker engine answers: starting one (dockerd, state in this directory)")
        log = self.procs.spawn(
            "dockerd",
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--data-root={self.state / 'docker'}",
                f"--exec-root={self.state / 'exec'}",
                f"--pidfile={self.state / 'dockerd.daemon.pid'}",
                f"-H={self.own_host}",
            ],
        )
        self.env.update(DOCKER_HOST=self.own_host, DOCKER_ENGINE="started here")
        _wait("docker engine", self.ready, 60, log)

    def stop(self) -> None:
        """Stop the engine if it was started here; the user's is left as it was."""
        if self.procs.pidfile("dockerd").exists():
            self.procs.stop("dockerd")
            self.unmount_leftovers()
        elif engine := self.env.get("DOCKER_ENGINE"):
            _say(f"left the Docker engine as it was ({engine})")
        self.env.pop("DOCKER_HOST", None)
        self.env.pop("DOCKER_ENGINE", None)

    def unmount_leftovers(self) -> None:
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


class BaseImage(_Part):
    """``base``: the official base image where it can be pulled, else the debootstrap stand-in."""

    @staticmethod
    def key() -> str:
        """Hash of everything the stand-in base image is made of (its cache key)."""
        recipe = hashlib.sha256()
        for part in (DEBOOTSTRAP_SUITE, DEBOOTSTRAP_PACKAGES, DEBIAN_MIRROR, APT_DOCKER_CLEAN):
            recipe.update(part.encode() + b"\0")
        if HOST_CA_BUNDLE.exists():
            recipe.update(HOST_CA_BUNDLE.read_bytes())
        return recipe.hexdigest()[:12]

    def standin_image(self) -> str:
        return f"local/python-base:{DEBOOTSTRAP_SUITE}-slim-{self.key()}"

    def standin_cache(self) -> Path:
        return cache_dir() / "base-images" / f"python-base-{self.key()}.tar"

    def present(self, image: str) -> bool:
        return self.cloud.docker.run("image", "inspect", image).returncode == 0

    def cached(self) -> bool:
        if self.standin_cache().exists():
            return True
        if not self.cloud.docker.found():
            return False
        try:
            return any(self.present(i) for i in (OFFICIAL_BASE_IMAGE, self.standin_image()))
        except OSError:
            return False

    def pull(self, image: str) -> bool:
        """Pull ``image``; False (quickly, where no registry is reachable) when it cannot."""
        if os.environ.get("LOCAL_CLOUD_NO_PULL"):
            return False
        _say(f"pulling {image}")
        try:
            done = self.cloud.docker.run("pull", "--quiet", image, timeout=PULL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _say(f"pulling {image} timed out after {PULL_TIMEOUT_S}s")
            return False
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["?"])[-1][:200]
            _say(f"cannot pull {image}: {reason}")
        return done.returncode == 0

    def build(self) -> None:
        if self.present(OFFICIAL_BASE_IMAGE) or self.pull(OFFICIAL_BASE_IMAGE):
            _say(f"base image {OFFICIAL_BASE_IMAGE} (the official one)")
            self.env["BASE_IMAGE"] = OFFICIAL_BASE_IMAGE
            return
        image, cached = self.standin_image(), self.standin_cache()
        if self.present(image):
            _say(f"base image {image} (stand-in, in the engine)")
        elif cached.exists():
            _say(f"base image {image}: importing the cached {cached}")
            self.import_tarball(cached, image)
        else:
            self.debootstrap(cached)
            self.import_tarball(cached, image)
        self.env["BASE_IMAGE"] = image

    def import_tarball(self, tarball: Path, image: str) -> None:
        with tarball.open("rb") as data:
            imported = subprocess.run(
                ["docker", "import", "-", image],
                stdin=data,
                env=self.cloud.docker.client_env(),
                capture_output=True,
                text=True,
                check=False,
            )
        if imported.returncode != 0:
            raise LocalCloudError(f"docker import failed: {imported.stderr.strip()}")

    def debootstrap(self, out: Path) -> None:
        """Build the stand-in base's root file system and write it to ``out`` as a tarball."""
        provision(
            {"debootstrap": f"the base image ({OFFICIAL_BASE_IMAGE} cannot be pulled)"},
            log=self.state / "provision.log",
        )
        rootfs = self.state / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        _say(f"building the stand-in base image with debootstrap (about a minute), cached in {out}")
        with (self.state / "debootstrap.log").open("w") as log:
            done = subprocess.run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={DEBOOTSTRAP_PACKAGES}",
                    DEBOOTSTRAP_SUITE,
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
        _slim_rootfs(rootfs)
        _tar_rootfs(rootfs, out)


def _slim_rootfs(rootfs: Path) -> None:
    """The stand-in base's root file system made like Debian's own container images."""
    # The host's CA bundle lets pip inside `docker build` reach PyPI through the TLS proxy.
    if HOST_CA_BUNDLE.exists():
        shutil.copy(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    # As Debian's own container images: no package caches, and apt keeps none.
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(APT_DOCKER_CLEAN)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / cache).glob("*"):
            if entry.is_file():
                entry.unlink()
    for binary_cache in (rootfs / "var/cache/apt").glob("*.bin"):
        binary_cache.unlink()


def _tar_rootfs(rootfs: Path, out: Path) -> None:
    """``rootfs`` as the tarball ``out`` (written whole or not at all); ``rootfs`` removed."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".partial")
    tarred = subprocess.run(
        ["tar", "-C", str(rootfs), "-cf", str(partial), "."], capture_output=True, check=False
    )
    shutil.rmtree(rootfs, ignore_errors=True)
    if tarred.returncode != 0:
        partial.unlink(missing_ok=True)
        raise LocalCloudError(f"tar of the base image failed: {tarred.stderr.decode()[-300:]}")
    partial.replace(out)  # atomic: a half-written tarball is never taken for the cache


class Registry(_Part):
    """``registry``: what answers on 127.0.0.1:REGISTRY_PORT, else ``registry:2``, else
    Debian's ``docker-registry``."""

    def start(self) -> None:
        url = f"http://127.0.0.1:{REGISTRY_PORT}/v2/"
        self.env["REGISTRY"] = f"127.0.0.1:{REGISTRY_PORT}"
        if _http_ok(url):
            _say(f"registry already answering on 127.0.0.1:{REGISTRY_PORT}")
            return
        if _port_in_use(REGISTRY_PORT):
            raise LocalCloudError(
                f"127.0.0.1:{REGISTRY_PORT} is taken by something that is not a registry"
            )
        base = self.cloud.base
        if base.present(REGISTRY_IMAGE) or base.pull(REGISTRY_IMAGE):
            self.start_container(url)
            return
        provision(
            {"docker-registry": f"the image registry ({REGISTRY_IMAGE} cannot be pulled)"},
            log=self.state / "provision.log",
        )
        config = self.state / "registry.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage: {{filesystem: {{rootdirectory: {self.state / 'registry'}}}}}\n"
            f"http: {{addr: 127.0.0.1:{REGISTRY_PORT}}}\n"
        )
        _say(f"starting image registry (docker-registry on 127.0.0.1:{REGISTRY_PORT})")
        log = self.procs.spawn("registry", ["docker-registry", "serve", str(config)])
        _wait("image registry", lambda: _http_ok(url), 30, log)

    def start_container(self, url: str) -> None:
        docker = self.cloud.docker
        name = (
            f"purchase-predict-registry-{hashlib.sha256(str(self.state).encode()).hexdigest()[:8]}"
        )
        docker.run("rm", "-f", name)
        _say(f"starting image registry ({REGISTRY_IMAGE} on 127.0.0.1:{REGISTRY_PORT})")
        started = docker.run(
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "host",
            "-e",
            f"REGISTRY_HTTP_ADDR=127.0.0.1:{REGISTRY_PORT}",
            REGISTRY_IMAGE,
        )
        if started.returncode != 0:
            raise LocalCloudError(f"registry container: {started.stderr.strip()[-300:]}")
        (self.state / "registry.container").write_text(name)
        _wait("image registry", lambda: _http_ok(url), 30)

    def stop(self) -> None:
        self.procs.stop("registry")
        container = self.state / "registry.container"
        if container.exists():
            self.cloud.docker.run("rm", "-f", container.read_text().strip())
            container.unlink()
            _say("stopped registry container")
        self.env.pop("REGISTRY", None)


class MlflowServer(_Part):
    """``mlflow``: ``mlflow server`` on loopback with a SQLite store."""

    @property
    def store(self) -> Path:
        return self.state / "mlflow"

    def start(self) -> None:
        uri = self.env.get("MLFLOW_TRACKING_URI", "")
        if uri and self.procs.alive("mlflow") and _http_ok(f"{uri}/health"):
            _say(f"mlflow server already running at {uri}")
            return
        mlflow = shutil.which("mlflow")
        if not mlflow:
            raise LocalCloudError("no mlflow on PATH (run inside the training environment)")
        port = free_port()
        store = self.store
        store.mkdir(exist_ok=True)
        _say(f"starting mlflow server on 127.0.0.1:{port}")
        log = self.procs.spawn(
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
            # Its job runner (GenAI jobs, 7 more processes) is unused here: without it the
            # server is ready in ~15 s instead of ~55 s on this machine.
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        uri = f"http://127.0.0.1:{port}"
        _wait("mlflow server", lambda: _http_ok(f"{uri}/health"), 90, log)
        self.env["MLFLOW_TRACKING_URI"] = uri

    def stop(self) -> None:
        self.procs.stop("mlflow")
        self.env.pop("MLFLOW_TRACKING_URI", None)


class CloudRunPart(_Part):
    """``cloudrun``: the project's Cloud Run stand-in, on the engine's docker CLI."""

    def start(self) -> None:
        port = int(self.env.get("STANDIN_PORT", 0) or 0)
        if port and self.procs.alive("cloudrun") and _port_in_use(port):
            _say(f"cloud run stand-in already running on 127.0.0.1:{port}")
            return
        port = free_port()
        _say(f"starting Cloud Run stand-in on 127.0.0.1:{port}")
        log = self.procs.spawn(
            "cloudrun",
            [
                sys.executable,
                "-m",
                "purchase_rig.cloud_run_standin",
                f"--port={port}",
                f"--gcloud-config={self.state / 'gcloud'}",
            ],
            env=self.cloud.docker.client_env(),
        )
        _wait("cloud run stand-in", lambda: _port_in_use(port), 20, log)
        self.env.update(gcloud_env(port, str(self.state / "gcloud")))
        self.env["STANDIN_PORT"] = str(port)
        self.env["STANDIN_PROXY"] = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        docker = self.cloud.docker
        if not (self.procs.alive("cloudrun") or docker.ready()):
            return
        # The stand-in removes its containers on SIGTERM; sweep leftovers too.
        self.procs.stop("cloudrun")
        if docker.ready():
            leftovers = docker.run("ps", "-aq", "--filter", "name=standin-").stdout.split()
            if leftovers:
                docker.run("rm", "-f", *leftovers)
        for key in [k for k in self.env if k.startswith(("CLOUDSDK_", "STANDIN_"))]:
            del self.env[key]


class LocalCloud:
    """The local cloud under one state directory: its parts, composed, and their env."""

    def __init__(self, state: Path) -> None:
        # Absolute: the engine's socket and the registry's address are written from it, and a
        # relative socket path reads as a host name to containerd ("missing port in address").
        state = Path(state).absolute()
        self.state = state
        self.state.mkdir(parents=True, exist_ok=True)
        self.env_file = state / "env.json"
        self.env: dict[str, str] = (
            json.loads(self.env_file.read_text()) if self.env_file.exists() else {}
        )
        self.procs = Processes(state)
        self.docker = DockerEngine(self)
        self.base = BaseImage(self)
        self.registry = Registry(self)
        self.mlflow = MlflowServer(self)
        self.cloudrun = CloudRunPart(self)

    def _save_env(self) -> None:
        self.env_file.write_text(json.dumps(self.env, indent=2, sort_keys=True))
        lines = [f"export {k}={json.dumps(v)}" for k, v in sorted(self.env.items())]
        (self.state / "env.sh").write_text("\n".join(lines) + "\n")

    # ---- provisioning ------------------------------------------------------
    def needed_tools(self, parts: list[str]) -> tuple[dict[str, str], dict[str, str]]:
        """(required, fallback) tools for ``parts`` on this machine, each name -> what for.
        Fallbacks are needed only when the primary way fails (a pull, an answering registry)."""
        required: dict[str, str] = {}
        fallback: dict[str, str] = {}
        if {"docker", "base", "registry", "cloudrun"} & set(parts):
            required["docker"] = "the docker CLI"
        if "docker" in parts and not self.docker.found():
            required["dockerd"] = (
                "a Docker engine (none answers on DOCKER_HOST or the default socket)"
            )
        if "base" in parts and not self.base.cached():
            fallback["debootstrap"] = f"the base image when {OFFICIAL_BASE_IMAGE} cannot be pulled"
        if "registry" in parts and not _http_ok(f"http://127.0.0.1:{REGISTRY_PORT}/v2/"):
            fallback["docker-registry"] = (
                f"the image registry when {REGISTRY_IMAGE} cannot be pulled"
            )
        return required, fallback

    def provision(self, parts: list[str]) -> list[str]:
        """Install what ``parts`` need (fallbacks too when apt-get can), or raise with the command."""
        required, fallback = self.needed_tools(parts)
        log = self.state / "provision.log"
        try:
            return provision({**required, **fallback}, log=log)
        except CannotInstallError:
            if not fallback:
                raise
        # Cannot install: fail now only for what is surely needed; fallbacks when they are.
        installed = provision(required, log=log)
        path = os.environ.get("PATH")
        for tool, why in fallback.items():
            if not shutil.which(tool, path=path):
                _say(f"note: no {tool} ({why}); install it if that happens")
        return installed

    # ---- the parts, by the names other code uses ----------------------------
    @property
    def own_docker_host(self) -> str:
        return self.docker.own_host

    @property
    def docker_host(self) -> str:
        return self.docker.host

    def docker_env(self) -> dict[str, str]:
        return self.docker.client_env()

    def _docker(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.docker.run(*args, **kwargs)

    def docker_ready(self) -> bool:
        return self.docker.ready()

    def start_docker(self) -> None:
        self.docker.start()

    @staticmethod
    def standin_base_key() -> str:
        return BaseImage.key()

    def standin_base_image(self) -> str:
        return self.base.standin_image()

    def standin_base_cache(self) -> Path:
        return self.base.standin_cache()

    def build_base_image(self) -> None:
        self.base.build()

    def start_registry(self) -> None:
        self.registry.start()

    def start_mlflow(self) -> None:
        self.mlflow.start()

    @property
    def mlflow_store(self) -> Path:
        return self.mlflow.store

    def start_cloudrun(self) -> None:
        self.cloudrun.start()

    # ---- the whole ---------------------------------------------------------
    def up(self, parts: list[str]) -> dict[str, str]:
        starters = {
            "docker": self.docker.start,
            "base": self.base.build,
            "registry": self.registry.start,
            "mlflow": self.mlflow.start,
            "cloudrun": self.cloudrun.start,
        }
        self.provision(parts)
        for part in parts:
            starters[part]()
            self._save_env()
        return self.env

    def down(self, parts: list[str] | None = None) -> None:
        """Stop ``parts`` (all by default) of what this state directory started."""
        parts = list(parts or COMPONENTS)
        if "cloudrun" in parts:
            self.cloudrun.stop()
        if "mlflow" in parts:
            self.mlflow.stop()
        if "registry" in parts:
            self.registry.stop()
        if "docker" in parts:
            self.docker.stop()
        if set(parts) >= set(COMPONENTS) or not self.env:
            self.env_file.unlink(missing_ok=True)
            (self.state / "env.sh").unlink(missing_ok=True)
        else:
            self._save_env()

    def status(self) -> dict[str, bool]:
        return {
            "docker": self.docker.ready(),
            "registry": _http_ok(f"http://127.0.0.1:{REGISTRY_PORT}/v2/"),
            "mlflow": self.procs.alive("mlflow"),
            "cloudrun": self.procs.alive("cloudrun"),
        }

    def running(self) -> list[str]:
        """One line per part still running: what, where, and whether it is ours to stop."""
        lines = []
        if self.env.get("DOCKER_HOST") and self.docker.ready():
            lines.append(
                f"Docker engine at {self.env['DOCKER_HOST']} ({self.env.get('DOCKER_ENGINE', '?')})"
            )
        if self.env.get("REGISTRY") and _http_ok(f"http://127.0.0.1:{REGISTRY_PORT}/v2/"):
            lines.append(f"image registry http://127.0.0.1:{REGISTRY_PORT}/v2/_catalog")
        if self.procs.alive("mlflow"):
            lines.append(f"MLflow server {self.env.get('MLFLOW_TRACKING_URI', '?')}")
        if self.procs.alive("cloudrun"):
            lines.append(f"Cloud Run stand-in (gcloud's proxy) {self.env.get('STANDIN_PROXY')}")
            names = self.docker.run("ps", "--format", "{{.Names}}", "--filter", "name=standin-")
            for name in sorted(names.stdout.split()):
                lines.append(f"revision container {name}: {self.revision_url(name) or '?'}")
        return lines

    def revision_url(self, container: str) -> str:
        """The loopback URL of a revision container (it listens on 127.0.0.1:$PORT)."""
        out = self.docker.run("inspect", "--format", "{{json .Config.Env}}", container).stdout
        try:
            env = dict(e.split("=", 1) for e in json.loads(out or "[]"))
        except ValueError:
            return ""
        return f"http://127.0.0.1:{env['PORT']}" if "PORT" in env else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Start, inspect and stop the local cloud stand-ins (docker engine, base image, "
        "image registry, mlflow server, Cloud Run stand-in).",
        epilog="Example: python -m purchase_rig.local_cloud up && source .state/local-cloud/env.sh",
    )
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(os.environ.get("LOCAL_CLOUD_STATE", DEFAULT_STATE)),
        help="state directory (default: %(default)s)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    parts_help = f"some of: {', '.join(COMPONENTS)} (default: all)"
    for name, help_text in (
        ("provision", "install what the parts need and this machine lacks (apt-get, as root)"),
        ("up", "start the parts and write env.sh / env.json"),
        ("down", "stop what this state directory started (never the user's engine)"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument(
            "parts", nargs="*", choices=[[], *COMPONENTS], metavar="PART", help=parts_help
        )
    sub.add_parser("status", help="print which parts are running, as JSON")
    sub.add_parser("env", help="print the env.sh lines of the running parts")
    args = parser.parse_args(argv)

    cloud = LocalCloud(args.state)
    parts = getattr(args, "parts", None) or list(COMPONENTS)
    try:
        if args.command == "provision":
            installed = cloud.provision(parts)
            _say(f"installed {' '.join(installed)}" if installed else "nothing to install")
        elif args.command == "up":
            env = cloud.up(parts)
            print(json.dumps(env, indent=2, sort_keys=True))
        elif args.command == "down":
            cloud.down(parts)
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
