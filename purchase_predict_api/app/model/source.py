"""Where a model directory comes from: the MLflow registry (fetch mode and the bake).

A model directory (``purchase_contract.model_dir``) is an MLflow model (``MLmodel`` and the
serialized estimator) plus ``model_meta.json``, which records which registered version it is,
and ``reference_sample.json`` when the version's training run logged one (sessions and the
probabilities the model gave them at training time, for a deploy to compare against).
The bake (``app.model.bake``, run before ``docker build``) writes one; the API's fetch mode writes
one into a temporary directory at start. Both go through :func:`fetch_model`, so both describe a
model the same way.

Only the standard library and PyYAML are imported here; MLflow (``mlflow-skinny`` is enough)
is imported inside :func:`_download` and :func:`_download_reference_sample`, which need it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from purchase_contract.model_dir import (
    MLMODEL_FILE,
    REFERENCE_SAMPLE_ARTIFACT,
    REFERENCE_SAMPLE_FILE,
    ModelMeta,
    ModelReference,
    ModelSourceError,
    ReferenceSample,
    decision_threshold,
    parse_model_uri,
    version_uri,
)

logger = logging.getLogger(__name__)


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


def fetch_model(model_uri: str, out_dir: Path, *, tracking_uri: str | None) -> ModelMeta:
    """Resolve ``model_uri`` to one version, download it into ``out_dir``, write its meta.

    An alias is resolved once and the concrete version is downloaded, so an alias moving
    during the download cannot mix two versions. ``out_dir`` must be empty or absent. The
    training run's reference sample is copied in too (:func:`copy_reference_sample`).
    """
    reference = parse_model_uri(model_uri)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelSourceError(f"{out_dir} is not empty: remove it or choose another directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside out_dir and renamed at the end: out_dir is complete or absent.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".download-") as staging:
        version, local = _download(reference, model_uri, Path(staging), tracking_uri)
        mlmodel = read_mlmodel(local)
        concrete_uri = version_uri(version.name, version.version)
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
        copy_reference_sample(meta, local, Path(staging), tracking_uri)
        if out_dir.exists():
            out_dir.rmdir()
        local.rename(out_dir)
    return meta


def _download(
    reference: ModelReference, model_uri: str, staging: Path, tracking_uri: str | None
) -> tuple[Any, Path]:
    """The registered version ``reference`` names, and its artifacts downloaded into staging."""
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
    try:
        if reference.alias is not None:
            version = client.get_model_version_by_alias(reference.name, reference.alias)
        else:
            version = client.get_model_version(reference.name, str(reference.version))
        # The version's own artifact location: no second alias or registry look-up.
        source = client.get_model_version_download_uri(version.name, version.version)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(staging), tracking_uri=tracking_uri
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
    return version, Path(local)


def copy_reference_sample(
    meta: ModelMeta, model_dir: Path, staging: Path, tracking_uri: str | None
) -> Path | None:
    """The training run's reference sample as ``model_dir/reference_sample.json``, its
    ``model_uri`` set to the version's; None (one log line) when the run logged none."""
    downloaded = (
        _download_reference_sample(meta.run_id, staging / ".reference", tracking_uri)
        if meta.run_id
        else None
    )
    if downloaded is None:
        logger.warning(
            "%s: its training run (%s) logged no %s (trained before reference samples): "
            "the model directory has no %s",
            meta.model_uri,
            meta.run_id or "none recorded",
            REFERENCE_SAMPLE_ARTIFACT,
            REFERENCE_SAMPLE_FILE,
        )
        return None
    sample = replace(ReferenceSample.read(downloaded), model_uri=meta.model_uri)
    return sample.write(model_dir / REFERENCE_SAMPLE_FILE)


def _download_reference_sample(run_id: str, staging: Path, tracking_uri: str | None) -> Path | None:
    """``REFERENCE_SAMPLE_ARTIFACT`` of run ``run_id`` downloaded into staging; None if absent."""
    import mlflow.artifacts  # noqa: PLC0415 - MLflow is there: _download used it
    from mlflow import MlflowClient  # noqa: PLC0415
    from mlflow.exceptions import MlflowException  # noqa: PLC0415
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode  # noqa: PLC0415

    where = f"{REFERENCE_SAMPLE_ARTIFACT} of run {run_id}"
    folder = str(PurePosixPath(REFERENCE_SAMPLE_ARTIFACT).parent)
    try:
        listed = MlflowClient(tracking_uri=tracking_uri).list_artifacts(run_id, folder)
        if REFERENCE_SAMPLE_ARTIFACT not in {item.path for item in listed}:
            return None
        staging.mkdir()
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path=REFERENCE_SAMPLE_ARTIFACT,
            dst_path=str(staging),
            tracking_uri=tracking_uri,
        )
    except MlflowException as err:
        if err.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None  # the run is gone (deleted): the model is still valid
        raise ModelSourceError(f"cannot fetch {where}: {_one_line(err.message)}") from None
    except OSError as err:
        raise ModelSourceError(f"cannot download {where}: {err}") from None
    return Path(local)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= 300 else text[:297] + "..."
