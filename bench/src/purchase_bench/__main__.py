"""``python -m purchase_bench``: the same command line as ``python -m purchase_bench.benchmark``."""

import sys

from purchase_bench.cli import main

sys.exit(main())
