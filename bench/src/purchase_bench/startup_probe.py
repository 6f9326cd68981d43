"""Where the API's start-up goes, in a fresh interpreter: imports of ``app.main``, then the
baked model's load. Run from the API's directory:
``python -m purchase_bench.startup_probe MODEL_DIR`` prints ``{"imports_s", "model_load_s"}``."""

import json
import sys
import time
from pathlib import Path


def main() -> None:
    t0 = time.perf_counter()
    import app.main  # noqa: F401, PLC0415

    t1 = time.perf_counter()
    from app.model.loading import load_model_dir  # noqa: PLC0415

    load_model_dir(Path(sys.argv[1]))
    t2 = time.perf_counter()
    print(json.dumps({"imports_s": t1 - t0, "model_load_s": t2 - t1}))


if __name__ == "__main__":
    main()
