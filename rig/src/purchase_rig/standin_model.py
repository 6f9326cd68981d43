"""The Cloud Run stand-in's resources and the rules they follow: services, revisions, their
traffic and the Admin API's errors (no I/O here but the log line)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import sys
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (scripts/local_cloud.py and benchmark.py use it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(message: str, **fields: Any) -> None:
    # One write per record: print() writes the line and its newline apart, and threads interleave.
    sys.stderr.write(json.dumps({"time": now(), "msg": message, **fields}) + "\n")
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
    created: str = field(default_factory=now)

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
    created: str = field(default_factory=now)

    @property
    def host(self) -> str:
        digest = hashlib.sha256(f"{self.namespace}/{self.name}".encode()).hexdigest()[:10]
        return f"{self.name}-{digest}.{self.region}{DATA_HOST_SUFFIX}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def resolved_traffic(self) -> list[dict[str, Any]]:
        """spec.traffic with latestRevision targets resolved to the latest ready revision."""
        out = []
        for target in self.body.get("spec", {}).get("traffic") or [
            {"latestRevision": True, "percent": 100}
        ]:
            rev = (
                self.latest_ready
                if target.get("latestRevision")
                else target.get("revisionName", "")
            )
            entry = {"revisionName": rev, "percent": target.get("percent", 0)}
            if target.get("latestRevision"):
                entry["latestRevision"] = True
            if tag := target.get("tag"):
                entry["tag"] = tag
                entry["url"] = f"http://{tag}---{self.host}"
            out.append(entry)
        return out

    def serves(self, host: str) -> bool:
        """Whether data-plane requests for ``host`` are this service's (its URL or a tag's)."""
        return host == self.host or host.endswith(f"---{self.host}")


def condition(rev: Revision | None) -> tuple[str, str]:
    """A revision's Ready condition: status and message."""
    if rev is None or rev.state == "Ready":
        return "True", ""
    if rev.state == "Failed":
        return "False", rev.message
    return "Unknown", f"Deploying revision {rev.name}."


def warm_instances(
    traffic: list[dict[str, Any]], revisions: dict[str, Revision], service_min: int
) -> dict[str, int]:
    """Idle instances per revision from the resolved traffic and the service-level minimum
    (the rules are in ``CloudRunStandIn.warm_instances``)."""
    revision_min: dict[str, int] = {}
    for target in traffic:
        rev = revisions.get(target["revisionName"])
        if rev is None or rev.state == "Failed":
            continue
        annotations = (rev.template.get("metadata") or {}).get("annotations") or {}
        revision_min[rev.name] = int(annotations.get(REVISION_MIN_SCALE) or 0)
    percents: dict[str, int] = {}
    for target in traffic:
        if target["percent"] and target["revisionName"] in revision_min:
            name = target["revisionName"]
            percents[name] = percents.get(name, 0) + target["percent"]
    share = _largest_remainder(service_min, percents)
    return {name: max(minimum, share.get(name, 0)) for name, minimum in revision_min.items()}


def token_refusal(claims: dict[str, Any], audiences: list[str], max_age: float, at: float) -> str:
    """Why an ID token with these claims is refused at time ``at`` (expired, wrong audience), or ""."""
    age = at - float(claims.get("iat", 0))
    if at >= float(claims.get("exp", 0)) or age > max_age:
        return f"the ID token expired ({age:.0f}s old; ID tokens live {max_age:.0f}s)"
    if claims.get("aud") not in audiences:
        return f"the ID token's audience {claims.get('aud')!r} is not one of {audiences}"
    return ""


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


def jwt_claims(token: str) -> dict[str, Any] | None:
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


def custom_audiences(annotations: dict[str, str]) -> list[str]:
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
