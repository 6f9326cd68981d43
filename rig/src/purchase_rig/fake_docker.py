#!/usr/bin/env python3
"""LOCAL STAND-IN for the slice of the docker CLI that the pipeline's actions and
scripts/cloud_run_standin.py use, for machines without a Docker engine. Not Docker.

Containers: ``run -d --name N -e PORT=P ... IMAGE`` starts a small HTTP server on 127.0.0.1:P
that plays the API's surface for a deploy (``GET /ready``, ``POST /predict`` of one session or
a list, each answered with :func:`fake_probability`, the ``Purchase-Predict-Revision`` header
from ``K_REVISION``); an image reference containing ``broken`` answers 503 on ``/ready``, and
the API's ``INJECT_FAULTS`` (``error-rate``, ``latency-ms``, ``skew``) is honoured the way the
API honours it. ``inspect``, ``logs`` and ``rm -f`` act on those servers.

Images: ``build`` records its tag, build arguments, labels, Dockerfile and context as
``images/<reference>.json`` (nothing is built), ``tag`` copies a record, ``push`` gives it a
digest and a ``RepoDigests`` entry, and ``inspect --format '{{range .RepoDigests}}...'`` prints
them. State lives in ``$FAKE_DOCKER_STATE``. Standard library only.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

STATE = Path(os.environ.get("FAKE_DOCKER_STATE", "/tmp/fake-docker"))


def fake_probability(session: object) -> float:
    """The fake model: a probability in [0, 1) that depends only on the session's content."""
    digest = hashlib.sha256(json.dumps(session, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def parse_faults(text: str) -> dict[str, float]:
    """``error-rate=0.2,latency-ms=100,skew=0.1`` as a mapping (the API's INJECT_FAULTS)."""
    items = (item.partition("=") for item in text.split(",") if item.strip())
    return {key.strip(): float(value) for key, _, value in items}


class _Api(http.server.BaseHTTPRequestHandler):
    """Answers like the API would; ``image`` decides whether it is healthy."""

    image = ""
    revision = ""
    faults: dict[str, float] = {}  # noqa: RUF012 - set once by serve()
    served = 0
    lock = threading.Lock()

    def _send(self, status: int, payload: object) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.revision:
            self.send_header("Purchase-Predict-Revision", self.revision)
        self.end_headers()
        self.wfile.write(body)

    def _fault(self) -> bool:
        """Sleep the injected latency; True when this request is one the error rate fails."""
        time.sleep(self.faults.get("latency-ms", 0) / 1000)
        # As the API counts: the rate as an exact fraction (0.29 * 100 is 28.999... in floats).
        rate = Fraction(repr(self.faults.get("error-rate", 0.0)))
        with _Api.lock:
            _Api.served += 1
            n = _Api.served
        return n * rate.numerator // rate.denominator > (n - 1) * rate.numerator // rate.denominator

    def do_GET(self) -> None:
        if self.path != "/ready":
            return self._send(404, {"detail": "not found"})
        healthy = "broken" not in self.image
        return self._send(200 if healthy else 503, {"ready": healthy})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError:
            return self._send(422, {"detail": "body is not JSON"})
        if self.path != "/predict" or not isinstance(request, dict | list):
            return self._send(422, {"detail": "expected a JSON object or array on /predict"})
        if self._fault():
            return self._send(500, {"detail": f"injected fault: {self.faults}"})
        sessions = request if isinstance(request, list) else [request]
        skew = self.faults.get("skew", 0)
        predictions = [
            {"probability": min(1.0, max(0.0, fake_probability(s) + skew))} for s in sessions
        ]
        # A digest, not the token: the runner masks tokens in logs.
        authorization = hashlib.sha256(self.headers.get("Authorization", "").encode()).hexdigest()
        return self._send(
            200,
            {
                "image": self.image,
                "authorization_sha256": authorization,
                "predictions": predictions,
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        return


def serve(image: str, port: int) -> None:
    """The fake container's process: serve until terminated (K_REVISION and INJECT_FAULTS from
    its environment, as ``docker run -e`` gave them)."""
    _Api.image = image
    _Api.revision = os.environ.get("K_REVISION", "")
    _Api.faults = parse_faults(os.environ.get("INJECT_FAULTS", ""))
    http.server.ThreadingHTTPServer(("127.0.0.1", port), _Api).serve_forever()


def _run(args: list[str]) -> int:
    env: dict[str, str] = {}
    name = ""
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "-e":
            key, _, value = args[i + 1].partition("=")
            env[key] = value
            i += 2
        elif arg == "--name":
            name = args[i + 1]
            i += 2
        elif arg in ("--network", "--entrypoint"):
            i += 2
        else:
            if arg != "-d":
                positional.append(arg)
            i += 1
    if not name or not positional or "PORT" not in env:
        sys.stderr.write("fake docker: run needs --name, -e PORT=... and an image\n")
        return 125
    process = subprocess.Popen(
        [sys.executable, __file__, "serve", positional[0], env["PORT"]],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **{k: env[k] for k in ("K_REVISION", "INJECT_FAULTS") if k in env}},
    )
    (STATE / name).write_text(str(process.pid))
    sys.stdout.write(f"{name}\n")
    return 0


def _image_file(reference: str) -> Path:
    return STATE / "images" / (reference.replace("/", "%") + ".json")


def _build(args: list[str]) -> int:
    record: dict = {"build_args": {}, "labels": {}, "tags": []}
    iidfile = ""
    flags = {"--file": "dockerfile", "--network": "network"}
    i = 0
    while i < len(args):
        arg, value = args[i], args[i + 1] if i + 1 < len(args) else ""
        if arg in ("--build-arg", "--label"):
            key, _, val = value.partition("=")
            record["build_args" if arg == "--build-arg" else "labels"][key] = val
        elif arg == "--tag":
            record["tags"].append(value)
        elif arg == "--iidfile":
            iidfile = value
        elif arg in flags:
            record[flags[arg]] = value
        else:
            record["context"] = arg
            i += 1
            continue
        i += 2
    if "context" not in record or not record["tags"]:
        sys.stderr.write("fake docker: build needs --tag and a context\n")
        return 125
    image_id = "sha256:" + hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
    record["id"] = image_id
    for tag in record["tags"]:
        _image_file(tag).parent.mkdir(parents=True, exist_ok=True)
        _image_file(tag).write_text(json.dumps(record))
    if iidfile:
        Path(iidfile).write_text(image_id)
    return 0


def _tag(source: str, target: str) -> int:
    if not _image_file(source).exists():
        sys.stderr.write(f"fake docker: no such image {source}\n")
        return 1
    _image_file(target).write_text(_image_file(source).read_text())
    return 0


def _push(reference: str) -> int:
    path = _image_file(reference)
    if not path.exists():
        sys.stderr.write(f"fake docker: no such image {reference}\n")
        return 1
    record = json.loads(path.read_text())
    digest = "sha256:" + hashlib.sha256(f"{record['id']}:{reference}".encode()).hexdigest()
    repository = reference.rsplit(":", 1)[0]
    record["pushed"] = reference
    record["RepoDigests"] = [f"{repository}@{digest}"]
    path.write_text(json.dumps(record))
    sys.stdout.write(f"{reference.rsplit(':', 1)[1]}: digest: {digest} size: 1234\n")
    return 0


def _inspect(args: list[str]) -> int:
    if any("RepoDigests" in arg for arg in args):
        path = _image_file(args[-1])
        if not path.exists():
            sys.stderr.write(f"fake docker: no such image {args[-1]}\n")
            return 1
        for digest in json.loads(path.read_text()).get("RepoDigests", []):
            sys.stdout.write(f"{digest}\n")
        return 0
    sys.stdout.write("true\n" if _alive(args[-1]) else "false\n")
    return 0


def _alive(name: str) -> bool:
    pid_file = STATE / name
    return pid_file.exists() and Path(f"/proc/{pid_file.read_text()}").exists()


def _remove(names: list[str]) -> int:
    for name in (n for n in names if not n.startswith("-")):
        pid_file = STATE / name
        if pid_file.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            pid_file.unlink()
    return 0


def _serve_command(args: list[str]) -> int:
    serve(args[0], int(args[1]))
    return 0


COMMANDS = {
    "serve": _serve_command,
    "run": _run,
    "inspect": _inspect,
    "build": _build,
    "tag": lambda args: _tag(*args),
    "push": lambda args: _push(args[0]),
    "logs": lambda args: 0,
    "rm": _remove,
}


def main(argv: list[str]) -> int:
    """Dispatch one docker sub-command; unknown ones fail like docker does."""
    STATE.mkdir(parents=True, exist_ok=True)
    command, args = (argv[0], argv[1:]) if argv else ("", [])
    if command not in COMMANDS:
        sys.stderr.write(f"fake docker: unsupported command {command!r}\n")
        return 125
    return COMMANDS[command](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
