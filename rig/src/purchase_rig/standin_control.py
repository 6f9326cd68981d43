"""The Cloud Run stand-in's control plane: the services and revisions it holds, how a deploy
or a traffic change updates them, and the views the Admin API and the data plane read."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from typing import Any

from purchase_rig.standin_metrics import RequestMetrics
from purchase_rig.standin_model import (
    SERVICE_MIN_SCALE,
    BadRequestError,
    ConflictError,
    NotFoundError,
    Revision,
    Service,
    condition,
    custom_audiences,
    free_port,
    jwt_claims,
    now,
    token_refusal,
    warm_instances,
)
from purchase_rig.standin_revisions import RevisionRunner


class CloudRunStandIn:
    """The control plane (service and revision state); its Docker side is a RevisionRunner."""

    def __init__(
        self, ready_timeout: float, docker: str = "docker", id_token_max_age: float = 600.0
    ) -> None:
        self.ready_timeout = ready_timeout
        self.id_token_max_age = id_token_max_age
        self.docker = docker
        self.services: dict[tuple[str, str], Service] = {}
        self.revisions: dict[str, Revision] = {}
        self.lock = threading.RLock()
        self.runner = RevisionRunner(docker, ready_timeout, self.lock)
        self.metrics = RequestMetrics()

    # ---- control plane -------------------------------------------------
    def apply(self, namespace: str, region: str, body: dict[str, Any], create: bool) -> Service:
        """Create or replace a service; a changed template makes a new revision. A refused
        request (a traffic target that is not one of the service's revisions) changes nothing."""
        name = body["metadata"]["name"]
        with self.lock:
            svc = self.services.get((namespace, name))
            if create and svc is not None:
                raise ConflictError(f"service {name!r} already exists")
            if not create and svc is None:
                raise NotFoundError(f"service {name!r} not found")
            template = body.get("spec", {}).get("template", {})
            changed = svc is None or template != svc.body.get("spec", {}).get("template")
            planned = (template.get("metadata") or {}).get("name") if changed else None
            known = set(svc.revisions if svc else ()) | ({planned} if planned else set())
            _check_traffic(body, known)
            if svc is None:
                svc = Service(name=name, namespace=namespace, region=region, body=body)
                self.services[(namespace, name)] = svc
            svc.body = body
            svc.generation += 1
            if changed:
                svc.template_generation = svc.generation
                self._new_revision(svc, template)
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
        self.runner.launch(svc, rev)

    def delete(self, namespace: str, name: str) -> None:
        with self.lock:
            svc = self.services.pop((namespace, name), None)
            if svc is None:
                raise NotFoundError(f"service {name!r} not found")
            for rev in svc.revisions:
                self.revisions.pop(rev, None)
                self.runner.remove(f"standin-{rev}")

    def shutdown(self) -> None:
        """Remove every container this stand-in started."""
        for rev in list(self.revisions.values()):
            self.runner.remove(rev.container)

    # ---- views -----------------------------------------------------------
    @staticmethod
    def resolved_traffic(svc: Service) -> list[dict[str, Any]]:
        """spec.traffic with latestRevision targets resolved to the latest ready revision."""
        return svc.resolved_traffic()

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
            annotations = svc.body.get("metadata", {}).get("annotations") or {}
            service_min = int(annotations.get(SERVICE_MIN_SCALE) or 0)
            return warm_instances(svc.resolved_traffic(), self.revisions, service_min)

    def service_view(self, svc: Service) -> dict[str, Any]:
        with self.lock:
            latest = self.revisions.get(svc.latest_created)
            config = condition(latest)
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
                {"type": t, "status": c[0], "message": c[1], "lastTransitionTime": now()}
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
                "traffic": svc.resolved_traffic(),
            }
            return body

    def _routes_condition(self, svc: Service) -> tuple[str, str]:
        """Ready when every revision that receives traffic is ready (a tag on a failed one is not)."""
        for target in svc.resolved_traffic():
            status, message = condition(self.revisions.get(target["revisionName"]))
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
        claims = jwt_claims(authorization.removeprefix("Bearer ").strip())
        if claims is None:
            return ""
        with self.lock:
            svc = next((s for s in self.services.values() if s.serves(host)), None)
            if svc is None:
                return ""
            annotations = svc.body.get("metadata", {}).get("annotations") or {}
            audiences = [svc.url, f"http://{host}", *custom_audiences(annotations)]
        return token_refusal(claims, audiences, self.id_token_max_age, time.time())

    def pick_backend(self, host: str) -> Revision | None:
        """The revision a data-plane request for ``host`` goes to, or None."""
        with self.lock:
            for svc in self.services.values():
                if host == svc.host:
                    targets = [
                        t for t in svc.resolved_traffic() if t["percent"] and t["revisionName"]
                    ]
                    if not targets:
                        return None
                    chosen = random.choices(targets, weights=[t["percent"] for t in targets])[0]
                    return self.revisions.get(chosen["revisionName"])
                if host.endswith(f"---{svc.host}"):
                    tag = host[: -len(f"---{svc.host}")]
                    for t in svc.resolved_traffic():
                        if t.get("tag") == tag:
                            return self.revisions.get(t["revisionName"])
            return None


def _check_traffic(body: dict[str, Any], known: set[str]) -> None:
    """Cloud Run routes only to the service's own revisions: a target naming any other (another
    service's, a deleted or a made-up one) refuses the whole update, in Cloud Run's words (as
    quoted from the service in terraform-google-modules/terraform-docs-samples#269)."""
    for target in body.get("spec", {}).get("traffic") or []:
        rev = target.get("revisionName")
        if rev and rev not in known:
            raise BadRequestError(
                f"Revision '{rev}' does not exist or is deleted. Update all traffic to route to "
                "currently available revisions."
            )
