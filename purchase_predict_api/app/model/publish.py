"""Log a registered version's compiled form with the model, so fetch mode starts without
scikit-learn and without MLflow's client.

The compiled form (``serving_compiled.json``: the code tables and LightGBM's text model) and its
record (``serving_model.json``: the model file's checksum, the library versions, the answers
``predict_proba`` gave on the check sessions) are what ``python -m app.prepare`` writes into a
baked directory, made by the same code (:func:`app.model.loading.prepare_model_dir`), minus
what only fits one machine: the pickle and the trees compiled to machine code. They are logged
beside ``MLmodel`` in the version's own artifacts, so every download of the version (the
image's bake, fetch mode, ``mlflow models serve``) carries them, and every start checks them
before use exactly as it checks a baked one (checksum, stored answers, reference sample).

Here, not in training: the format is the API's (``app.model.compiled``), and the training
project does not install the API. The registration step
(``purchase_delivery.register_model``) calls :func:`publish_compiled_form` when this package is
importable. Needs MLflow and the ``[model]`` extra. ``python -m app.model.publish
models:/<name>/<version>`` does the same for a version registered before this existed.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from app.model.files import COMPILED_FILE
from app.model.loading import PREPARED_RECORD, prepare_model_dir
from app.model.source import fetch_model
from purchase_contract.model_dir import ModelSourceError, parse_model_uri

logger = logging.getLogger(__name__)

# What a version carries: the files every machine can use.
PUBLISHED_FILES = (COMPILED_FILE, PREPARED_RECORD)


def publish_compiled_form(name: str, version: str, *, tracking_uri: str) -> list[str]:
    """Write version ``version`` of ``name``'s compiled form and log it with the model; the
    files logged ([] when the model has no compiled form: not the training pipeline)."""
    from mlflow import MlflowClient  # noqa: PLC0415 - the [mlflow] extra
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    model_uri = f"models:/{name}/{version}"
    with tempfile.TemporaryDirectory(prefix="publish-") as tmp:
        model_dir, upload = Path(tmp) / "model", Path(tmp) / "upload"
        fetch_model(model_uri, model_dir, tracking_uri=tracking_uri)
        prepare_model_dir(model_dir, trees=False)
        if not (model_dir / COMPILED_FILE).exists():
            logger.warning("%s has no compiled form: fetch mode reads its MLflow format", model_uri)
            return []
        upload.mkdir()
        for file_name in PUBLISHED_FILES:
            shutil.copyfile(model_dir / file_name, upload / file_name)
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        try:
            _log_with_the_model(client, client.get_model_version(name, version), upload)
        except MlflowException as err:
            raise ModelSourceError(f"cannot log the compiled form of {model_uri}: {err}") from None
    logger.info("logged %s with %s", ", ".join(PUBLISHED_FILES), model_uri)
    return list(PUBLISHED_FILES)


def _log_with_the_model(client: object, model_version: object, upload: Path) -> None:
    """Into the version's own artifacts: the logged model's (MLflow 3), or the run's folder."""
    source = str(getattr(model_version, "source", ""))
    model_id = getattr(model_version, "model_id", None)
    if not model_id and source.startswith("models:/m-") and "/" not in source[len("models:/") :]:
        model_id = source.removeprefix("models:/")
    if model_id:
        client.log_model_artifacts(model_id, str(upload))
        return
    if source.startswith("runs:/"):
        run_id, _, path = source.removeprefix("runs:/").partition("/")
        client.log_artifacts(run_id, str(upload), artifact_path=path or None)
        return
    raise ModelSourceError(f"cannot log beside a model whose source is {source!r}")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; 0 logged (or nothing to log), 2 error."""
    parser = argparse.ArgumentParser(
        prog="python -m app.model.publish", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("model_uri", help="models:/<name>/<version>")
    parser.add_argument("--tracking-uri", required=True, help="the MLflow server")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        reference = parse_model_uri(args.model_uri)
        if reference.version is None:
            raise ModelSourceError(f"{args.model_uri}: name a version, not an alias")
        publish_compiled_form(reference.name, reference.version, tracking_uri=args.tracking_uri)
    except ModelSourceError as err:
        sys.stderr.write(f"publish: {err}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
