"""scripts/local_cloud.py on this machine: provisioning, the engine that is there, loopback only.

The provisioning tests are not marked e2e (they run in ``nox -s tests``): they hide the tools
behind a PATH of their own, so no package is installed or removed. The engine test starts a
Docker engine on the default socket first, as a user's Docker would be (``nox -s e2e``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from purchase_rig import local_cloud
from purchase_rig.local_cloud import LocalCloud, LocalCloudError

from .conftest import assert_loopback_only, run

DEFAULT_SOCKET = "/var/run/docker.sock"
FAKE_APT = """\
#!/bin/sh
echo "$@" >> "{calls}"
# "install": make the packages' tools appear on PATH.
if [ "$1" = install ]; then
  for tool in docker dockerd debootstrap docker-registry; do
    printf '#!/bin/sh\\nexit 1\\n' > "{bin}/$tool"; /bin/chmod +x "{bin}/$tool"
  done
fi
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bare_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH with none of the tools, an empty cache, nothing answering on the registry port."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(local_cloud, "REGISTRY_PORT", _free_port())
    # No engine to find: not the default socket's, nor a dockerd running on this machine.
    monkeypatch.setattr(local_cloud, "_running_dockerd_hosts", list)
    return bin_dir


def test_provision_names_the_exact_command_when_it_cannot_install(
    bare_machine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # apt-get is there but we are not root: the user runs the command.
    (bare_machine / "apt-get").write_text("#!/bin/sh\nexit 99\n")
    (bare_machine / "apt-get").chmod(0o755)
    monkeypatch.setattr(local_cloud.os, "geteuid", lambda: 1000)
    with pytest.raises(LocalCloudError) as err:
        LocalCloud(tmp_path / "state").provision(list(local_cloud.COMPONENTS))
    message = str(err.value)
    assert "sudo apt-get update && sudo apt-get install -y docker.io" in message, message
    assert "--no-docker" in message


def test_provision_without_apt_get_says_what_to_install(bare_machine: Path, tmp_path: Path) -> None:
    with pytest.raises(LocalCloudError, match=r"install Docker .* and start it"):
        LocalCloud(tmp_path / "state").provision(["docker"])


@pytest.mark.skipif(os.geteuid() != 0, reason="installing is for root")
def test_provision_installs_the_missing_packages_with_apt_get(
    bare_machine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls = tmp_path / "apt-calls"
    (bare_machine / "apt-get").write_text(FAKE_APT.format(calls=calls, bin=bare_machine))
    (bare_machine / "apt-get").chmod(0o755)

    installed = LocalCloud(tmp_path / "state").provision(list(local_cloud.COMPONENTS))

    assert installed == ["debootstrap", "docker-registry", "docker.io"]
    assert calls.read_text().splitlines() == [
        "update -qq",
        "install -y -qq debootstrap docker-registry docker.io",
    ]
    assert (
        "installing debootstrap docker-registry docker.io with apt-get" in capsys.readouterr().err
    )
    # Nothing left to do the second time.
    assert LocalCloud(tmp_path / "state").provision(list(local_cloud.COMPONENTS)) == []


def test_provision_needs_nothing_for_mlflow_alone(bare_machine: Path, tmp_path: Path) -> None:
    assert LocalCloud(tmp_path / "state").provision(["mlflow"]) == []


# ---- with a real engine (nox -s e2e) -------------------------------------------------------


@pytest.fixture
def engine_on_default_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Docker engine on the default socket, started before the local cloud, as a user's is
    (RECIPES.md "A user's Docker engine, simulated"); one already there is used as it is."""
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    if run(["docker", "info"], env, timeout=30).returncode == 0:
        yield "already running"
        return
    if Path(DEFAULT_SOCKET).exists() or not shutil.which("dockerd") or os.geteuid() != 0:
        pytest.skip("cannot start an engine on the default socket here")
    home = tmp_path_factory.mktemp("user-engine")
    with (home / "dockerd.log").open("wb") as log:
        dockerd = subprocess.Popen(
            [
                "dockerd",
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                f"--data-root={home / 'data'}",
                f"--exec-root={home / 'exec'}",
                f"--pidfile={home / 'dockerd.pid'}",
                f"-H=unix://{DEFAULT_SOCKET}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while run(["docker", "info"], env, timeout=30).returncode != 0:
            assert dockerd.poll() is None, (home / "dockerd.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the user's engine did not start"
            time.sleep(0.5)
        yield str(dockerd.pid)
    finally:
        dockerd.send_signal(signal.SIGTERM)
        try:
            dockerd.wait(timeout=30)
        except subprocess.TimeoutExpired:
            dockerd.kill()
            dockerd.wait()
        subprocess.run(["umount", "--lazy", str(home / "exec" / "netns" / "default")], check=False)


@pytest.mark.e2e
def test_the_engine_on_the_default_socket_is_used_and_left_running(
    engine_on_default_socket: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", "DOCKER_CONTEXT")}
    cloud = [sys.executable, "-m", "purchase_rig.local_cloud", "--state", str(state)]

    up = run([*cloud, "up", "docker", "base"], env, timeout=600)

    assert up.returncode == 0, up.stderr
    assert "using the Docker engine at unix:///var/run/docker.sock" in up.stderr, up.stderr
    started = json.loads((state / "env.json").read_text())
    assert started["DOCKER_HOST"] == f"unix://{DEFAULT_SOCKET}"
    assert not (state / "dockerd.pid").exists(), "a second engine was started"
    # The base image came from the cache outside the clone (or a pull), not a new debootstrap.
    assert "with debootstrap" not in up.stderr, up.stderr

    down = run([*cloud, "down"], env, timeout=120)

    assert down.returncode == 0, down.stderr
    assert "left the Docker engine as it was" in down.stderr
    assert run(["docker", "info"], env, timeout=30).returncode == 0, "the user's engine stopped"
    if engine_on_default_socket.isdigit():
        os.kill(int(engine_on_default_socket), 0)  # still the same process


@pytest.mark.e2e
def test_every_part_of_the_local_cloud_listens_on_loopback_only(
    local_cloud: dict[str, str],
) -> None:
    ports = {
        "registry": int(local_cloud["REGISTRY"].rsplit(":", 1)[1]),
        "mlflow": int(local_cloud["MLFLOW_TRACKING_URI"].rsplit(":", 1)[1]),
        "cloud run stand-in": int(local_cloud["STANDIN_PORT"]),
    }
    for part, port in ports.items():
        assert_loopback_only(port, part)
