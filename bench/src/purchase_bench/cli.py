"""Benchmarks of the serving path, the image and the feature step: what ``nox -s bench`` runs.

One run measures, side by side on this machine, and writes ``docs/benchmarks.md``:

``serving``  the same registered model served by our API (one uvicorn worker) and by
             ``mlflow models serve --env-manager local`` (one worker), each pinned to CPU 0,
             under load from a bounded asyncio generator pinned to CPU 1 (keep-alive
             connections, single-session requests, 16 and 64 connections): req/s, p50, p99;
``cold``     process start -> first 200 on /predict: our API with the baked model, our API
             fetching from an ``mlflow server``, MLflow's scoring server; where our start-up
             time goes (imports, model load);
``batch``    10,000 sessions in one request: server time (the API's request log) and round trip;
``hostile``  the error-amplification bound: ``[{}]`` x 10,000 and 10,000 sessions x 60 unknown
             keys against a valid 10,000-session batch, /health polled meanwhile;
``image``    image size and container cold start, when a Docker engine can be started
             (``scripts/local_cloud.py``: the same engine and base image as ``nox -s pipeline``);
``feature``  raw events -> primary table (``kedro run --pipeline data_processing``) on generated
             data of 1 M and 10 M events: wall time and peak memory of the process;
``pipeline`` the local pipeline (``scripts/local_pipeline.py``) in a scratch copy of the
             repository: a cold run, a one-line code change in the API, a warm run; seconds
             per stage.

Traffic stays on loopback; every run is bounded (duration, request counts, timeouts).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from purchase_bench.batch import batch
from purchase_bench.cold import cold
from purchase_bench.common import ROOT, SECTIONS, say
from purchase_bench.context import Bench
from purchase_bench.feature import feature
from purchase_bench.hostile import hostile
from purchase_bench.image import image
from purchase_bench.pipeline import pipeline
from purchase_bench.report import kept_by_hand, report
from purchase_bench.serving import serving

RUNNERS: dict[str, Callable[[Bench], None]] = {
    "serving": serving,
    "cold": cold,
    "batch": batch,
    "hostile": hostile,
    "image": image,
    "feature": feature,
    "pipeline": pipeline,
}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Run inside `nox -s bench` (it installs the training project and the API).",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)})",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per point")
    parser.add_argument(
        "--connections", default="16,64", help="connection counts (default: %(default)s)"
    )
    parser.add_argument(
        "--events",
        default="1000000,10000000",
        help="feature-step sizes in events (default: %(default)s)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "benchmarks.md", help="report file"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return parser


def run_sections(bench: Bench, sections: list[str]) -> dict[str, str]:
    """Run the chosen sections in their order; why each that failed did."""
    failures: dict[str, str] = {}
    for section in SECTIONS:
        if section not in sections:
            continue
        say(f"== {section}")
        try:
            RUNNERS[section](bench)
        except (RuntimeError, subprocess.CalledProcessError, OSError, ValueError) as err:
            # One section failing must not lose the others' figures.
            failures[section] = f"{type(err).__name__}: {err}"
            say(f"{section} failed: {failures[section]} (logs in {bench.work})")
    return failures


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cli = parser()
    args = cli.parse_args(argv)
    sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        cli.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    work = Path(tempfile.mkdtemp(prefix="purchase-predict-bench-"))
    bench = Bench(
        work=work,
        duration=args.duration,
        connections=[int(c) for c in args.connections.split(",")],
        events=[int(e) for e in args.events.split(",")],
    )
    command = "nox -s bench" + (f" -- {' '.join(argv)}" if argv else "")
    say(f"scratch directory {work}")
    try:
        if {"serving", "cold", "batch", "hostile", "image"} & set(sections):
            bench.model()
    except (RuntimeError, subprocess.CalledProcessError, OSError) as err:
        print(f"benchmark: no model to serve: {err}; logs in {work}", file=sys.stderr)
        return 1
    failures = run_sections(bench, sections)
    text = report(bench, command)
    if failures:
        text += "\n## Not measured in this run\n\n" + "".join(
            f"- {section}: {reason}\n" for section, reason in failures.items()
        )
    args.out.write_text(text + "\n" + kept_by_hand(args.out))
    (work / "results.json").write_text(json.dumps(bench.results, indent=2))
    print(text)
    say(f"wrote {args.out}")
    if not args.keep and not failures:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0
