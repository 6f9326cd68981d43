"""Where a model directory comes from: the MLflow registry (fetch mode and the bake).

A model directory (``purchase_contract.model_dir``) is an MLflow model (``MLmodel`` and the
serialized estimator) plus ``model_meta.json``, which records which registered version it is,
and ``reference_sample.json`` when the version's training run logged one (sessions and the
probabilities the model gave them at training time, for a deploy to compare against).
The bake (``app.model.bake``, run before ``docker build``) writes one; the API's fetch mode writes
one into a temporary directory at start. Both go through :func:`fetch_model`, so both describe a
model the same way.

A version whose compiled form was logged with it (:mod:`app.model.publish`, at registration)
comes over MLflow's REST API with the standard library (:mod:`app.model.registry_rest`): a
fetch-mode start then imports neither MLflow nor scikit-learn. Otherwise (a database or file
store, an artifact store only MLflow's client reads, an older version) MLflow
(``mlflow-skinny`` is enough against a server) is imported inside :func:`_download` and
:func:`_download_reference_sample`, which need it.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from app.model.files import COMPILED_FILE
from app.model.registry_rest import Artifacts, RegisteredVersion, RegistryRest, RestUnsupported
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

    A version that carries its compiled form (:mod:`app.model.publish`) on a server whose
    artifacts this process can read over HTTP comes through MLflow's REST API
    (:mod:`app.model.registry_rest`) without importing MLflow; anything else through MLflow's
    client, with one log line saying why.
    """
    reference = parse_model_uri(model_uri)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelSourceError(f"{out_dir} is not empty: remove it or choose another directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Downloaded beside out_dir and renamed at the end: out_dir is complete or absent.
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=".download-") as staging:
        try:
            version, local, sample = _fetch_over_rest(
                reference, model_uri, Path(staging), tracking_uri
            )
            meta = _model_meta(version, reference, local)
            write_reference_sample(meta, local, sample)
        except _NeedsClient as why:
            logger.info("fetching %s with MLflow's client: %s", model_uri, why)
            resolved = why.resolved or reference
            version, local = _download(resolved, model_uri, Path(staging), tracking_uri)
            meta = _model_meta(version, reference, local)
            copy_reference_sample(meta, local, Path(staging), tracking_uri)
        meta.write(local)
        if out_dir.exists():
            out_dir.rmdir()
        local.rename(out_dir)
    return meta


def _model_meta(version: Any, reference: ModelReference, local: Path) -> ModelMeta:
    """What ``model_meta.json`` says of the downloaded version."""
    mlmodel = read_mlmodel(local)
    concrete_uri = version_uri(version.name, version.version)
    return ModelMeta(
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


class _NeedsClient(Exception):
    """The REST path cannot fetch this version; ``resolved`` is the version when it is known."""

    def __init__(self, why: str, resolved: ModelReference | None = None) -> None:
        super().__init__(why)
        self.resolved = resolved


def _fetch_over_rest(
    reference: ModelReference, model_uri: str, staging: Path, tracking_uri: str | None
) -> tuple[RegisteredVersion, Path, Path | None]:
    """The version, its files and its run's reference sample (None: none logged) over HTTP;
    _NeedsClient when the server, its artifact store or the version does not allow it."""
    try:
        rest = RegistryRest(tracking_uri or "")
    except RestUnsupported as why:
        raise _NeedsClient(str(why)) from None
    resolved = None
    try:
        version = rest.model_version(reference)
        resolved = ModelReference(name=version.name, version=version.version)
        where = rest.version_artifacts(version)
        runs = rest.run_artifacts(version.run_id) if version.run_id else None
        files = rest.list_files(where)
        if COMPILED_FILE not in files:
            raise _NeedsClient(
                f"version {version.version} has no compiled form ({COMPILED_FILE}: logged at "
                "registration since it exists)",
                resolved,
            )
        local = staging / "model"
        for path in files:
            rest.download(where, path, local)
        sample = _rest_reference_sample(rest, runs, staging / ".reference")
    except RestUnsupported as why:
        raise _NeedsClient(str(why), resolved) from None
    except ModelSourceError as err:
        raise ModelSourceError(f"cannot fetch {model_uri}: {err}") from None
    except OSError as err:
        raise ModelSourceError(f"cannot download {model_uri}: {err}") from None
    return version, local, sample


def _rest_reference_sample(
    rest: RegistryRest, runs: Artifacts | None, staging: Path
) -> Path | None:
    """The run's reference sample downloaded into staging; None when it logged none or is gone."""
    folder = str(PurePosixPath(REFERENCE_SAMPLE_ARTIFACT).parent)
    if runs is None or REFERENCE_SAMPLE_ARTIFACT not in rest.list_files(runs, folder):
        return None
    return rest.download(runs, REFERENCE_SAMPLE_ARTIFACT, staging)


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
    return write_reference_sample(meta, model_dir, downloaded)


def write_reference_sample(
    meta: ModelMeta, model_dir: Path, downloaded: Path | None
) -> Path | None:
    """The downloaded sample written into ``model_dir`` as the version's; None (one log line)
    when there is none."""
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
