"""Loading the model once and predicting a batch of sessions in one call.

The estimator is read in its native format (skops, pickle or cloudpickle, as the ``MLmodel``
file says) without importing MLflow, which keeps the image small and the cold start short.
The model is trusted: it comes from our own registry, and skops' allow-list is the one MLflow
recorded when the model was logged.

Importing scikit-learn alone takes seconds on a small CPU. The image build therefore runs
:func:`prepare_model_dir` once: the estimator, loaded the safe way, is re-written as a pickle
beside it and, when it is the training pipeline, as its compiled form (:class:`CompiledPipeline`:
code tables + LightGBM's text model, checked against ``predict_proba``), with a record of the
source file's hash and the library versions. At start those files are used only when the
record matches exactly: the compiled form first (no scikit-learn, no pandas, LightGBM through
its C library), then the pickle; otherwise the MLflow format is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_type_hints

import numpy as np

from app.core.config import Settings
from app.core.registry import ModelMeta, ModelSourceError, fetch_model, read_mlmodel
from app.models import SESSION_EXAMPLE, TEXT_FIELDS, Session, validate_session

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

_DTYPES = {int: "int64", float: "float64"}
# Model input columns in contract order, with the contract's dtypes (strings stay object).
FEATURE_DTYPES: dict[str, str] = {
    name: "object" if name in TEXT_FIELDS else _DTYPES[hint]
    for name, hint in get_type_hints(Session).items()
}
FEATURE_COLUMNS = list(FEATURE_DTYPES)
# Libraries whose version must match training for the estimator to behave the same.
PINNED_LIBRARIES = ("scikit-learn", "lightgbm", "skops", "numpy", "pandas", "scipy")
# Written by prepare_model_dir at image build: the estimator as a pickle, and its provenance.
PREPARED_FILE = "serving_model.pkl"
PREPARED_RECORD = "serving_model.json"
# Also written then, when the model compiles: what a start needs, without scikit-learn.
COMPILED_FILE = "serving_compiled.json"


class ModelLoadError(ModelSourceError):
    """The model directory holds no usable model; the message is the one-line reason."""


@dataclass(frozen=True)
class LoadedModel:
    """The estimator, the registered version it is, and its compiled form when it has one."""

    estimator: Any  # None when started from the compiled form alone
    meta: ModelMeta
    compiled: CompiledPipeline | None = None

    def purchase_probabilities(self, sessions: Sequence[Session]) -> np.ndarray:
        """Purchase probability of each session, in order, from one vectorised call."""
        if self.compiled is not None:
            return self.compiled.predict(sessions)
        return self.estimator.predict_proba(sessions_frame(sessions))[:, 1]


class CompiledPipeline:
    """``predict_proba`` of the training pipeline without scikit-learn's per-call overhead.

    The training pipeline is ``Pipeline([ColumnTransformer([OrdinalEncoder(categoricals),
    passthrough(numbers)], remainder="drop"), LGBMClassifier])``. Per call, scikit-learn
    validates, builds frames and dispatches through each step: about 4 ms for one session,
    against 0.03 ms for the LightGBM booster itself. Compiled, the encoder becomes one dict
    lookup per categorical value and the sessions go straight into a float matrix for the
    booster. :meth:`compile` accepts exactly that structure and nothing else, and the result is
    checked against ``predict_proba`` at load (:func:`_compile_checked`), so any other model
    simply keeps the scikit-learn path.
    """

    def __init__(
        self,
        categorical: list[tuple[str, dict[Any, float]]],
        numeric: list[str],
        booster: Any,
        num_iteration: int = 0,
    ) -> None:
        self.categorical = categorical
        self.numeric = numeric
        self.booster = booster  # lightgbm.Booster or app.core.native.NativeBooster
        self.num_iteration = num_iteration
        self.width = len(categorical) + len(numeric)

    def save(self, path: Path) -> None:
        """The compiled form as JSON: code tables, numeric columns, the booster's text model."""
        document = {
            "format": 1,
            "categorical": [[name, codes] for name, codes in self.categorical],
            "numeric": self.numeric,
            "num_iteration": self.num_iteration,
            "booster": self.booster.model_to_string(),
        }
        path.write_text(json.dumps(document), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> CompiledPipeline:
        """Read :meth:`save`'s file; the booster runs on lib_lightgbm directly (no sklearn)."""
        from app.core.native import NativeBooster  # noqa: PLC0415

        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != 1:
            raise ValueError(f"unknown format {document.get('format')!r}")
        booster = NativeBooster(document["booster"], document["num_iteration"])
        categorical = [(str(name), dict(codes)) for name, codes in document["categorical"]]
        compiled = cls(categorical, list(document["numeric"]), booster, document["num_iteration"])
        if compiled.width != booster.num_feature():
            raise ValueError(f"{compiled.width} columns for {booster.num_feature()} features")
        return compiled

    @classmethod
    def compile(cls, estimator: Any) -> CompiledPipeline | None:
        """The compiled form of ``estimator``, or None when it is not the training pipeline."""
        steps = getattr(estimator, "steps", None)
        if not isinstance(steps, list) or len(steps) != 2:
            return None
        columns, classifier = steps[0][1], steps[1][1]
        booster = getattr(classifier, "booster_", None)
        if type(classifier).__name__ != "LGBMClassifier" or booster is None:
            return None
        plan = _column_plan(columns)
        if plan is None:
            return None
        categorical, numeric = plan
        names = [n for n, _ in categorical] + numeric
        if len(names) != booster.num_feature() or any(n not in FEATURE_DTYPES for n in names):
            return None
        return cls(categorical, numeric, booster, max(0, int(booster.best_iteration or 0)))

    def predict(self, sessions: Sequence[Session]) -> np.ndarray:
        """Purchase probabilities: one float matrix, one booster call."""
        matrix = np.empty((len(sessions), self.width), dtype=np.float64)
        nan = np.nan
        column = 0
        for name, codes in self.categorical:
            # Absent, null, "" and values training never saw: all NaN (unknown) to the model.
            matrix[:, column] = [codes.get(s.get(name), nan) for s in sessions]
            column += 1
        for name in self.numeric:
            matrix[:, column] = [s[name] for s in sessions]
            column += 1
        # Small requests: one thread (no OpenMP start-up); big batches: every core.
        threads = 1 if len(sessions) < 1000 else 0
        if self.num_iteration > 0:
            return self.booster.predict(
                matrix, num_iteration=self.num_iteration, num_threads=threads
            )
        return self.booster.predict(matrix, num_threads=threads)


def _column_plan(columns: Any) -> tuple[list[tuple[str, dict[Any, float]]], list[str]] | None:
    """Categorical code tables and numeric columns of the ColumnTransformer, in output order.

    None unless it is ordinal encoders (unknown and missing -> NaN) followed by pass-throughs.
    """
    if type(columns).__name__ != "ColumnTransformer":
        return None
    categorical: list[tuple[str, dict[Any, float]]] = []
    numeric: list[str] = []
    for _name, transformer, names in getattr(columns, "transformers_", []):
        kind = type(transformer).__name__
        if isinstance(transformer, str) and transformer == "drop":
            continue
        if (isinstance(transformer, str) and transformer == "passthrough") or (
            kind == "FunctionTransformer" and getattr(transformer, "func", 0) is None
        ):
            numeric.extend(str(n) for n in names)
        elif kind == "OrdinalEncoder" and not numeric and _nan_for_unknown(transformer):
            for name, values in zip(names, transformer.categories_, strict=True):
                # "" is a missing value to the API (as in the data contract), never a code.
                codes = {
                    value: float(code)
                    for code, value in enumerate(values.tolist())
                    if not (isinstance(value, float) and np.isnan(value)) and value != ""
                }
                categorical.append((str(name), codes))
        else:
            return None
    return categorical, numeric


def _nan_for_unknown(encoder: Any) -> bool:
    unknown = getattr(encoder, "unknown_value", None)
    missing = getattr(encoder, "encoded_missing_value", None)
    return (
        getattr(encoder, "handle_unknown", "") == "use_encoded_value"
        and isinstance(unknown, float)
        and np.isnan(unknown)
        and isinstance(missing, float)
        and np.isnan(missing)
    )


def sessions_frame(sessions: Sequence[Session]) -> pd.DataFrame:
    """One row per session, feature columns in contract order and types (missing text = NaN)."""
    import pandas as pd  # noqa: PLC0415 - only the scikit-learn path needs it (cold start)

    columns: dict[str, pd.Series] = {}
    for name, dtype in FEATURE_DTYPES.items():
        if dtype == "object":
            # Absent, null or "": NaN, as in training; object dtype, since pandas 3 would infer
            # its own string dtype.
            values = [session.get(name) or np.nan for session in sessions]
            columns[name] = pd.Series(values, dtype=object)
        else:
            columns[name] = pd.Series([session[name] for session in sessions], dtype=dtype)
    return pd.DataFrame(columns, columns=FEATURE_COLUMNS)


def load_model(settings: Settings) -> LoadedModel:
    """The model named by the settings: the baked directory, or a fetch from MLflow."""
    if settings.model_path is not None:
        return load_model_dir(settings.model_path)
    # Settings guarantee MODEL_URI is set when MODEL_PATH is not.
    with tempfile.TemporaryDirectory(prefix="purchase-predict-model-") as tmp:
        fetch_model(str(settings.model_uri), Path(tmp), tracking_uri=settings.mlflow_tracking_uri)
        # Fully read into memory: the temporary copy can go.
        return load_model_dir(Path(tmp))


def load_model_dir(model_dir: Path, *, use_prepared: bool = True) -> LoadedModel:
    """Read, check and warm up the model of a baked directory.

    Prepared at image build (``python -m app.prepare``), the directory holds the compiled form,
    checked there against ``predict_proba``: a start then needs neither scikit-learn nor
    pandas. Otherwise the estimator is read (the prepared pickle, else its MLflow format),
    checked, and compiled in memory when it can be.
    """
    meta = ModelMeta.read(model_dir)
    mlmodel = read_mlmodel(model_dir)
    flavor = (mlmodel.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict) or "pickled_model" not in flavor:
        raise ModelLoadError(f"{model_dir}/MLmodel has no sklearn flavor with a pickled_model")
    source = model_dir / flavor["pickled_model"]
    if use_prepared and _compiled_record_matches(model_dir, source):
        compiled = _load_compiled(model_dir)
    else:
        compiled = None
    if compiled is not None:
        model = LoadedModel(estimator=None, meta=meta, compiled=compiled)
        _warm_up(model, model_dir)
        return model
    prepared = use_prepared and _prepared_record_matches(model_dir, source)
    estimator = _load_prepared(model_dir) if prepared else None
    if estimator is None:
        estimator = _deserialize(
            source,
            flavor.get("serialization_format", "pickle"),
            flavor.get("skops_trusted_types"),
        )
    _check_estimator(estimator, model_dir)
    _warn_on_library_drift(model_dir)
    model = LoadedModel(estimator=estimator, meta=meta)
    _warm_up(model, model_dir)
    compiled = _compile_checked(estimator)
    return LoadedModel(estimator=estimator, meta=meta, compiled=compiled) if compiled else model


def prepare_model_dir(model_dir: Path) -> LoadedModel:
    """Load the model from its MLflow format, check it, and write the fast-start files."""
    model = load_model_dir(model_dir, use_prepared=False)
    source = model_dir / read_mlmodel(model_dir)["flavors"]["sklearn"]["pickled_model"]
    with (model_dir / PREPARED_FILE).open("wb") as handle:
        pickle.dump(model.estimator, handle, protocol=pickle.HIGHEST_PROTOCOL)
    compiled_file = model_dir / COMPILED_FILE
    compiled_file.unlink(missing_ok=True)
    if model.compiled is not None:
        model.compiled.save(compiled_file)
        if not _same_answers(CompiledPipeline.load(compiled_file), model.estimator):
            logger.warning("compiled form read back disagrees with predict_proba: not kept")
            compiled_file.unlink()
    record = {
        "source": source.name,
        "source_sha256": _sha256(source),
        **_runtime(),
        "compiled": compiled_file.name if compiled_file.exists() else None,
        # What the compiled form needs: LightGBM's library reading its own text format.
        "compiled_lightgbm": _version("lightgbm"),
    }
    (model_dir / PREPARED_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return model


def _prepared_record_matches(model_dir: Path, source: Path) -> bool:
    """The prepared files were made from ``source`` by these exact libraries."""
    record_path = model_dir / PREPARED_RECORD
    if not record_path.exists():
        return False
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        current = {"source": source.name, "source_sha256": _sha256(source), **_runtime()}
    except (OSError, ValueError) as err:
        logger.warning("ignoring %s: %s", record_path, err)
        return False
    changed = sorted(k for k in current if record.get(k) != current[k])
    if changed:
        logger.warning("ignoring the prepared model: %s changed since it was written", changed)
        return False
    return True


def _compiled_record_matches(model_dir: Path, source: Path) -> bool:
    """A compiled form was written from ``source`` for this LightGBM (the image's runtime stage
    has no scikit-learn, pandas or skops: only these two matter to it)."""
    try:
        record = json.loads((model_dir / PREPARED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        record.get("compiled") == COMPILED_FILE
        and record.get("source") == source.name
        and record.get("source_sha256") == _sha256(source)
        and record.get("compiled_lightgbm") == _version("lightgbm")
    )


def _version(library: str) -> str | None:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def _load_compiled(model_dir: Path) -> CompiledPipeline | None:
    path = model_dir / COMPILED_FILE
    if not path.exists():
        return None
    try:
        return CompiledPipeline.load(path)
    except Exception as err:  # a damaged file only costs the fast start
        logger.warning("ignoring %s: %s: %s", COMPILED_FILE, type(err).__name__, err)
        return None


def _load_prepared(model_dir: Path) -> Any | None:
    """The prepared pickle (its record already checked), or None."""
    try:
        with (model_dir / PREPARED_FILE).open("rb") as handle:
            return pickle.load(handle)
    except Exception as err:  # a damaged pickle only costs the fast start
        logger.warning("ignoring %s: %s: %s", PREPARED_FILE, type(err).__name__, err)
        return None


def _runtime() -> dict[str, Any]:
    """Python and library versions a pickle is only valid for."""
    libraries = {library: _version(library) for library in PINNED_LIBRARIES}
    return {"python": platform.python_version(), "libraries": libraries}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _deserialize(path: Path, serialization_format: str, trusted_types: list[str] | None) -> Any:
    """The estimator stored at ``path`` in the format MLflow wrote it with."""
    try:
        if serialization_format == "skops":
            # skops imports scikit-learn's whole estimator registry: only when it is needed.
            import skops.io  # noqa: PLC0415

            return skops.io.load(path, trusted=trusted_types or [])
        if serialization_format in ("pickle", "cloudpickle"):
            # cloudpickle output is standard pickle once the classes it names are importable.
            with path.open("rb") as handle:
                return pickle.load(handle)
    except ModuleNotFoundError as err:
        raise ModelLoadError(
            f"cannot load {path} ({serialization_format}): {err}; reading a model's MLflow "
            "format needs the [model] extra (pandas, scikit-learn, skops)"
        ) from err
    except Exception as err:
        raise ModelLoadError(
            f"cannot load {path} ({serialization_format}): {type(err).__name__}: {err}"
        ) from err
    raise ModelLoadError(f"{path}: unsupported serialization_format {serialization_format!r}")


def _check_estimator(estimator: Any, model_dir: Path) -> None:
    """The estimator predicts purchase probabilities from columns the API provides."""
    if not callable(getattr(estimator, "predict_proba", None)):
        raise ModelLoadError(f"{model_dir}: {type(estimator).__name__} has no predict_proba")
    classes = np.asarray(getattr(estimator, "classes_", [0, 1])).tolist()
    if classes != [0, 1]:
        raise ModelLoadError(f"{model_dir}: model classes are {classes}, expected [0, 1]")
    expected = [str(c) for c in getattr(estimator, "feature_names_in_", FEATURE_COLUMNS)]
    unknown = [column for column in expected if column not in FEATURE_DTYPES]
    if unknown:
        raise ModelLoadError(
            f"{model_dir}: the model needs columns {unknown} that are not API session fields"
        )


def _warn_on_library_drift(model_dir: Path) -> None:
    """Log one warning per library whose version differs from the model's requirements."""
    path = model_dir / "requirements.txt"
    if not path.exists():
        return
    pinned = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            pinned[name.strip().lower()] = version.strip()
    for library in PINNED_LIBRARIES:
        if library not in pinned:
            continue
        try:
            installed = metadata.version(library)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != pinned[library]:
            logger.warning(
                "model was trained with %s==%s, this process has %s",
                library,
                pinned[library],
                installed,
                extra={"fields": {"library": library, "trained": pinned[library]}},
            )


def _check_sessions() -> list[Session]:
    """Sessions covering known, unknown and missing categories and a spread of numbers."""
    variants = [
        {},
        {"brand": None, "category": None, "sub_category": None},
        {"brand": "no-such-brand", "category": "no-such-category", "sub_category": "x"},
        {"price": 0.0, "duration": 0.0, "num_views_session": 0, "num_views_product": 0},
        {"price": 12_345.0, "hour": 23, "minute": 59, "weekday": 6, "num_prev_sessions": 50},
    ]
    return [validate_session({**SESSION_EXAMPLE, **v}) for v in variants]


def _same_answers(compiled: CompiledPipeline, estimator: Any) -> bool:
    sessions = _check_sessions()
    expected = estimator.predict_proba(sessions_frame(sessions))[:, 1]
    return bool(np.allclose(compiled.predict(sessions), expected, rtol=0, atol=1e-9))


def _compile_checked(estimator: Any) -> CompiledPipeline | None:
    """The compiled pipeline when it gives ``predict_proba``'s answers, else None (logged)."""
    try:
        compiled = CompiledPipeline.compile(estimator)
        if compiled is None:
            logger.info("model served through scikit-learn (no compiled form for its structure)")
            return None
        if not _same_answers(compiled, estimator):
            logger.warning("model not compiled: it disagrees with predict_proba")
            return None
    except Exception as err:  # the scikit-learn path stays available
        logger.warning("model not compiled: %s: %s", type(err).__name__, err)
        return None
    return compiled


def _warm_up(model: LoadedModel, model_dir: Path) -> None:
    """Predict once at load: a model that cannot answer fails the start, not a request."""
    try:
        probabilities = model.purchase_probabilities([validate_session(SESSION_EXAMPLE)])
    except Exception as err:
        raise ModelLoadError(
            f"{model_dir}: the model fails on an example session: {type(err).__name__}: {err}"
        ) from err
    if probabilities.shape != (1,) or not 0 <= float(probabilities[0]) <= 1:
        raise ModelLoadError(
            f"{model_dir}: predict_proba returned {probabilities!r} for one session"
        )
