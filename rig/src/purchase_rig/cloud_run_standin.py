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
(``--id-token-max-age``). A third, what Cloud Monitoring shows per revision: every answer a
revision gives through the data plane is counted, and ``projects.timeSeries.list`` at
``http://monitoring.local/v3/...`` serves ``run.googleapis.com/request_count`` and
``request_latencies`` from those counts (``standin_metrics``), which is what the progressive
rollout reads (``CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING=http://monitoring.local/``).

gcloud reaches it as an HTTP proxy: set ``CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN=http://run.local/``,
``CLOUDSDK_PROXY_TYPE=http``, ``CLOUDSDK_PROXY_ADDRESS=127.0.0.1``,
``CLOUDSDK_PROXY_PORT=<--port>`` (see ``env`` below). Service URLs look like
``http://<service>-<hash>.<region>.run.local``; reach them through the same proxy
(``curl -x http://127.0.0.1:<port> <url>`` or ``http_proxy=...``).

Standard library only; needs the ``docker`` CLI (``DOCKER_HOST`` is honoured).

The parts: ``standin_model`` (services, revisions, their rules), ``standin_revisions`` (the
Docker side), ``standin_control`` (the control plane's state and views), ``standin_http`` (the
Admin API routes and the data-plane proxy), ``standin_metrics`` (Cloud Monitoring); their public names are importable from here.
"""

from __future__ import annotations

import argparse
import http.server
import os
import sys

from purchase_rig.standin_control import CloudRunStandIn
from purchase_rig.standin_http import StandInHandler, make_handler
from purchase_rig.standin_model import (
    API_HOST,
    CUSTOM_AUDIENCES,
    DATA_HOST_SUFFIX,
    HOP_HEADERS,
    IAM,
    INSTANCES,
    KNATIVE,
    REVISION_MIN_SCALE,
    SERVICE_MIN_SCALE,
    ApiError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    Revision,
    Service,
    free_port,
    log,
)
from purchase_rig.standin_revisions import RevisionRunner

__all__ = [
    "API_HOST",
    "CUSTOM_AUDIENCES",
    "DATA_HOST_SUFFIX",
    "HOP_HEADERS",
    "IAM",
    "INSTANCES",
    "KNATIVE",
    "REVISION_MIN_SCALE",
    "SERVICE_MIN_SCALE",
    "ApiError",
    "BadRequestError",
    "CloudRunStandIn",
    "ConflictError",
    "NotFoundError",
    "Revision",
    "RevisionRunner",
    "Service",
    "StandInHandler",
    "free_port",
    "gcloud_env",
    "main",
    "make_handler",
]


def gcloud_env(port: int, config_dir: str, project: str = "local-project") -> dict[str, str]:
    """The environment that aims the real gcloud CLI at this stand-in."""
    return {
        "CLOUDSDK_CONFIG": config_dir,
        "CLOUDSDK_CORE_PROJECT": project,
        "CLOUDSDK_AUTH_ACCESS_TOKEN": "local-standin-token",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_SHOULD_PROMPT_TO_ENABLE_API": "false",
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_RUN": "http://run.local/",
        # gcloud's property for Cloud Monitoring's endpoint; the rollout's metrics honour it.
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING": "http://monitoring.local/",
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
    log("cloud run stand-in listening", port=port)
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
