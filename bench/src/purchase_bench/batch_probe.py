"""Best of 5, in one process: where a batch request's server time goes (the route's own
steps: pydantic-core parses, validates and writes the answer). Run from the API's directory:
``python -m purchase_bench.batch_probe MODEL_DIR BODY_FILE`` prints milliseconds per step."""

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def best(f: Callable[[], Any]) -> tuple[Any, float]:
    times = []
    for _ in range(5):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return out, min(times) * 1000


def main() -> None:
    from pydantic import TypeAdapter  # noqa: PLC0415
    from pydantic_core import from_json, to_json  # noqa: PLC0415

    from app.model.loading import load_model_dir  # noqa: PLC0415
    from app.models import PredictRequest  # noqa: PLC0415

    model = load_model_dir(Path(sys.argv[1]))
    body = Path(sys.argv[2]).read_bytes()
    adapter = TypeAdapter(PredictRequest)
    raw, parse = best(lambda: from_json(body))
    sessions, validate = best(lambda: adapter.validate_python(raw))
    p, predict = best(lambda: model.purchase_probabilities(sessions))
    _, answer = best(
        lambda: to_json(
            {"predictions": [{"probability": x, "purchased": x >= 0.5} for x in p.tolist()]}
        )
    )
    print(
        json.dumps(
            {
                "JSON parse": parse,
                "validation (pydantic)": validate,
                "prediction": predict,
                "answer JSON": answer,
            }
        )
    )


if __name__ == "__main__":
    main()
