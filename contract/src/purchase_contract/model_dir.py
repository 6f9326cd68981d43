"""The model directory format and model URIs, shared by the bake step and the API.

A model directory is an MLflow model (``MLmodel`` and the serialized estimator) plus
``model_meta.json``, which records which registered version it is, and, for models trained
since it exists, ``reference_sample.json``: sessions of the frozen test set and the purchase
probabilities the model gave them at training time, for a deploy to check that a new revision
answers the same (:class:`ReferenceSample`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from purchase_contract.features import FEATURE_NAMES

META_FILE = "model_meta.json"
MLMODEL_FILE = "MLmodel"
# The reference sample: its name in a model directory, and its path among the training run's
# artifacts (the fetch copies it from there, since a registered version holds only the model).
REFERENCE_SAMPLE_FILE = "reference_sample.json"
REFERENCE_SAMPLE_ARTIFACT = "reference/reference_sample.json"
# models:/<name>@<alias> or models:/<name>/<version>; names may hold dots, dashes, spaces.
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)$")


class ModelSourceError(RuntimeError):
    """The model cannot be found, fetched or read; the message is the one-line reason."""


def alias_uri(model_name: str, alias: str) -> str:
    """``models:/<name>@<alias>``: the version an alias points at, resolved when read."""
    return f"models:/{model_name}@{alias}"


def version_uri(model_name: str, version: str | int) -> str:
    """``models:/<name>/<version>``: one registered version."""
    return f"models:/{model_name}/{version}"


@dataclass(frozen=True)
class ModelReference:
    """A registered model version, named by alias or by number."""

    name: str
    alias: str | None = None
    version: str | None = None


def parse_model_uri(uri: str) -> ModelReference:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>``; anything else is an error."""
    if match := _ALIAS_URI.match(uri):
        return ModelReference(name=match["name"], alias=match["alias"])
    if match := _VERSION_URI.match(uri):
        return ModelReference(name=match["name"], version=match["version"])
    raise ModelSourceError(
        f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
    )


def decision_threshold(value: Any, where: str) -> float:
    """A decision threshold in [0, 1], or a ModelSourceError naming where it came from."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ModelSourceError(f"{where}: decision_threshold {value!r} is not a number")
    try:
        threshold = float(value)
    except ValueError:
        raise ModelSourceError(f"{where}: decision_threshold {value!r} is not a number") from None
    if not (math.isfinite(threshold) and 0 <= threshold <= 1):
        raise ModelSourceError(f"{where}: decision_threshold {threshold} is not in [0, 1]")
    return threshold


@dataclass(frozen=True)
class ModelMeta:
    """``model_meta.json``: the registered version a model directory holds."""

    name: str
    version: str
    alias: str | None
    run_id: str | None
    decision_threshold: float
    model_uri: str

    def write(self, model_dir: Path) -> Path:
        """Write ``model_meta.json`` into ``model_dir``; its path."""
        path = model_dir / META_FILE
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, model_dir: Path) -> ModelMeta:
        """Read and validate ``model_dir/model_meta.json``."""
        path = model_dir / META_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelSourceError(
                f"{path} is missing: bake the model directory with scripts/bake_model.py"
            ) from None
        except (OSError, json.JSONDecodeError) as err:
            raise ModelSourceError(f"cannot read {path}: {err}") from None
        if not isinstance(raw, dict):
            raise ModelSourceError(f"{path} must hold a JSON object")
        for key in ("name", "version", "model_uri"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ModelSourceError(f"{path}: {key!r} must be a non-empty string")
        for key in ("alias", "run_id"):
            if raw.get(key) is not None and not isinstance(raw[key], str):
                raise ModelSourceError(f"{path}: {key!r} must be a string or null")
        return cls(
            name=raw["name"],
            version=raw["version"],
            alias=raw.get("alias"),
            run_id=raw.get("run_id"),
            decision_threshold=decision_threshold(raw.get("decision_threshold"), str(path)),
            model_uri=raw["model_uri"],
        )


@dataclass(frozen=True)
class ReferenceSample:
    """``reference_sample.json``: sessions and the probabilities the model gave them in training.

    ``sessions`` are JSON objects with exactly the contract's feature keys (null for a missing
    text), as ``POST /predict`` takes them; ``probabilities[i]`` is ``predict_proba[:, 1]`` of
    ``sessions[i]``. ``model_uri`` is empty in the training run's artifact and
    ``models:/<name>/<version>`` in a fetched or baked model directory.
    """

    model_uri: str
    run_id: str
    sessions: list[dict[str, Any]]
    probabilities: list[float]

    def write(self, path: Path) -> Path:
        """Check the sample, write it as JSON to the file ``path``; the path."""
        document = asdict(self)
        _check_reference_sample(document, str(path))
        text = json.dumps(document, indent=1, allow_nan=False)
        path.write_text(text + "\n", encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: Path) -> ReferenceSample:
        """Read and check the file ``path`` (a ModelSourceError says what is wrong)."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelSourceError(f"{path} is missing") from None
        except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError
            raise ModelSourceError(f"cannot read {path}: {err}") from None
        _check_reference_sample(raw, str(path))
        return cls(
            model_uri=raw["model_uri"],
            run_id=raw["run_id"],
            sessions=raw["sessions"],
            probabilities=[float(p) for p in raw["probabilities"]],
        )


_REFERENCE_KEYS = ("model_uri", "run_id", "sessions", "probabilities")
_JSON_SCALARS = (str, int, float, type(None))


def _check_reference_sample(raw: Any, where: str) -> None:
    """A ModelSourceError unless ``raw`` is a reference sample document."""
    if not isinstance(raw, dict) or set(raw) != set(_REFERENCE_KEYS):
        raise ModelSourceError(f"{where}: must be a JSON object with keys {list(_REFERENCE_KEYS)}")
    uri = raw["model_uri"]
    if not isinstance(uri, str) or (uri and not _VERSION_URI.match(uri)):
        raise ModelSourceError(f"{where}: model_uri {uri!r} is not empty or models:/<name>/<n>")
    if not isinstance(raw["run_id"], str) or not raw["run_id"]:
        raise ModelSourceError(f"{where}: run_id must be a non-empty string")
    sessions, probabilities = raw["sessions"], raw["probabilities"]
    if not isinstance(sessions, list) or not isinstance(probabilities, list):
        raise ModelSourceError(f"{where}: sessions and probabilities must be JSON arrays")
    if not sessions:
        raise ModelSourceError(f"{where}: the sample holds no sessions")
    if len(sessions) != len(probabilities):
        raise ModelSourceError(
            f"{where}: {len(sessions)} sessions but {len(probabilities)} probabilities"
        )
    for index, session in enumerate(sessions):
        _check_reference_session(session, f"{where}: sessions[{index}]")
    for index, probability in enumerate(probabilities):
        if not _is_number(probability) or not 0 <= probability <= 1:
            raise ModelSourceError(
                f"{where}: probabilities[{index}] {probability!r} is not a number in [0, 1]"
            )


def _check_reference_session(session: Any, where: str) -> None:
    """A ModelSourceError unless ``session`` holds exactly the feature keys, JSON scalars."""
    if not isinstance(session, dict):
        raise ModelSourceError(f"{where} is not a JSON object")
    if set(session) != set(FEATURE_NAMES):
        missing = sorted(set(FEATURE_NAMES) - set(session))
        extra = sorted(set(session) - set(FEATURE_NAMES))
        raise ModelSourceError(
            f"{where} does not have exactly the feature keys: missing {missing}, extra {extra}"
        )
    for key, value in session.items():
        if isinstance(value, bool) or not isinstance(value, _JSON_SCALARS):
            raise ModelSourceError(f"{where}[{key!r}] {value!r} is not a JSON string or number")
        if isinstance(value, float) and not math.isfinite(value):
            raise ModelSourceError(f"{where}[{key!r}] is {value}: write null for a missing value")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
