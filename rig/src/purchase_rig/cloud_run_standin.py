#!/usr/bin/env python3
"""LOCAL STAND-IN for Google Cloud Run (not Google's code, not a full emulator).

It speaks the slice of the Cloud Run Admin API (Knative serving v1) that the real
``gcloud`` CLI uses for ``gcloud run deploy`` (incl. ``--no-traffic``, ``--tag``,
``--set-env-vars``, ``--port``), ``gcloud run services describe`` and
``gcloud run services update-traffic``, and it is the data plane too: it runs one Docker
container per revision (``--network host``, ``PORT`` set to a free port, ``HOST=127.0.0.1``), marks a revision
ready only once that port answers, and forwards requests for the service URL (by the
traffic split) and for tag URLs to the right container. A revision that fails to start
leaves the previous one serving, as on Cloud Run.

Two things Cloud Run bills or enforces are modelled so that tests can see them: the warm
(minimum) instances of each revision, served at
``GET http://run.local/standin/v1/namespaces/<project>/services/<service>:instances`` (see
``CloudRunStandIn.warm_instances``), and the lifetime of Google-style ID tokens on the data plane
(``--id-token-max-age``).

gcloud reaches it as an HTTP proxy: set ``CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN=http://run.local/``,
``CLOUDSDK_PROXY_TYPE=http``, ``CLOUDSDK_PROXY_ADDRESS=127.0.0.1``,
``CLOUDSDK_PROXY_PORT=<--port>`` (see ``env`` below). Service URLs look like
``http://<service>-<hash>.<region>.run.local``; reach them through the same proxy
(``curl -x http://127.0.0.1:<port> <url>`` or ``http_proxy=...``).

Standard library only; needs the ``docker`` CLI (``DOCKER_HOST`` is honoured).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_HOST = re.compile(r"^(?:(?P<region>[a-z0-9-]+)-)?run\.local$")
DATA_HOST_SUFFIX = ".run.local"
KNATIVE = re.compile(
    r"^/apis/serving\.knative\.dev/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>services|revisions|routes|configurations)(?:/(?P<name>[^/:]+))?$"
)
# Not a Google API: the stand-in's own read-out of what Cloud Run would keep running.
INSTANCES = re.compile(
    r"^/standin/v1/namespaces/(?P<ns>[^/]+)/services/(?P<name>[^/:]+):instances$"
)
# Revision-level minimum (gcloud --min-instances) lives in the revision template; service-level
# minimum (gcloud --min) on the service itself (both as gcloud 528 sends them).
REVISION_MIN_SCALE = "autoscaling.knative.dev/minScale"
SERVICE_MIN_SCALE = "run.googleapis.com/minScale"
CUSTOM_AUDIENCES = "run.googleapis.com/custom-audiences"
IAM = re.compile(
    r"^/v[12]/projects/(?P<project>[^/]+)/locations/(?P<region>[^/]+)/services/(?P<name>[^/:]+):(?P<verb>testIamPermissions|getIamPolicy|setIamPolicy)$"
)
HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (scripts/local_cloud.py and benchmark.py use it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log(message: str, **fields: Any) -> None:
    # One write per record: print() writes the line and its newline apart, and threads interleave.
    sys.stderr.write(json.dumps({"time": _now(), "msg": message, **fields}) + "\n")
    sys.stderr.flush()


@dataclass
class Revision:
    name: str
    service: str
    namespace: str
    region: str
    generation: int
    template: dict[str, Any]
    port: int
    container: str
    state: str = "Deploying"  # Deploying -> Ready | Failed
    message: str = ""
    created: str = field(default_factory=_now)

    def to_knative(self) -> dict[str, Any]:
        ready = {"Ready": "True", "Failed": "False"}.get(self.state, "Unknown")
        meta = dict(self.template.get("metadata") or {})
        labels = dict(meta.get("labels") or {})
        labels.update(
            {
                "serving.knative.dev/service": self.service,
                "serving.knative.dev/configuration": self.service,
                "serving.knative.dev/configurationGeneration": str(self.generation),
            }
        )
        meta.update(
            name=self.name,
            namespace=self.namespace,
            labels=labels,
            generation=1,
            creationTimestamp=self.created,
            uid=str(uuid.uuid5(uuid.NAMESPACE_URL, self.name)),
        )
        return {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Revision",
            "metadata": meta,
            "spec": self.template.get("spec", {}),
            "status": {
                "observedGeneration": 1,
                "conditions": [
                    {
                        "type": t,
                        "status": ready,
                        "message": self.message,
                        "lastTransitionTime": self.created,
                    }
                    for t in ("Ready", "ContainerHealthy", "ResourcesAvailable")
                ],
                "imageDigest": self.image,
                "logUrl": f"docker logs {self.container}",
            },
        }

    @property
    def image(self) -> str:
        containers = self.template.get("spec", {}).get("containers") or [{}]
        return containers[0].get("image", "")


@dataclass
class Service:
    name: str
    namespace: str
    region: str
    body: dict[str, Any]
    generation: int = 0
    template_generation: int = 0  # the generation that last created a revision
    revisions: list[str] = field(default_factory=list)
    latest_created: str = ""
    latest_ready: str = ""
    created: str = field(default_factory=_now)

    @property
    def host(self) -> str:
        digest = hashlib.sha256(f"{self.namespace}/{self.name}".encode()).hexdigest()[:10]
        return f"{self.name}-{digest}.{self.region}{DATA_HOST_SUFFIX}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"


class CloudRunStandIn:
    """The control plane (service and revision state) and its Docker side."""

    def __init__(
        self, ready_timeout: float, docker: str = "docker", id_token_max_age: float = 600.0
    ) -> None:
        self.ready_timeout = ready_timeout
        self.id_token_max_age = id_token_max_age
        self.docker = docker
        self.services: dict[tuple[str, str], Service] = {}
        self.revisions: dict[str, Revision] = {}
        self.lock = threading.RLock()

    # ---- control plane -------------------------------------------------
    def apply(self, namespace: str, region: str, body: dict[str, Any], create: bool) -> Service:
        """Create or replace a service; a changed template makes a new revision."""
        name = body["metadata"]["name"]
        with self.lock:
            svc = self.services.get((namespace, name))
            if create and svc is not None:
                raise ConflictError(f"service {name!r} already exists")
            if not create and svc is None:
                raise NotFoundError(f"service {name!r} not found")
            if svc is None:
                svc = Service(name=name, namespace=namespace, region=region, body=body)
                self.services[(namespace, name)] = svc
            old_template = svc.body.get("spec", {}).get("template")
            svc.body = body
            svc.generation += 1
            template = body.get("spec", {}).get("template", {})
            if create or template != old_template:
                svc.template_generation = svc.generation
                self._new_revision(svc, template)
            self._check_traffic(svc)
            return svc

    def _new_revision(self, svc: Service, template: dict[str, Any]) -> None:
        name = (template.get("metadata") or {}).get("name") or (
            f"{svc.name}-{len(svc.revisions) + 1:05d}-{uuid.uuid4().hex[:3]}"
        )
        if name in self.revisions:
            raise ConflictError(f"revision {name!r} already exists")
        rev = Revision(
            name=name,
            service=svc.name,
            namespace=svc.namespace,
            region=svc.region,
            generation=svc.generation,
            template=template,
            port=free_port(),
            container=f"standin-{name}",
        )
        self.revisions[name] = rev
        svc.revisions.append(name)
        svc.latest_created = name
        threading.Thread(target=self._start_revision, args=(svc, rev), daemon=True).start()

    def _check_traffic(self, svc: Service) -> None:
        for target in svc.body.get("spec", {}).get("traffic") or []:
            rev = target.get("revisionName")
            if rev and rev not in self.revisions and rev != svc.latest_created:
                raise BadRequestError(f"traffic target revision {rev!r} does not exist")

    def _start_revision(self, svc: Service, rev: Revision) -> None:
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
        _log("starting revision", revision=rev.name, image=rev.image, port=rev.port)
        started = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if started.returncode != 0:
            return self._fail(rev, f"container failed to start: {started.stderr.strip()[-500:]}")
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._port_answers(rev.port):
                with self.lock:
                    rev.state = "Ready"
                    if svc.revisions.index(rev.name) >= (
                        svc.revisions.index(svc.latest_ready) if svc.latest_ready else -1
                    ):
                        svc.latest_ready = rev.name
                _log("revision ready", revision=rev.name)
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

    def _fail(self, rev: Revision, message: str) -> None:
        with self.lock:
            rev.state, rev.message = "Failed", f"Revision '{rev.name}' is not ready: {message}"
        _log("revision failed", revision=rev.name, reason=message)

    def _port_answers(self, port: int) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    def _running(self, container: str) -> bool:
        out = subprocess.run(
            [self.docker, "inspect", "-f", "{{.State.Running}}", container],
            capture_output=True,
            text=True,
            check=False,
        )
        return out.stdout.strip() == "true"

    def _logs(self, container: str) -> str:
        out = subprocess.run(
            [self.docker, "logs", "--tail", "5", container],
            capture_output=True,
            text=True,
            check=False,
        )
        return " | ".join((out.stdout + out.stderr).strip().splitlines()[-5:])

    def delete(self, namespace: str, name: str) -> None:
        with self.lock:
            svc = self.services.pop((namespace, name), None)
            if svc is None:
                raise NotFoundError(f"service {name!r} not found")
            for rev in svc.revisions:
                self.revisions.pop(rev, None)
                subprocess.run(
                    [self.docker, "rm", "-f", f"standin-{rev}"], capture_output=True, check=False
                )

    def shutdown(self) -> None:
        """Remove every container this stand-in started."""
        for rev in list(self.revisions.values()):
            subprocess.run(
                [self.docker, "rm", "-f", rev.container], capture_output=True, check=False
            )

    # ---- views -----------------------------------------------------------
    def resolved_traffic(self, svc: Service) -> list[dict[str, Any]]:
        """spec.traffic with latestRevision targets resolved to the latest ready revision."""
        out = []
        for target in svc.body.get("spec", {}).get("traffic") or [
            {"latestRevision": True, "percent": 100}
        ]:
            rev = (
                svc.latest_ready if target.get("latestRevision") else target.get("revisionName", "")
            )
            entry = {"revisionName": rev, "percent": target.get("percent", 0)}
            if target.get("latestRevision"):
                entry["latestRevision"] = True
            if tag := target.get("tag"):
                entry["tag"] = tag
                entry["url"] = f"http://{tag}---{svc.host}"
            out.append(entry)
        return out

    def warm_instances(self, svc: Service) -> dict[str, int]:
        """Idle instances Cloud Run keeps (and bills) per revision, by its documented rules.

        https://cloud.google.com/run/docs/configuring/min-instances?hl=zh-CN (translated): with
        a revision-level minimum, the instances are started whenever the revision is referenced
        in the traffic split (even at 0%) or has a traffic tag; a tagged revision outside the
        split does not count towards the service-level minimum, which is "divided among all
        revisions with specified traffic based on the percent of traffic they are receiving"
        (run v2 ServiceScaling.min_instance_count). Google advises against
        mixing both; where they meet, a revision keeps the larger of the two here.
        """
        with self.lock:
            traffic = self.resolved_traffic(svc)
            revision_min: dict[str, int] = {}
            for target in traffic:
                rev = self.revisions.get(target["revisionName"])
                if rev is None or rev.state == "Failed":
                    continue
                annotations = (rev.template.get("metadata") or {}).get("annotations") or {}
                revision_min[rev.name] = int(annotations.get(REVISION_MIN_SCALE) or 0)
            annotations = svc.body.get("metadata", {}).get("annotations") or {}
            service_min = int(annotations.get(SERVICE_MIN_SCALE) or 0)
            percents: dict[str, int] = {}
            for target in traffic:
                if target["percent"] and target["revisionName"] in revision_min:
                    name = target["revisionName"]
                    percents[name] = percents.get(name, 0) + target["percent"]
            share = _largest_remainder(service_min, percents)
            return {
                name: max(minimum, share.get(name, 0)) for name, minimum in revision_min.items()
            }

    def service_view(self, svc: Service) -> dict[str, Any]:
        with self.lock:
            latest = self.revisions.get(svc.latest_created)
            config = self._condition(latest)
            routes = self._routes_condition(svc)
            # A traffic-only change (no new revision) is judged on its routes alone.
            ready = config if svc.generation == svc.template_generation else routes
            if ready[0] == "True":
                ready = routes
            body = json.loads(json.dumps(svc.body))
            meta = body.setdefault("metadata", {})
            meta.update(
                namespace=svc.namespace,
                generation=svc.generation,
                creationTimestamp=svc.created,
                uid=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{svc.namespace}/{svc.name}")),
                resourceVersion=str(svc.generation),
                selfLink=f"/apis/serving.knative.dev/v1/namespaces/{svc.namespace}/services/{svc.name}",
            )
            meta.setdefault("labels", {})["cloud.googleapis.com/location"] = svc.region
            conditions = [
                {"type": t, "status": c[0], "message": c[1], "lastTransitionTime": _now()}
                for t, c in (
                    ("Ready", ready),
                    ("ConfigurationsReady", config),
                    ("RoutesReady", routes),
                )
            ]
            body["status"] = {
                "observedGeneration": svc.generation,
                "conditions": conditions,
                "latestCreatedRevisionName": svc.latest_created,
                "latestReadyRevisionName": svc.latest_ready,
                "url": svc.url,
                "address": {"url": svc.url},
                "traffic": self.resolved_traffic(svc),
            }
            return body

    @staticmethod
    def _condition(rev: Revision | None) -> tuple[str, str]:
        if rev is None or rev.state == "Ready":
            return "True", ""
        if rev.state == "Failed":
            return "False", rev.message
        return "Unknown", f"Deploying revision {rev.name}."

    def _routes_condition(self, svc: Service) -> tuple[str, str]:
        """Ready when every revision that receives traffic is ready (a tag on a failed one is not)."""
        for target in self.resolved_traffic(svc):
            status, message = self._condition(self.revisions.get(target["revisionName"]))
            if target["revisionName"] and target["percent"] and status != "True":
                return status, message
        return "True", ""

    def refuse_token(self, host: str, authorization: str) -> str:
        """Why Cloud Run would answer 401 to this bearer token, or "" to let it through.

        Only tokens shaped like Google ID tokens (a JWT with ``iss``, ``aud``, ``iat``, ``exp``,
        as tests/workflows/stand-ins/google-github-actions/auth mints them) are checked; no
        token, or a placeholder, passes (the stand-in serves as if invocation were public).
        Cloud Run accepts an ID token whose audience is the service URL or one of the service's
        custom audiences (https://cloud.google.com/run/docs/configuring/custom-audiences), while it
        has not expired; google-github-actions/auth README: "ID Tokens have a maximum lifetime
        of 10 minutes" (``--id-token-max-age``, default 600 s, counts from ``iat``).
        """
        claims = _jwt_claims(authorization.removeprefix("Bearer ").strip())
        if claims is None:
            return ""
        with self.lock:
            svc = next(
                (
                    s
                    for s in self.services.values()
                    if host == s.host or host.endswith(f"---{s.host}")
                ),
                None,
            )
            if svc is None:
                return ""
            annotations = svc.body.get("metadata", {}).get("annotations") or {}
            audiences = [svc.url, f"http://{host}", *_custom_audiences(annotations)]
        now = time.time()
        age = now - float(claims.get("iat", 0))
        if now >= float(claims.get("exp", 0)) or age > self.id_token_max_age:
            return f"the ID token expired ({age:.0f}s old; ID tokens live {self.id_token_max_age:.0f}s)"
        if claims.get("aud") not in audiences:
            return f"the ID token's audience {claims.get('aud')!r} is not one of {audiences}"
        return ""

    def pick_backend(self, host: str) -> Revision | None:
        """The revision a data-plane request for ``host`` goes to, or None."""
        with self.lock:
            for svc in self.services.values():
                if host == svc.host:
                    targets = [
                        t for t in self.resolved_traffic(svc) if t["percent"] and t["revisionName"]
                    ]
                    if not targets:
                        return None
                    chosen = random.choices(targets, weights=[t["percent"] for t in targets])[0]
                    return self.revisions.get(chosen["revisionName"])
                if host.endswith(f"---{svc.host}"):
                    tag = host[: -len(f"---{svc.host}")]
                    for t in self.resolved_traffic(svc):
                        if t.get("tag") == tag:
                            return self.revisions.get(t["revisionName"])
            return None


def _largest_remainder(total: int, weights: dict[str, int]) -> dict[str, int]:
    """``total`` split in whole numbers in proportion to ``weights``."""
    weight = sum(weights.values())
    if not total or not weight:
        return {}
    exact = {name: total * w / weight for name, w in weights.items()}
    share = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - share[n], reverse=True)[
        : total - sum(share.values())
    ]:
        share[name] += 1
    return share


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT-shaped token, unverified; None for anything else."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, json.JSONDecodeError):
        return None
    if not isinstance(claims, dict) or not {"aud", "iat", "exp"} <= claims.keys():
        return None
    return claims


def _custom_audiences(annotations: dict[str, str]) -> list[str]:
    """``run.googleapis.com/custom-audiences`` (a JSON list, as gcloud 528 writes it)."""
    try:
        audiences = json.loads(annotations.get(CUSTOM_AUDIENCES) or "[]")
    except json.JSONDecodeError:
        return []
    return [a for a in audiences if isinstance(a, str)]


class ApiError(Exception):
    code = 500
    status = "INTERNAL"


class NotFoundError(ApiError):
    code, status = 404, "NOT_FOUND"


class ConflictError(ApiError):
    code, status = 409, "ALREADY_EXISTS"


class BadRequestError(ApiError):
    code, status = 400, "INVALID_ARGUMENT"


def make_handler(standin: CloudRunStandIn) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cloud-run-standin"

        def log_message(self, format: str, *args: Any) -> None:
            _log("request", line=format % args)

        def _target(self) -> tuple[str, str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            host = parts.hostname or (self.headers.get("Host") or "").split(":")[0]
            return host, parts.path, parse_qs(parts.query)

        def _send_json(self, code: int, payload: Any) -> None:
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, err: ApiError) -> None:
            self._send_json(
                err.code, {"error": {"code": err.code, "message": str(err), "status": err.status}}
            )

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _dispatch(self) -> None:
            host, path, query = self._target()
            if match := API_HOST.match(host):
                try:
                    self._admin(match.group("region") or "us-central1", path, query)
                except ApiError as err:
                    self._error(err)
                except (KeyError, ValueError, TypeError) as err:
                    self._error(BadRequestError(f"malformed request: {err}"))
            elif host.endswith(DATA_HOST_SUFFIX):
                self._proxy(host)
            else:
                self._error(NotFoundError(f"the Cloud Run stand-in does not serve host {host!r}"))

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

        def _admin(self, region: str, path: str, query: dict[str, list[str]]) -> None:
            if match := INSTANCES.match(path):
                svc = standin.services.get(match.group("ns", "name"))
                if svc is None:
                    raise NotFoundError(f"service {match.group('name')!r} not found")
                warm = standin.warm_instances(svc)
                return self._send_json(
                    200, {"warmInstances": sum(warm.values()), "revisions": warm}
                )
            if match := IAM.match(path):
                body = json.loads(self._body() or b"{}")
                if match.group("verb") == "testIamPermissions":
                    return self._send_json(200, {"permissions": body.get("permissions", [])})
                return self._send_json(200, body.get("policy", {"etag": "ACAB"}))
            match = KNATIVE.match(path)
            if not match:
                raise NotFoundError(
                    f"the Cloud Run stand-in does not implement {self.command} {path}"
                )
            ns, kind, name = match.group("ns", "kind", "name")
            if kind == "services":
                return self._services(ns, region, name)
            if kind == "revisions":
                return self._revisions(ns, name, query)
            raise NotFoundError(f"{kind} are not implemented by the Cloud Run stand-in")

        def _services(self, ns: str, region: str, name: str | None) -> None:
            if self.command == "GET" and name:
                svc = standin.services.get((ns, name))
                if svc is None:
                    raise NotFoundError(
                        f"Resource '{name}' of kind 'SERVICE' in region '{region}' in project '{ns}' does not exist."
                    )
                return self._send_json(200, standin.service_view(svc))
            if self.command == "GET":
                items = [
                    standin.service_view(s) for (n, _), s in standin.services.items() if n == ns
                ]
                return self._send_json(
                    200,
                    {"apiVersion": "serving.knative.dev/v1", "kind": "ServiceList", "items": items},
                )
            if self.command == "POST" and not name:
                svc = standin.apply(ns, region, json.loads(self._body()), create=True)
                return self._send_json(200, standin.service_view(svc))
            if self.command == "PUT" and name:
                body = json.loads(self._body())
                if body.get("metadata", {}).get("name") != name:
                    raise BadRequestError("metadata.name does not match the URL")
                svc = standin.apply(ns, region, body, create=False)
                return self._send_json(200, standin.service_view(svc))
            if self.command == "DELETE" and name:
                standin.delete(ns, name)
                return self._send_json(200, {"status": "Success"})
            raise BadRequestError(f"{self.command} is not supported on services")

        def _revisions(self, ns: str, name: str | None, query: dict[str, list[str]]) -> None:
            if name:
                rev = standin.revisions.get(name)
                if rev is None or rev.namespace != ns:
                    raise NotFoundError(f"revision {name!r} not found")
                return self._send_json(200, rev.to_knative())
            selector = (query.get("labelSelector") or [""])[0]
            items = [r.to_knative() for r in standin.revisions.values() if r.namespace == ns]
            if selector:
                key, _, value = (s.strip() for s in selector.partition("="))
                items = [i for i in items if i["metadata"]["labels"].get(key) == value]
            return self._send_json(
                200,
                {"apiVersion": "serving.knative.dev/v1", "kind": "RevisionList", "items": items},
            )

        def _proxy(self, host: str) -> None:
            body = self._body()
            authorization = self.headers.get("Authorization") or ""
            claims = _jwt_claims(authorization.removeprefix("Bearer ").strip()) or {}
            # A digest and the token's claims, never the token: what tests compare.
            _log(
                "data plane",
                host=host,
                path=urlsplit(self.path).path,
                authorization_sha256=hashlib.sha256(authorization.encode()).hexdigest(),
                token_aud=claims.get("aud", ""),
                token_jti=claims.get("jti", ""),
            )
            if refused := standin.refuse_token(host, authorization):
                return self._send_json(
                    401, {"error": {"code": 401, "message": refused, "status": "UNAUTHENTICATED"}}
                )
            rev = standin.pick_backend(host)
            if rev is None or rev.state != "Ready":
                why = (
                    "no revision receives traffic"
                    if rev is None
                    else f"revision {rev.name} is {rev.state}"
                )
                return self._error(NotFoundError(f"{host}: {why}"))
            path = urlsplit(self.path).path or "/"
            if query := urlsplit(self.path).query:
                path += f"?{query}"
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
            conn = http.client.HTTPConnection("127.0.0.1", rev.port, timeout=60)
            try:
                conn.request(self.command, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except OSError as err:
                return self._error(ApiError(f"revision {rev.name} did not answer: {err}"))
            finally:
                conn.close()
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("X-Serving-Revision", rev.name)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def gcloud_env(port: int, config_dir: str, project: str = "local-project") -> dict[str, str]:
    """The environment that aims the real gcloud CLI at this stand-in."""
    return {
        "CLOUDSDK_CONFIG": config_dir,
        "CLOUDSDK_CORE_PROJECT": project,
        "CLOUDSDK_AUTH_ACCESS_TOKEN": "local-standin-token",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_SHOULD_PROMPT_TO_ENABLE_API": "false",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN": "http://run.local/",
        "CLOUDSDK_PROXY_TYPE": "http",
        "CLOUDSDK_PROXY_ADDRESS": "127.0.0.1",
        "CLOUDSDK_PROXY_PORT": str(port),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Prints the gcloud environment to use as KEY=VALUE lines once listening.",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="listen port on 127.0.0.1 (default: a free one)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds a revision has to listen on PORT",
    )
    parser.add_argument(
        "--gcloud-config",
        default=os.path.join(os.getcwd(), ".gcloud-standin"),
        help="throwaway CLOUDSDK_CONFIG dir",
    )
    parser.add_argument("--port-file", help="write the listening port to this file (for scripts)")
    parser.add_argument(
        "--id-token-max-age",
        type=float,
        default=600.0,
        help="seconds after its iat that an ID token is refused with 401 (Google: 10 minutes)",
    )
    args = parser.parse_args(argv)

    standin = CloudRunStandIn(
        ready_timeout=args.ready_timeout, id_token_max_age=args.id_token_max_age
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(standin))
    port = server.server_address[1]
    for key, value in gcloud_env(port, args.gcloud_config).items():
        print(f"{key}={value}", flush=True)
    if args.port_file:
        with open(args.port_file, "w") as fh:
            fh.write(str(port))
    _log("cloud run stand-in listening", port=port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        standin.shutdown()
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    sys.exit(main())
