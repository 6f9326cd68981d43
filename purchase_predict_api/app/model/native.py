"""LightGBM predictions through its C library, without importing the ``lightgbm`` package.

``import lightgbm`` imports scikit-learn and pandas when they are installed (for its
scikit-learn and pandas integrations): about two seconds of a cold start on a small CPU, for
nothing a compiled model needs. Serving one takes three functions of ``lib_lightgbm``: load a
model from its text form, count its features, predict for a dense float64 matrix. They are
the functions ``lightgbm.Booster`` itself calls, so the numbers are the same.
"""

from __future__ import annotations

import ctypes
import importlib.util
import threading
from pathlib import Path

import numpy as np

# c_api.h
_DTYPE_FLOAT64 = 1
_PREDICT_NORMAL = 0
_LIBRARY_NAMES = ("lib_lightgbm.so", "lib_lightgbm.dylib", "lib_lightgbm.dll")

_library: ctypes.CDLL | None = None
_library_lock = threading.Lock()


class NativeLightGBMError(RuntimeError):
    """lib_lightgbm is missing or refused a call; the message is LightGBM's own."""


def _find_library() -> Path:
    """lib_lightgbm inside the installed ``lightgbm`` package (found without importing it)."""
    spec = importlib.util.find_spec("lightgbm")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        for folder in (Path(location) / "lib", Path(location)):
            for name in _LIBRARY_NAMES:
                if (folder / name).is_file():
                    return folder / name
    raise NativeLightGBMError(f"no lib_lightgbm in the lightgbm package ({locations or 'absent'})")


def _lib() -> ctypes.CDLL:
    global _library  # noqa: PLW0603 - one handle per process, loaded on first use
    with _library_lock:
        if _library is None:
            library = ctypes.cdll.LoadLibrary(str(_find_library()))
            library.LGBM_GetLastError.restype = ctypes.c_char_p
            _library = library
        return _library


def _check(status: int) -> None:
    if status != 0:
        raise NativeLightGBMError(_lib().LGBM_GetLastError().decode(errors="replace"))


class NativeBooster:
    """A LightGBM model loaded from its text form (``Booster.model_to_string()``)."""

    def __init__(self, model_text: str, num_iteration: int = 0) -> None:
        lib = _lib()
        self._handle = ctypes.c_void_p()
        iterations = ctypes.c_int()
        _check(
            lib.LGBM_BoosterLoadModelFromString(
                ctypes.c_char_p(model_text.encode()),
                ctypes.byref(iterations),
                ctypes.byref(self._handle),
            )
        )
        features = ctypes.c_int()
        _check(lib.LGBM_BoosterGetNumFeature(self._handle, ctypes.byref(features)))
        self._features = features.value
        # As Booster.predict(num_iteration=None): the best iteration, all trees when <= 0.
        self._num_iteration = num_iteration if num_iteration > 0 else -1

    def num_feature(self) -> int:
        return self._features

    def predict(
        self, matrix: np.ndarray, num_threads: int = 0, num_iteration: int | None = None
    ) -> np.ndarray:
        """Probabilities (binary objective) for each row of a float64 matrix."""
        iterations = self._num_iteration if num_iteration is None else num_iteration
        data = np.ascontiguousarray(matrix, dtype=np.float64)
        rows, columns = data.shape
        if columns != self._features:
            raise NativeLightGBMError(f"the model takes {self._features} features, got {columns}")
        out = np.empty(rows, dtype=np.float64)
        out_len = ctypes.c_int64()
        # Raw addresses, not ndarray.ctypes.data_as: that ties each array into a reference cycle
        # with its pointer, freed only by the (tuned-down) cycle collector. ``data`` and ``out``
        # stay alive as locals for the call.
        _check(
            _lib().LGBM_BoosterPredictForMat(
                self._handle,
                ctypes.c_void_p(data.ctypes.data),
                ctypes.c_int(_DTYPE_FLOAT64),
                ctypes.c_int32(rows),
                ctypes.c_int32(columns),
                ctypes.c_int(1),  # row major
                ctypes.c_int(_PREDICT_NORMAL),
                ctypes.c_int(0),  # start iteration
                ctypes.c_int(iterations if iterations > 0 else -1),
                ctypes.c_char_p(f"num_threads={num_threads}".encode()),
                ctypes.byref(out_len),
                ctypes.cast(out.ctypes.data, ctypes.POINTER(ctypes.c_double)),
            )
        )
        if out_len.value != rows:
            raise NativeLightGBMError(f"{out_len.value} predictions for {rows} rows")
        return out

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle and _library is not None:
            _library.LGBM_BoosterFree(handle)
