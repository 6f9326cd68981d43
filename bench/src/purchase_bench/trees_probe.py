"""Compiled forms of the trees against LightGBM's own predict, side by side (issue 16, point 9).

``python -m purchase_bench.trees_probe MODEL_PICKLE PRIMARY_PARQUET [--rows N]``, from the API's
directory in a venv that has whichever of lleaves, treelite + tl2cgen, onnxruntime (with
onnxmltools) are installed: the pipeline's encoder turns primary rows into the float matrix the
API hands the booster, then each engine evaluates it on one thread and on every core, best of
``--repeats``, in this one process. Prints one JSON line: build seconds, milliseconds, the ratio
to ``NativeBooster`` on the same threads, and the largest difference to LightGBM's answers.
Engines that do not install are reported as such, not measured.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Predict = Callable[[np.ndarray, int], np.ndarray]
THREADS = {"one thread": 1, "all threads": os.cpu_count() or 1}


def _matrix(estimator: Any, parquet: Path, rows: int) -> np.ndarray:
    import pandas as pd  # noqa: PLC0415

    frame = pd.read_parquet(parquet)
    frame = frame.iloc[np.arange(rows) % len(frame)].reset_index(drop=True)
    columns = estimator.steps[0][1]
    return np.ascontiguousarray(columns.transform(frame).to_numpy(dtype=np.float64))


def _native(text: str) -> Predict:
    from app.model.native import NativeBooster  # noqa: PLC0415

    booster = NativeBooster(text)
    return lambda x, n: booster.predict(x, num_threads=n)


def _lightgbm(text: str) -> Predict:
    import lightgbm  # noqa: PLC0415

    booster = lightgbm.Booster(model_str=text)
    return lambda x, n: booster.predict(x, num_threads=n)


def _lleaves(text: str, work: Path) -> Predict:
    import lleaves  # noqa: PLC0415

    (work / "model.txt").write_text(text)
    model = lleaves.Model(model_file=str(work / "model.txt"))
    model.compile(cache=str(work / "lleaves.o"))
    return lambda x, n: model.predict(x, n_jobs=n)


def _tl2cgen_runtime(text: str, work: Path) -> Predict:
    """tl2cgen's own Predictor (its runtime library) on the generated .so."""
    import tl2cgen  # noqa: PLC0415
    import treelite  # noqa: PLC0415

    (work / "model.txt").write_text(text)
    model = treelite.frontend.load_lightgbm_model(str(work / "model.txt"))
    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(work / "tl2cgen.so"))
    predictors = {n: tl2cgen.Predictor(str(work / "tl2cgen.so"), nthread=n) for n in (1, 2)}
    return lambda x, n: predictors[n].predict(tl2cgen.DMatrix(x, dtype="float64")).reshape(-1)


def _tl2cgen_ctypes(text: str, work: Path) -> Predict:
    """What the API serves: the same generated C, called through ctypes (app.model.trees)."""
    from app.model.trees import build_library  # noqa: PLC0415

    return build_library(text, work / "trees.so").predict


def _onnxruntime(estimator: Any) -> Predict:
    import onnxmltools  # noqa: PLC0415
    import onnxruntime  # noqa: PLC0415
    from onnxmltools.convert.common.data_types import FloatTensorType  # noqa: PLC0415

    classifier = estimator.steps[-1][1]
    width = classifier.booster_.num_feature()
    onnx = onnxmltools.convert_lightgbm(
        classifier, initial_types=[("input", FloatTensorType([None, width]))], zipmap=False
    )
    sessions = {}
    for n in (1, 2):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = n
        sessions[n] = onnxruntime.InferenceSession(onnx.SerializeToString(), options)

    def predict(x: np.ndarray, n: int) -> np.ndarray:
        return sessions[n].run(None, {"input": x.astype(np.float32)})[1][:, 1]

    return predict


def _best(predict: Predict, x: np.ndarray, threads: int, repeats: int) -> tuple[np.ndarray, float]:
    out = predict(x, threads)  # warm-up: thread pools, page faults
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        out = predict(x, threads)
        times.append(time.perf_counter() - started)
    return np.asarray(out, dtype=np.float64), min(times) * 1000


def _engines(estimator: Any, text: str, work: Path) -> dict[str, Callable[[], Predict]]:
    return {
        "NativeBooster (today's API)": lambda: _native(text),
        "lightgbm.Booster.predict": lambda: _lightgbm(text),
        "lleaves 1.3": lambda: _lleaves(text, work),
        "tl2cgen Predictor": lambda: _tl2cgen_runtime(text, work),
        "tl2cgen C via ctypes": lambda: _tl2cgen_ctypes(text, work),
        "onnxruntime (float32)": lambda: _onnxruntime(estimator),
    }


def measure(estimator: Any, x: np.ndarray, repeats: int, only: str = "") -> dict[str, Any]:
    booster = estimator.steps[-1][1].booster_
    text = booster.model_to_string(num_iteration=booster.best_iteration or -1)
    results: dict[str, Any] = {}
    reference = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in _engines(estimator, text, Path(tmp)).items():
            if (
                only
                and not name.startswith("Native")
                and not any(word in name for word in only.split(","))
            ):
                continue
            started = time.perf_counter()
            try:
                predict = build()
            except Exception as err:  # an engine that does not install is reported, not run
                results[name] = {"error": f"{type(err).__name__}: {err}"[:300]}
                continue
            entry: dict[str, Any] = {"build_s": round(time.perf_counter() - started, 2)}
            for label, threads in THREADS.items():
                out, ms = _best(predict, x, threads, repeats)
                reference = out if reference is None else reference
                entry[f"{label} ms"] = round(ms, 2)
                entry["max_abs_diff"] = float(np.max(np.abs(out - reference)))
            results[name] = entry
    anchor = results["NativeBooster (today's API)"]
    for entry in results.values():
        for label in THREADS:
            if f"{label} ms" in entry:
                entry[f"{label} speed-up"] = round(anchor[f"{label} ms"] / entry[f"{label} ms"], 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_pickle", type=Path, help="a fitted training Pipeline (pickle)")
    parser.add_argument("primary", type=Path, help="primary table (Parquet) to draw rows from")
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", default="", help="engines whose name has one of these words")
    args = parser.parse_args()
    with args.model_pickle.open("rb") as handle:
        estimator = pickle.load(handle)
    x = _matrix(estimator, args.primary, args.rows)
    booster = estimator.steps[-1][1].booster_
    shape = {"rows": args.rows, "trees": booster.num_trees(), "features": x.shape[1]}
    print(json.dumps({**shape, "engines": measure(estimator, x, args.repeats, args.only)}))


if __name__ == "__main__":
    main()
