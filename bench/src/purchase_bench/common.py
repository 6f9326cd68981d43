"""What every part of the benchmark shares: the checkout's paths, the CPUs, progress lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from purchase_bench import REPO_ROOT

ROOT = REPO_ROOT
TRAINING_DIR = ROOT / "purchase_predict"
API_DIR = ROOT / "purchase_predict_api"
SECTIONS = ("serving", "cold", "batch", "hostile", "image", "feature", "pipeline")
SERVER_CPU = 0
LOAD_CPU = 1
EVENTS_PER_SESSION = 6.6  # the generator's average (purchase-predict-generate --help)


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def json_lines(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects among a log file's lines (the API's request log)."""
    for line in path.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict):
            yield entry


def last_json_line(stdout: str) -> Any:
    """The JSON a probe printed last."""
    return json.loads(stdout.strip().splitlines()[-1])
