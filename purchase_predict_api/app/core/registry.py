"""Model directories and the MLflow registry: what a baked model is and how one is fetched.

A model directory is an MLflow model (``MLmodel`` and the serialized estimator) plus
``model_meta.json``, which records which registered version it is. ``scripts/bake_model.py``
writes one before ``docker build``; the API's fetch mode writes one into a temporary directory
at start. Both go through :func:`fetch_model`, so both describe a model the same way.

Only the standard library and PyYAML are imported here; MLflow (``mlflow-skinny`` is enough)
is imported inside :func:`fetch_model`, the one function that needs it.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

META_FILE = "model_meta.json"
MLMODEL_FILE = "MLmodel"
# models:/<name>@<alias> or models:/<name>/<version>; names may hold dots, dashes, spaces.
_ALIAS_URI = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/@]+)$")
_VERSION_URI = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>[0-9]+)$")


class ModelSourceError(RuntimeError):
    """The model cannot be found, fetched or read; the message is the one-line reason."""


@dataclass(frozen=True)
class ModelReference:
    """A registered model version, named by alias or by number."""

    name: str
    alias: str | None = None
    version: str | None = None


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


def parse_model_uri(uri: str) -> ModelReference:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>``; anything else is an error."""
    if match := _ALIAS_URI.match(uri):
        return ModelReference(name=match["name"], alias=match["alias"])
    if match := _VERSION_URI.match(uri):
        return ModelReference(name=match["name"], version=match["version"])
    raise ModelSourceError(
        f"model URI {uri!r} is not models:/<name>@<alias> or models:/<name>/<version>"
    )


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of an MLflow model directory."""
    path = model_dir / MLMODEL_FILE
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelSourceError(f"{path} is missing: {model_dir} is not an MLflow model") from None
    except (OSError, yaml.YAMLError) as err:
        raise ModelSourceError(f"cannot read {path}: {err}") from None
    if not isinstance(document, dict):
        raise ModelSourceError(f"{path} must hold a YAML mapping")
    return document


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


def fetch_model(model_uri: str, out_dir: Path, *, tracking_uri: str | None) -> ModelMeta:
    """Resolve ``model_uri`` to one version, download it into ``out_dir``, write its meta.

    An alias is resolved once and the concrete version is downloaded, so an alias moving
    during the download cannot mix two versions. ``out_dir`` must be empty or absent.
    """
    reference = parse_model_uri(model_uri)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelSourceError(f"{out_dir} is not empty: remove it or choose another directory")
    # Imported here: baked mode (the image) never needs MLflow.
    try:
        import mlflow.artifacts  # noqa: PLC0415
        from mlflow import MlflowClient  # noqa: PLC0415
        from mlflow.exceptions import MlflowException  # noqa: PLC0415
    except ImportError:
        raise ModelSourceError(
            f"fetching {model_uri} needs MLflow: pip install 'purchase-predict-api[mlflow]'"
        ) from None

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside out_dir and renamed at the end: out_dir is complete or absent.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".download-") as staging:
        try:
            if reference.alias is not None:
                version = client.get_model_version_by_alias(reference.name, reference.alias)
            else:
                version = client.get_model_version(reference.name, str(reference.version))
            # The version's own artifact location: no second alias or registry look-up.
            source = client.get_model_version_download_uri(version.name, version.version)
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=source, dst_path=staging, tracking_uri=tracking_uri
                )
            )
        except MlflowException as err:
            raise ModelSourceError(f"cannot fetch {model_uri}: {_one_line(err.message)}") from None
        except OSError as err:
            raise ModelSourceError(f"cannot download {model_uri}: {err}") from None
        except ImportError as err:
            # mlflow-skinny talks to servers; a database store (sqlite://) needs full mlflow.
            raise ModelSourceError(
                f"cannot open {tracking_uri} to fetch {model_uri}: {err} (install mlflow)"
            ) from None
        mlmodel = read_mlmodel(local)
        concrete_uri = f"models:/{version.name}/{version.version}"
        meta = ModelMeta(
            name=version.name,
            version=str(version.version),
            alias=reference.alias,
            run_id=version.run_id or mlmodel.get("run_id"),
            decision_threshold=decision_threshold(
                (mlmodel.get("metadata") or {}).get("decision_threshold"),
                f"{concrete_uri} MLmodel metadata",
            ),
            model_uri=concrete_uri,
        )
        meta.write(local)
        if out_dir.exists():
            out_dir.rmdir()
        local.rename(out_dir)
    return meta


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."
