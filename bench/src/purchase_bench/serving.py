"""Section ``serving``: our API, its anchors (a minimal FastAPI route validating the same body,
and ``mlflow models serve``), under the same load."""

from __future__ import annotations

from purchase_bench.common import say
from purchase_bench.context import Bench
from purchase_bench.load import load
from purchase_bench.servers import running


def serving(bench: Bench) -> None:
    rows = []
    for server in (bench.baked(), bench.minimal_route(), bench.mlflow_serve()):
        with running(server):
            for connections in bench.connections:
                say(f"load: {server.name}, {connections} connections, {bench.duration:.0f} s")
                stats = load(server.url, server.body, connections, bench.duration)
                rows.append({"server": server.name, "connections": connections, **stats})
    bench.results["serving"] = rows
