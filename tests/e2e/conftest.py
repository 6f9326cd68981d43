"""Fixtures for the end-to-end suite: the real local cloud (docker engine, registry, base image,
Cloud Run stand-in), started once per session by ``scripts/local_cloud.py`` and torn down after."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from purchase_rig.local_cloud import LocalCloud, LocalCloudError

ROOT = Path(__file__).resolve().parents[2]

# Cached between runs on one machine: the base image lives in the engine's data root.
STATE = Path(os.environ.get("LOCAL_CLOUD_STATE", ROOT / ".state" / "local-cloud-e2e"))


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (what `nox` forwards when it is stopped) as Ctrl+C: pytest stops the running test
    and tears the fixtures down (the local cloud, act's processes) instead of dying on the spot."""
    signal.signal(signal.SIGTERM, _as_keyboard_interrupt)


def _as_keyboard_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@pytest.fixture(scope="session")
def local_cloud() -> Iterator[dict[str, str]]:
    """docker + base image + registry + MLflow server + Cloud Run stand-in; the env for them."""
    if not shutil.which("gcloud"):
        pytest.fail("the end-to-end suite needs the gcloud CLI on PATH")
    # The rest (an engine, debootstrap, docker-registry) is provisioned by `up`, or it says how.
    cloud = LocalCloud(STATE)
    # Started by the caller (nox -s e2e runs the API image test on it first): the caller stops it.
    owned = not all(cloud.status().values())
    try:
        env = cloud.up(["docker", "base", "registry", "mlflow", "cloudrun"])
    except LocalCloudError as err:
        cloud.down()
        pytest.fail(f"local cloud did not start: {err}")
    try:
        yield {**os.environ, **env}
    finally:
        if owned:
            cloud.down()


def run(
    cmd: list[str], env: dict[str, str], timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command with the local-cloud env, returning its output (never raises on exit code)."""
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


def listening_addresses() -> dict[int, set[str]]:
    """TCP port -> the local addresses listening on it, from /proc/net/tcp{,6} (this network
    namespace: the host's, which revision containers share with --network host)."""
    found: dict[int, set[str]] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            if state != "0A":  # LISTEN
                continue
            address, port = local.split(":")
            found.setdefault(int(port, 16), set()).add(_address(address, width))
    return found


def _address(hex_address: str, width: int) -> str:
    """The kernel's little-endian hex address as text (0.0.0.0, 127.0.0.1, ::, ::1 ...)."""
    raw = bytes.fromhex(hex_address)
    # Each 32-bit word is in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words) if width == 8 else ipaddress.IPv6Address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def revision_port(env: dict[str, str], revision: str) -> int:
    """The PORT the Cloud Run stand-in gave a revision's container (standin-<revision>)."""
    out = run(["docker", "inspect", "--format", "{{json .Config.Env}}", f"standin-{revision}"], env)
    assert out.returncode == 0, out.stderr
    variables = dict(item.split("=", 1) for item in json.loads(out.stdout))
    return int(variables["PORT"])


def assert_loopback_only(port: int, what: str) -> None:
    """``what`` listens on ``port``, on loopback addresses only (issue 13: nothing the local
    cloud serves is reachable from other machines)."""
    addresses = listening_addresses().get(port, set())
    assert addresses, f"{what}: nothing listens on port {port}"
    assert addresses <= {"127.0.0.1", "::1"}, f"{what} listens on {sorted(addresses)}"
