"""The Cloud Run stand-in's HTTP side: the Admin API routes gcloud calls (one method per
route) and the data-plane proxy to the revisions' containers."""

from __future__ import annotations

import hashlib
import http.client
import http.server
import json
import re
import time
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from purchase_rig.standin_control import CloudRunStandIn
from purchase_rig.standin_metrics import MONITORING_HOST, Served
from purchase_rig.standin_model import (
    API_HOST,
    DATA_HOST_SUFFIX,
    HOP_HEADERS,
    IAM,
    INSTANCES,
    KNATIVE,
    ApiError,
    BadRequestError,
    NotFoundError,
    Revision,
    jwt_claims,
    log,
)


class StandInHandler(http.server.BaseHTTPRequestHandler):
    """Requests to the stand-in (``make_handler`` binds ``standin``)."""

    protocol_version = "HTTP/1.1"
    server_version = "cloud-run-standin"
    standin: ClassVar[CloudRunStandIn]

    def log_message(self, format: str, *args: Any) -> None:
        log("request", line=format % args)

    # ---- plumbing --------------------------------------------------------
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
        elif host == MONITORING_HOST:
            try:
                authorization = self.headers.get("Authorization") or ""
                self._send_json(200, self.standin.metrics.handle(path, query, authorization))
            except ApiError as err:
                self._error(err)
        elif host.endswith(DATA_HOST_SUFFIX):
            self._proxy(host)
        else:
            self._error(NotFoundError(f"the Cloud Run stand-in does not serve host {host!r}"))

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _dispatch

    # ---- the Admin API ---------------------------------------------------
    def _admin(self, region: str, path: str, query: dict[str, list[str]]) -> None:
        if match := INSTANCES.match(path):
            return self._instances(match)
        if match := IAM.match(path):
            return self._iam(match)
        match = KNATIVE.match(path)
        if not match:
            raise NotFoundError(f"the Cloud Run stand-in does not implement {self.command} {path}")
        ns, kind, name = match.group("ns", "kind", "name")
        if kind == "services":
            return self._services(ns, region, name)
        if kind == "revisions":
            return self._revisions(ns, name, query)
        raise NotFoundError(f"{kind} are not implemented by the Cloud Run stand-in")

    def _instances(self, match: re.Match[str]) -> None:
        svc = self.standin.services.get(match.group("ns", "name"))
        if svc is None:
            raise NotFoundError(f"service {match.group('name')!r} not found")
        warm = self.standin.warm_instances(svc)
        return self._send_json(200, {"warmInstances": sum(warm.values()), "revisions": warm})

    def _iam(self, match: re.Match[str]) -> None:
        body = json.loads(self._body() or b"{}")
        if match.group("verb") == "testIamPermissions":
            return self._send_json(200, {"permissions": body.get("permissions", [])})
        return self._send_json(200, body.get("policy", {"etag": "ACAB"}))

    def _services(self, ns: str, region: str, name: str | None) -> None:
        if self.command == "GET" and name:
            return self._get_service(ns, region, name)
        if self.command == "GET":
            return self._list_services(ns)
        if self.command == "POST" and not name:
            svc = self.standin.apply(ns, region, json.loads(self._body()), create=True)
            return self._send_json(200, self.standin.service_view(svc))
        if self.command == "PUT" and name:
            return self._replace_service(ns, region, name)
        if self.command == "DELETE" and name:
            self.standin.delete(ns, name)
            return self._send_json(200, {"status": "Success"})
        raise BadRequestError(f"{self.command} is not supported on services")

    def _get_service(self, ns: str, region: str, name: str) -> None:
        svc = self.standin.services.get((ns, name))
        if svc is None:
            raise NotFoundError(
                f"Resource '{name}' of kind 'SERVICE' in region '{region}' in project '{ns}' does not exist."
            )
        return self._send_json(200, self.standin.service_view(svc))

    def _list_services(self, ns: str) -> None:
        items = [
            self.standin.service_view(s) for (n, _), s in self.standin.services.items() if n == ns
        ]
        return self._send_json(
            200, {"apiVersion": "serving.knative.dev/v1", "kind": "ServiceList", "items": items}
        )

    def _replace_service(self, ns: str, region: str, name: str) -> None:
        body = json.loads(self._body())
        if body.get("metadata", {}).get("name") != name:
            raise BadRequestError("metadata.name does not match the URL")
        svc = self.standin.apply(ns, region, body, create=False)
        return self._send_json(200, self.standin.service_view(svc))

    def _revisions(self, ns: str, name: str | None, query: dict[str, list[str]]) -> None:
        if name:
            rev = self.standin.revisions.get(name)
            if rev is None or rev.namespace != ns:
                raise NotFoundError(f"revision {name!r} not found")
            return self._send_json(200, rev.to_knative())
        selector = (query.get("labelSelector") or [""])[0]
        items = [r.to_knative() for r in self.standin.revisions.values() if r.namespace == ns]
        if selector:
            key, _, value = (s.strip() for s in selector.partition("="))
            items = [i for i in items if i["metadata"]["labels"].get(key) == value]
        # gcloud pages through metadata.continue: a list without metadata crashes it.
        listing = {"apiVersion": "serving.knative.dev/v1", "kind": "RevisionList", "metadata": {}}
        return self._send_json(200, {**listing, "items": items})

    # ---- the data plane --------------------------------------------------
    def _proxy(self, host: str) -> None:
        body = self._body()
        authorization = self.headers.get("Authorization") or ""
        claims = jwt_claims(authorization.removeprefix("Bearer ").strip()) or {}
        # A digest and the token's claims, never the token: what tests compare.
        log(
            "data plane",
            host=host,
            path=urlsplit(self.path).path,
            authorization_sha256=hashlib.sha256(authorization.encode()).hexdigest(),
            token_aud=claims.get("aud", ""),
            token_jti=claims.get("jti", ""),
        )
        if refused := self.standin.refuse_token(host, authorization):
            return self._send_json(
                401, {"error": {"code": 401, "message": refused, "status": "UNAUTHENTICATED"}}
            )
        rev = self.standin.pick_backend(host)
        if rev is None or rev.state != "Ready":
            why = (
                "no revision receives traffic"
                if rev is None
                else f"revision {rev.name} is {rev.state}"
            )
            return self._error(NotFoundError(f"{host}: {why}"))
        return self._forward(rev, body)

    def _forward(self, rev: Revision, body: bytes) -> None:
        """Send the request on to the revision's container and its answer back."""
        path = urlsplit(self.path).path or "/"
        if query := urlsplit(self.path).query:
            path += f"?{query}"
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        conn = http.client.HTTPConnection("127.0.0.1", rev.port, timeout=60)
        began = time.monotonic()
        try:
            conn.request(self.command, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as err:
            self._served(rev, 503, began)
            return self._error(ApiError(f"revision {rev.name} did not answer: {err}"))
        finally:
            conn.close()
        self._served(rev, resp.status, began)
        self.send_response(resp.status)
        for key, value in resp.getheaders():
            if key.lower() not in HOP_HEADERS and key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("X-Serving-Revision", rev.name)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        return None

    def _served(self, rev: Revision, status: int, began: float) -> None:
        """Count the answer in the revision's request metrics (what Cloud Monitoring shows)."""
        self.standin.metrics.record(
            Served(
                at=datetime.now(UTC),
                project=rev.namespace,
                service=rev.service,
                region=rev.region,
                revision=rev.name,
                status=status,
                latency_ms=(time.monotonic() - began) * 1000,
            )
        )


def make_handler(standin: CloudRunStandIn) -> type[http.server.BaseHTTPRequestHandler]:
    """A request handler class serving ``standin``."""
    return type("Handler", (StandInHandler,), {"standin": standin})
