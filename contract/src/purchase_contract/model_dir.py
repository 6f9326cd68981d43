"""The model directory format and model URIs, shared by the bake step and the API.

A model directory is an MLflow model (``MLmodel`` and the serialized estimator) plus
``model_meta.json``, which records which registered version it is.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

META_FILE = "model_meta.json"
MLMODEL_FILE = "MLmodel"
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
