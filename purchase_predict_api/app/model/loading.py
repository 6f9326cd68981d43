"""Loading the model once and predicting a batch of sessions in one call.

The estimator is read in its native format (skops, pickle or cloudpickle, as the ``MLmodel``
file says) without importing MLflow, which keeps the image small and the cold start short.
The model is trusted: it comes from our own registry, and skops' allow-list is the one MLflow
recorded when the model was logged.

Importing scikit-learn alone takes seconds on a small CPU. The image build therefore runs
:func:`prepare_model_dir` once: the estimator, loaded the safe way, is re-written as a pickle
beside it and, when it is the training pipeline, as its compiled form (:class:`app.model.compiled.CompiledPipeline`:
code tables + LightGBM's text model, checked against ``predict_proba``), with a record of the
source file's hash and the library versions. At start those files are used only when the
record matches exactly: the compiled form first (no scikit-learn, no pandas, LightGBM through
its C library), then the pickle; otherwise the MLflow format is read.

The compiled form is served only once it has proven, at every start, to be the one written
for this estimator: its checksum is the record's, and its answers on the check sessions are
the ones ``predict_proba`` gave when it was written (and, when the directory has one, on the
training run's reference sample). Otherwise it is refused with the reason and the estimator
is loaded instead; where that cannot be (an image without scikit-learn), the start fails with
both reasons. A changed LightGBM text is never handed to the library (it could abort the
process), and a changed code table never answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from app.core.config import Settings
from app.model.compiled import (
    CompiledPipeline,
    check_answers,
    compile_checked,
    disagreement,
    same_answers,
)
from app.model.files import COMPILED_FILE
from app.model.frame import FEATURE_COLUMNS, sessions_frame
from app.model.source import fetch_model, read_mlmodel
from app.model.trees import TREES_FILE, CompiledTrees, TreesBuildError, build_library
from app.models import SESSION_EXAMPLE, Session, validate_session
from purchase_contract.features import FEATURE_DTYPES
from purchase_contract.model_dir import (
    REFERENCE_SAMPLE_FILE,
    ModelMeta,
    ModelSourceError,
    ReferenceSample,
)

logger = logging.getLogger(__name__)

# Largest difference allowed with the training run's reference sample (as the rollout's).
REFERENCE_ATOL = 1e-6
# Libraries whose version must match training for the estimator to behave the same.
PINNED_LIBRARIES = ("scikit-learn", "lightgbm", "skops", "numpy", "pandas", "scipy")
# Written by prepare_model_dir at image build: the estimator as a pickle, and its provenance.
PREPARED_FILE = "serving_model.pkl"
PREPARED_RECORD = "serving_model.json"


# The temporary directory a fetched model is written to before it is read into memory.
FETCH_DIR_PREFIX = "purchase-predict-model-"
# Fetch mode: how long the fetch may try before the start fails (the REST path of
# app.model.registry_rest reads them as MLflow's client does). The client's defaults (7 retries,
# backoff factor 2, 120 s a request) kept the port closed for 250 s and more with MLflow down.
# About 15 s with these; the environment overrides them.
FETCH_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


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


def load_model(settings: Settings, work_dir: Path | None = None) -> LoadedModel:
    """The model named by the settings: the baked directory, or a fetch from MLflow into
    ``work_dir`` (an empty directory the caller removes) or else a temporary directory."""
    trees = settings.compiled_trees
    if settings.model_path is not None:
        return load_model_dir(settings.model_path, trees=trees)
    # Settings guarantee MODEL_URI is set when MODEL_PATH is not.
    for name, value in FETCH_BOUNDS.items():
        os.environ.setdefault(name, value)
    logger.info(
        "fetching %s from %s (at most %s retries, %s s a request: "
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_TIMEOUT)",
        settings.model_uri,
        settings.mlflow_tracking_uri,
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"],
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"],
    )
    if work_dir is not None:
        fetch_model(str(settings.model_uri), work_dir, tracking_uri=settings.mlflow_tracking_uri)
        return load_model_dir(work_dir, trees=trees)
    with tempfile.TemporaryDirectory(prefix=FETCH_DIR_PREFIX) as tmp:
        fetch_model(str(settings.model_uri), Path(tmp), tracking_uri=settings.mlflow_tracking_uri)
        # Fully read into memory: the temporary copy can go.
        return load_model_dir(Path(tmp), trees=trees)


def load_model_dir(
    model_dir: Path, *, use_prepared: bool = True, trees: bool = True
) -> LoadedModel:
    """Read, check and warm up the model of a baked directory.

    Prepared at image build (``python -m app.prepare``), the directory holds the compiled form,
    checked there against ``predict_proba`` and again here (see the module docstring): a start
    then needs neither scikit-learn nor pandas, and its trees run compiled to machine code when
    that library was built and is verified too (``trees``; see :func:`_attach_trees`). Otherwise the estimator is read (the prepared
    pickle, else its MLflow format), checked, and compiled in memory when it can be.
    """
    meta = ModelMeta.read(model_dir)
    mlmodel = read_mlmodel(model_dir)
    flavor = (mlmodel.get("flavors") or {}).get("sklearn")
    if not isinstance(flavor, dict) or "pickled_model" not in flavor:
        raise ModelLoadError(f"{model_dir}/MLmodel has no sklearn flavor with a pickled_model")
    source = model_dir / flavor["pickled_model"]
    compiled, refused = (None, "")
    if use_prepared:
        compiled, refused = _verified_compiled(model_dir, source, trees=trees)
    if compiled is not None:
        model = LoadedModel(estimator=None, meta=meta, compiled=compiled)
        _warm_up(model, model_dir)
        return model
    if refused:
        logger.error("compiled form not served: %s; loading the estimator instead", refused)
    try:
        estimator = _load_estimator(model_dir, source, flavor, use_prepared)
    except ModelLoadError as err:
        if not refused:
            raise
        raise ModelLoadError(
            f"{model_dir}: the compiled form is refused ({refused}), and the estimator cannot "
            f"be loaded instead: {err}"
        ) from err
    model = LoadedModel(estimator=estimator, meta=meta)
    _warm_up(model, model_dir)
    compiled = compile_checked(estimator)
    return LoadedModel(estimator=estimator, meta=meta, compiled=compiled) if compiled else model


def _load_estimator(model_dir: Path, source: Path, flavor: dict, use_prepared: bool) -> Any:
    """The estimator: the prepared pickle when its record matches, else its MLflow format."""
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
    return estimator


def prepare_model_dir(model_dir: Path, *, trees: bool = True) -> LoadedModel:
    """Load the model from its MLflow format, check it, and write the fast-start files
    (``trees``: the trees compiled to machine code too, for this platform)."""
    model = load_model_dir(model_dir, use_prepared=False)
    source = model_dir / read_mlmodel(model_dir)["flavors"]["sklearn"]["pickled_model"]
    with (model_dir / PREPARED_FILE).open("wb") as handle:
        pickle.dump(model.estimator, handle, protocol=pickle.HIGHEST_PROTOCOL)
    compiled_file = model_dir / COMPILED_FILE
    compiled_file.unlink(missing_ok=True)
    if model.compiled is not None:
        model.compiled.save(compiled_file)
        if not same_answers(CompiledPipeline.load(compiled_file), model.estimator):
            logger.warning("compiled form read back disagrees with predict_proba: not kept")
            compiled_file.unlink()
    (model_dir / TREES_FILE).unlink(missing_ok=True)
    trees_file = _write_trees(model_dir, model, compiled_file) if trees else None
    record = {
        "source": source.name,
        "source_sha256": _sha256(source),
        **_runtime(),
        "compiled": compiled_file.name if compiled_file.exists() else None,
        # What the compiled form needs: LightGBM's library reading its own text format.
        "compiled_lightgbm": _version("lightgbm"),
        # What every start checks before serving it: the file is this one, and it answers
        # the check sessions as predict_proba did.
        "compiled_sha256": _sha256(compiled_file) if compiled_file.exists() else None,
        "check_answers": check_answers(model.estimator),
        # The trees compiled to machine code, checked the same way before they are used.
        "trees": trees_file.name if trees_file else None,
        "trees_sha256": _sha256(trees_file) if trees_file else None,
    }
    (model_dir / PREPARED_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return model


def _write_trees(model_dir: Path, model: LoadedModel, compiled_file: Path) -> Path | None:
    """Compile the trees of the compiled form beside it, keep them if they answer as
    ``predict_proba`` does; None (logged) without a compiled form, a compiler or agreement."""
    path = model_dir / TREES_FILE
    path.unlink(missing_ok=True)
    if model.compiled is None or not compiled_file.exists():
        return None
    compiled = CompiledPipeline.load(compiled_file)  # as a start reads it
    try:
        compiled.trees = build_library(model.compiled.trees_text(), path)
    except TreesBuildError as err:
        path.unlink(missing_ok=True)
        logger.warning("trees not compiled (%s): they run on LightGBM's library", err)
        return None
    why = _verification(compiled, model_dir, check_answers(model.estimator))
    if why:
        compiled.trees = None
        path.unlink()
        logger.warning("compiled trees not kept: %s", why)
        return None
    logger.info("trees compiled to %s", path)
    return path


def _prepared_record_matches(model_dir: Path, source: Path) -> bool:
    """The prepared files were made from ``source`` by these exact libraries."""
    record_path = model_dir / PREPARED_RECORD
    # A record logged with the model at registration comes without the pickle.
    if not record_path.exists() or not (model_dir / PREPARED_FILE).exists():
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


def _compiled_record(model_dir: Path, source: Path) -> dict[str, Any] | None:
    """The record, when a compiled form was written from ``source`` for this LightGBM (the
    image's runtime stage has no scikit-learn, pandas or skops: only these two matter to it)."""
    try:
        record = json.loads((model_dir / PREPARED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    matches = (
        isinstance(record, dict)
        and record.get("compiled") == COMPILED_FILE
        and record.get("source") == source.name
        and record.get("source_sha256") == _sha256(source)
        and record.get("compiled_lightgbm") == _version("lightgbm")
    )
    return record if matches else None


def _verified_compiled(
    model_dir: Path, source: Path, *, trees: bool = True
) -> tuple[CompiledPipeline | None, str]:
    """The compiled form once it has proven to be the one written for ``source``; else None and
    why it is refused ("" when there is none to use)."""
    record, path = _compiled_record(model_dir, source), model_dir / COMPILED_FILE
    if record is None or not path.exists():
        return None, ""
    # Before LightGBM reads it: a changed model text can make the library abort the process.
    if record.get("compiled_sha256") != _sha256(path):
        return None, f"{COMPILED_FILE} is not the file written when the model was prepared"
    compiled = _load_compiled(model_dir)
    if compiled is None:
        return None, f"{COMPILED_FILE} cannot be read"
    why = _verification(compiled, model_dir, record.get("check_answers") or [])
    if why:
        return None, f"{COMPILED_FILE}: {why}"
    if trees:
        _attach_trees(compiled, model_dir, record)
    elif record.get("trees"):
        logger.info(
            "compiled trees off (COMPILED_TREES=false): the trees run on LightGBM's library"
        )
    return compiled, ""


def _verification(compiled: CompiledPipeline, model_dir: Path, expected: Sequence[float]) -> str:
    """Why ``compiled`` does not give the stored answers on the check sessions, or the training
    run's on its reference sample when the directory has one; "" when it gives both."""
    why = disagreement(compiled, expected)
    if not why and (model_dir / REFERENCE_SAMPLE_FILE).exists():
        why = _reference_disagreement(compiled, model_dir / REFERENCE_SAMPLE_FILE)
    return why


def _attach_trees(compiled: CompiledPipeline, model_dir: Path, record: dict[str, Any]) -> None:
    """Evaluate the trees with the library the record names once it has proven to be the one
    built for this model: its checksum before it is loaded (loading a library runs its code),
    then the same answers as the compiled form's. Otherwise one log line, LightGBM's library."""
    if not record.get("trees"):
        return  # none was built (the prepare log says why)
    path = model_dir / TREES_FILE
    if record.get("trees") != TREES_FILE or not path.exists():
        why = f"{TREES_FILE} is missing"
    elif record.get("trees_sha256") != _sha256(path):
        why = f"{TREES_FILE} is not the file built when the model was prepared"
    else:
        try:
            compiled.trees = CompiledTrees(path)
            why = "" if compiled.trees.num_feature() == compiled.width else "wrong width"
            why = why or _verification(compiled, model_dir, record.get("check_answers") or [])
        except (OSError, AttributeError, ValueError) as err:  # not loadable here
            why = f"{TREES_FILE} cannot be loaded: {type(err).__name__}: {err}"
    if why:
        compiled.trees = None
        logger.warning("compiled trees not used (%s): the trees run on LightGBM's library", why)


def _reference_disagreement(compiled: CompiledPipeline, path: Path) -> str:
    """Why ``compiled`` does not answer the training run's reference sample, or ""."""
    try:
        sample = ReferenceSample.read(path)
        sessions = [validate_session(session) for session in sample.sessions]
    except (ModelSourceError, ValueError) as err:
        return f"its reference sample cannot be checked: {err}"
    why = disagreement(compiled, sample.probabilities, sessions, atol=REFERENCE_ATOL)
    return f"on the reference sample of run {sample.run_id}: {why}" if why else ""


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
