"""The trees compiled to machine code at image build: a shared library called through ctypes.

``python -m app.prepare`` turns the booster's text model into C with treelite and tl2cgen (one
``if``/``else`` nest per tree, the thresholds as LightGBM's doubles) and compiles it with the C
compiler into :data:`TREES_FILE`, beside ``serving_compiled.json``. Evaluating 10,000 rows that way
is several times faster than LightGBM's own predict (docs/benchmarks.md, "Compiled trees"). At
run time the library needs neither treelite nor tl2cgen nor a compiler: only ``libgomp`` (already
there for LightGBM) and :mod:`ctypes`.

Two changes to tl2cgen's C: a feature is missing when it is NaN (tl2cgen flags it in the low
32 bits of the double instead, which a present value can also hold), so a row of the API's float64
matrix is passed as it is, with no copy; and a batch entry point, ``trees_predict``, evaluates the
rows in parallel with OpenMP.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TREES_FILE = "serving_trees.so"
# At most this long to compile the generated C (about 10 s for 400 trees of 9 leaves, -O2).
COMPILE_TIMEOUT_S = 600
_COMPILE_FLAGS = ("-O2", "-shared", "-fPIC", "-fopenmp", "-pthread", "-Wl,-Bsymbolic")
_MISSING_TEST = re.compile(r"data\[(\d+)\]\.missing != -1")
_UNIT_CALL = re.compile(r"^\s*predict_unit\d+\(data, result\);\n", re.MULTILINE)
_PREDICT = re.compile(
    r"^void predict\(union Entry\* data, int pred_margin, double\* result\) \{\n.*?^\}\n",
    re.MULTILINE | re.DOTALL,
)
# Trees per translation unit ("unit"), rows per block: a unit's code stays in the instruction
# cache while it runs over a block of rows, whose data stays in the data cache.
TREES_PER_UNIT = 25
ROWS_PER_BLOCK = 256
_BATCH_ENTRY = """
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>

typedef void (*trees_unit)(union Entry*, double*);
static const trees_unit trees_units[] = {%(units)s};

int32_t trees_num_feature(void) { return get_num_feature(); }

/* Probability of each row of a row-major float64 matrix (NaN: missing), in blocks of rows:
   each row adds the trees in their order, as LightGBM does, then the base score and sigmoid. */
void trees_predict(const double* x, int64_t rows, int32_t cols, int32_t threads, double* out) {
  const int64_t block = %(block)d;
  const int64_t blocks = (rows + block - 1) / block;
  int n = threads > 0 ? threads : omp_get_max_threads();
  #pragma omp parallel for num_threads(n) schedule(static) if(n > 1 && blocks > 1)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t first = b * block, last = first + block < rows ? first + block : rows;
    for (int64_t i = first; i < last; ++i) out[i] = 0.0;
    for (size_t u = 0; u < sizeof(trees_units) / sizeof(trees_units[0]); ++u) {
      for (int64_t i = first; i < last; ++i) trees_units[u]((union Entry*)(x + i * cols), out + i);
    }
    for (int64_t i = first; i < last; ++i) trees_finish((union Entry*)(x + i * cols), 0, out + i);
  }
}

/* trees_predict on a thread of its own, one thread of evaluation: started by trees_start,
   waited for by trees_join (which frees it). The caller keeps x and out alive until then.
   No Python runs on that thread, so it never waits for the GIL. */
typedef struct {
  const double* x; int64_t rows; int32_t cols; double* out; pthread_t thread;
} trees_job;

static void* trees_run(void* arg) {
  trees_job* job = (trees_job*)arg;
  trees_predict(job->x, job->rows, job->cols, 1, job->out);
  return NULL;
}

void* trees_start(const double* x, int64_t rows, int32_t cols, double* out) {
  trees_job* job = (trees_job*)malloc(sizeof(trees_job));
  if (job == NULL) return NULL;
  job->x = x; job->rows = rows; job->cols = cols; job->out = out;
  if (pthread_create(&job->thread, NULL, trees_run, job) != 0) { free(job); return NULL; }
  return job;
}

void trees_join(void* handle) {
  trees_job* job = (trees_job*)handle;
  pthread_join(job->thread, NULL);
  free(job);
}
"""


class TreesBuildError(RuntimeError):
    """The trees cannot be compiled here (no treelite, tl2cgen or C compiler, or it failed)."""


class CompiledTrees:
    """The compiled library, loaded: ``predict`` as :class:`app.model.native.NativeBooster`'s."""

    def __init__(self, path: Path) -> None:
        self._library = ctypes.CDLL(str(path.resolve()))
        self._library.trees_num_feature.restype = ctypes.c_int32
        self._library.trees_predict.restype = None
        self._library.trees_predict.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int32,
            ctypes.c_int32,
            ctypes.c_void_p,
        ]
        self._features = int(self._library.trees_num_feature())
        # Libraries built before trees_start have only the synchronous entry point.
        self.asynchronous = hasattr(self._library, "trees_start")
        if self.asynchronous:
            self._library.trees_start.restype = ctypes.c_void_p
            self._library.trees_start.argtypes = [
                ctypes.c_void_p,
                ctypes.c_int64,
                ctypes.c_int32,
                ctypes.c_void_p,
            ]
            self._library.trees_join.restype = None
            self._library.trees_join.argtypes = [ctypes.c_void_p]

    def num_feature(self) -> int:
        return self._features

    def predict(self, matrix: np.ndarray, num_threads: int = 0) -> np.ndarray:
        """Probabilities (binary objective) for each row of a float64 matrix."""
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        rows, columns = data.shape
        if columns != self._features:
            raise ValueError(f"the trees take {self._features} features, got {columns}")
        out = np.empty(rows, dtype=np.float64)
        self._library.trees_predict(data.ctypes.data, rows, columns, num_threads, out.ctypes.data)
        return out

    def predict_chunks(self, matrices: Iterable[np.ndarray]) -> np.ndarray:
        """:meth:`predict` of the matrices, in order, each on a C thread of its own started as
        soon as it is produced: the caller produces the next one meanwhile. Every thread is
        joined (without the GIL: ctypes lets go of it) before this returns or raises."""
        started: list[tuple[int, np.ndarray, np.ndarray]] = []
        try:
            for matrix in matrices:
                data = np.ascontiguousarray(matrix, dtype=np.float64)
                rows, columns = data.shape
                if columns != self._features:
                    raise ValueError(f"the trees take {self._features} features, got {columns}")
                out = np.empty(rows, dtype=np.float64)
                job = self._library.trees_start(data.ctypes.data, rows, columns, out.ctypes.data)
                if not job:  # no thread to be had: evaluate it here
                    self._library.trees_predict(data.ctypes.data, rows, columns, 1, out.ctypes.data)
                started.append((job or 0, data, out))  # data and out live until joined
        finally:
            for job, _, _ in started:
                if job:
                    self._library.trees_join(job)
        return np.concatenate([out for _, _, out in started])


def find_compiler() -> str | None:
    """The C compiler to build with: ``$CC``, else ``cc`` or ``gcc`` on the PATH."""
    return shutil.which(os.environ.get("CC") or "cc") or shutil.which("gcc")


def generate_source(model_text: str, work: Path) -> str:
    """tl2cgen's C for the LightGBM text model, made to read NaN as missing, plus the batch
    entry point: one translation unit."""
    try:
        import tl2cgen  # noqa: PLC0415
        import treelite  # noqa: PLC0415
    except ImportError as err:
        raise TreesBuildError(f"{err.name} is not installed") from err
    (work / "model.txt").write_text(model_text, encoding="utf-8")
    model = treelite.frontend.load_lightgbm_model(str(work / "model.txt"))
    # At least two units: predict() then only calls them, and is the model of trees_finish.
    units = max(2, -(-model.num_tree // TREES_PER_UNIT))
    params = {"quantize": 0, "parallel_comp": units}
    tl2cgen.generate_c_code(model, dirpath=str(work / "src"), params=params)
    sources = [work / "src" / f"tu{unit}.c" for unit in range(units)]
    parts = [(work / "src" / "header.h").read_text(encoding="utf-8")]
    parts += [path.read_text(encoding="utf-8") for path in [*sources, work / "src" / "main.c"]]
    code, replaced = _MISSING_TEST.subn(r"!isnan(data[\1].fvalue)", "".join(parts[1:]))
    predict = _PREDICT.search(code)
    if (
        "union Entry {" not in parts[0]
        or predict is None
        or ".missing" in code
        or "qvalue" in code
        or not replaced
    ):
        raise TreesBuildError("tl2cgen wrote C of a form this module does not know")
    # predict() less its units: the base score and the sigmoid, applied after the blocks.
    finish, calls = _UNIT_CALL.subn("", predict.group(0))
    if calls != units:
        raise TreesBuildError(f"predict() calls {calls} of the {units} units")
    finish = finish.replace("void predict(", "static void trees_finish(")
    entry = _BATCH_ENTRY % {
        "units": ", ".join(f"predict_unit{unit}" for unit in range(units)),
        "block": ROWS_PER_BLOCK,
    }
    return parts[0] + code.replace('#include "header.h"', "") + finish + entry


def build_library(model_text: str, path: Path, compiler: str | None = None) -> CompiledTrees:
    """Compile the trees of ``model_text`` (``Booster.model_to_string``) into ``path``."""
    compiler = compiler or find_compiler()
    if compiler is None:
        raise TreesBuildError("no C compiler (cc or gcc, or $CC) on the PATH")
    with tempfile.TemporaryDirectory(prefix="purchase-predict-trees-") as tmp:
        work = Path(tmp)
        (work / "trees.c").write_text(generate_source(model_text, work), encoding="utf-8")
        command = [compiler, *_COMPILE_FLAGS, str(work / "trees.c"), "-o", str(work / "t.so")]
        try:
            done = subprocess.run(
                [*command, "-lm"],
                capture_output=True,
                text=True,
                timeout=COMPILE_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            raise TreesBuildError(f"{compiler} failed: {err}") from err
        if done.returncode != 0:
            raise TreesBuildError(f"{compiler} exited {done.returncode}: {done.stderr[-500:]}")
        shutil.move(str(work / "t.so"), path)
    return CompiledTrees(path)
