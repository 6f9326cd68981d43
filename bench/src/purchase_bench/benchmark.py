#!/usr/bin/env python3
"""The benchmark's entry module, what ``nox -s bench`` runs: ``python -m purchase_bench.benchmark``.

The command line is :mod:`purchase_bench.cli`; the servers under test, the load generator,
one module per section and the report are modules of their own. The names other code uses
are re-exported here.
"""

from __future__ import annotations

import sys

from purchase_bench.cli import main
from purchase_bench.common import SECTIONS
from purchase_bench.context import Bench
from purchase_bench.load import load
from purchase_bench.report import HAND_MEASURED, kept_by_hand, report
from purchase_bench.servers import Server, pinned, post, running

__all__ = [
    "HAND_MEASURED",
    "SECTIONS",
    "Bench",
    "Server",
    "kept_by_hand",
    "load",
    "main",
    "pinned",
    "post",
    "report",
    "running",
]

if __name__ == "__main__":
    sys.exit(main())
