"""Where the API's start-up goes, in a fresh interpreter: imports of ``app.main``, then the
model's load. Run from the API's directory:
``python -m purchase_bench.startup_probe MODEL_DIR`` (the baked model) prints
``{"imports_s", "model_load_s"}``; ``python -m purchase_bench.startup_probe --fetch`` (fetch
mode: MODEL_URI and MLFLOW_TRACKING_URI from the environment) prints ``{"imports_s",
"fetch_s", "model_load_s", "imported"}``, ``imported`` naming which of MLflow, scikit-learn,
skops and pandas the start imported."""

import json
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("mlflow", "sklearn", "skops", "pandas")


def main() -> None:
    t0 = time.perf_counter()
    import app.main  # noqa: F401, PLC0415

    t1 = time.perf_counter()
    from app.model.loading import load_model_dir  # noqa: PLC0415

    if sys.argv[1:] != ["--fetch"]:
        load_model_dir(Path(sys.argv[1]))
        t2 = time.perf_counter()
        print(json.dumps({"imports_s": t1 - t0, "model_load_s": t2 - t1}))
        return
    from app.core.config import Settings  # noqa: PLC0415
    from app.model.source import fetch_model  # noqa: PLC0415

    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        fetch_model(str(settings.model_uri), Path(tmp), tracking_uri=settings.mlflow_tracking_uri)
        t2 = time.perf_counter()
        load_model_dir(Path(tmp))
        t3 = time.perf_counter()
    imported = [name for name in HEAVY if name in sys.modules]
    print(
        json.dumps(
            {
                "imports_s": t1 - t0,
                "fetch_s": t2 - t1,
                "model_load_s": t3 - t2,
                "imported": imported,
            }
        )
    )


if __name__ == "__main__":
    main()
