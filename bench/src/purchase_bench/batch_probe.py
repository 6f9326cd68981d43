"""Best of N, in one process: where a batch request's server time goes in our API, and the
compiled trees against LightGBM's own predict on the same float matrix (issue 16, point 9).

Run from the API's directory: ``python -m purchase_bench.batch_probe MODEL_DIR BODY_FILE``
prints one JSON line of milliseconds.
"""

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPEATS = 7


def best(f: Callable[[], Any]) -> tuple[Any, float]:
    out = f()  # warm-up: thread pools, page faults
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - started)
    return out, min(times) * 1000


def main() -> None:
    import lightgbm  # noqa: PLC0415
    from pydantic_core import to_json  # noqa: PLC0415

    from app.api.body import quick_chunks  # noqa: PLC0415
    from app.model.files import COMPILED_FILE  # noqa: PLC0415
    from app.model.loading import load_model_dir  # noqa: PLC0415

    model = load_model_dir(Path(sys.argv[1]))
    compiled = model.compiled
    if compiled is None or compiled.trees is None:
        raise SystemExit("the model directory has no compiled trees: run app.prepare")
    body = Path(sys.argv[2]).read_bytes()
    chunks, reading = best(lambda: list(quick_chunks(body)))
    sessions = [session for chunk in chunks for session in chunk]
    matrix, building = best(lambda: compiled._matrix(sessions))
    _, overlapped = best(lambda: compiled.predict_chunks(iter(chunks)))
    p, _ = best(lambda: compiled.predict(sessions))
    _, answer = best(
        lambda: to_json(
            {"predictions": [{"probability": x, "purchased": x >= 0.5} for x in p.tolist()]}
        )
    )
    # The booster the compiled form was written from, read by LightGBM's own Python package.
    document = json.loads((Path(sys.argv[1]) / COMPILED_FILE).read_text(encoding="utf-8"))
    lightgbm_booster = lightgbm.Booster(model_str=document["booster"])
    iterations = compiled.num_iteration or None
    cores = len(os.sched_getaffinity(0))
    timings = {
        "reading (parse and validate)": reading,
        "float matrix": building,
        "prediction of the chunks, overlapped": overlapped,
        "answer JSON": answer,
    }
    for threads, label in ((1, "one thread"), (cores, "all threads")):
        timings[f"lightgbm.Booster.predict, {label}"] = best(
            lambda n=threads: lightgbm_booster.predict(
                matrix, num_iteration=iterations, num_threads=n
            )
        )[1]
        timings[f"compiled trees, {label}"] = best(
            lambda n=threads: compiled.trees.predict(matrix, num_threads=n)
        )[1]
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
