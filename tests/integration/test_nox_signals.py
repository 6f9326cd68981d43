"""SIGTERM on a nox session stops the command it runs, as Ctrl+C does (issue 13).

By default SIGTERM kills nox alone and its command (e.g. the API of ``nox -s serve``) lives on,
holding its port. The project's noxfile turns SIGTERM into nox's own Ctrl+C handling, which
stops the running command (nox.popen.shutdown_process: terminate, then kill) and runs the
sessions' ``finally`` blocks. The session below runs a server on a port through that noxfile.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HOLD_PORT = """\
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
print("listening", flush=True)
time.sleep(600)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(not shutil.which("nox"), reason="needs nox on PATH (pip install nox)")
def test_sigterm_on_a_nox_session_stops_its_command(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "hold.py").write_text(HOLD_PORT)
    # The project's noxfile, imported for its module-level set-up, plus one session that holds
    # a port the way `nox -s serve` does.
    (tmp_path / "noxfile.py").write_text(
        "import runpy, sys\n"
        "import nox\n"
        f"runpy.run_path({str(ROOT / 'noxfile.py')!r}, run_name='project_noxfile')\n"
        "@nox.session(python=False)\n"
        "def hold(session):\n"
        f"    session.run(sys.executable, 'hold.py', '{port}')\n"
    )
    nox = subprocess.Popen(
        [shutil.which("nox"), "-f", str(tmp_path / "noxfile.py"), "-s", "hold"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # our SIGTERM goes to nox only, as `kill <pid of nox>` does
    )
    try:
        deadline = time.monotonic() + 60
        while not _port_taken(port):
            assert nox.poll() is None, nox.stdout.read()
            assert time.monotonic() < deadline, "the session's command never listened"
            time.sleep(0.2)
        nox.send_signal(signal.SIGTERM)
        nox.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _port_taken(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _port_taken(port), "the command outlived nox: SIGTERM orphaned it"
    finally:
        # nox if it did not exit, and what is left in its process group (an orphaned command).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(nox.pid, signal.SIGKILL)
