"""Bake a registered model into the directory the API image is built with.

The alias is resolved to a concrete version once, here, before ``docker build``: the image
then carries that version for its whole life, and starting or scaling it never needs the
MLflow server. The directory holds the MLflow model (``MLmodel``, the serialized estimator,
``requirements.txt``), ``model_meta.json`` and, when the training run logged one,
``reference_sample.json`` (``purchase_contract.model_dir``). The
resolve-and-download code is the API's own fetch mode (:func:`app.model.source.fetch_model`),
so a baked model and a fetched one are described the same way.

Needs MLflow (``mlflow-skinny`` is enough against a server). ``scripts/bake_model.py`` is this
module's command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.model.source import fetch_model
from purchase_contract.command_line import command_parser
from purchase_contract.config import ConfigError, load_config, tracking_uri
from purchase_contract.model_dir import (
    REFERENCE_SAMPLE_FILE,
    ModelMeta,
    ModelSourceError,
    alias_uri,
)
from purchase_contract.step_outputs import append_summary, write_outputs

PROG = "bake_model.py"
EPILOG = """\
outputs (key=value lines on stdout, appended to $GITHUB_OUTPUT when it is set):
  model-name, model-version, model-alias, run-id, decision-threshold,
  model-uri (models:/<name>/<version>), model-dir, f1 (the training run's test F1,
  empty when it logged none), reference-sample (the path of the directory's
  reference_sample.json: sessions and the probabilities the model gave them at training
  time, to compare a deployed revision's answers with; empty when the run logged none)

then, for example (the build context is the repository root):
  docker build . --file purchase_predict_api/Dockerfile \\
    --build-arg MODEL_DIR=purchase_predict_api/model \\
    --build-arg MODEL_VERSION=<model-version> --build-arg GIT_SHA=$(git rev-parse HEAD)

MLflow: --tracking-uri, else MLFLOW_TRACKING_URI, else the embedded SQLite store named by
[tool.purchase-predict] local_mlflow_store. Exit status: 0 baked; 2 bad input or error.
"""


def bake(model_uri: str, out_dir: Path, *, tracking_uri: str) -> ModelMeta:
    """Resolve ``model_uri``, download that version into ``out_dir``, write model_meta.json."""
    return fetch_model(model_uri, out_dir, tracking_uri=tracking_uri)


def training_f1(meta: ModelMeta, *, tracking_uri: str) -> str:
    """The test F1 the version's training run logged ("" when none), for the deploy summary."""
    if not meta.run_id:
        return ""
    from mlflow import MlflowClient  # noqa: PLC0415 - MLflow is there: the bake used it
    from mlflow.exceptions import MlflowException  # noqa: PLC0415

    try:
        metrics = MlflowClient(tracking_uri=tracking_uri).get_run(meta.run_id).data.metrics
    except MlflowException as err:  # the model is baked: a summary figure is no reason to fail
        sys.stderr.write(f"{PROG}: the run's F1 is not readable, left empty: {err}\n")
        return ""
    return str(metrics.get("f1", ""))


def outputs(meta: ModelMeta, out_dir: Path, *, f1: str = "") -> dict[str, str]:
    """The step outputs of a bake, as strings."""
    sample = out_dir / REFERENCE_SAMPLE_FILE
    return {
        "model-name": meta.name,
        "model-version": meta.version,
        "model-alias": meta.alias or "",
        "run-id": meta.run_id or "",
        "decision-threshold": f"{meta.decision_threshold:g}",
        "model-uri": meta.model_uri,
        "model-dir": str(out_dir),
        "f1": f1,
        "reference-sample": str(sample) if sample.is_file() else "",
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        model_uri = args.model_uri or _environment_uri(args.environment)
        uri = args.tracking_uri or tracking_uri()
        meta = bake(model_uri, args.out, tracking_uri=uri)
    except (ConfigError, ModelSourceError) as err:
        sys.stderr.write(f"{PROG}: {err}\n")
        return 2
    write_outputs(outputs(meta, args.out, f1=training_f1(meta, tracking_uri=uri)))
    alias = f" (`@{meta.alias}`)" if meta.alias else ""
    append_summary(
        f"Baked model `{meta.name}` version **{meta.version}**{alias}, run `{meta.run_id}`, "
        f"decision threshold {meta.decision_threshold:g}, into `{args.out}`."
    )
    return 0


def _environment_uri(environment: str) -> str:
    """models:/<model_name>@<alias> of an environment in [tool.purchase-predict]."""
    config = load_config()
    return alias_uri(config.model_name, config.environment(environment).alias)


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        PROG,
        (
            "Resolve a registered model (by alias or version) to one version and download it, "
            "with model_meta.json, into the directory the API image is built with."
        ),
        EPILOG,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-uri", help="models:/<name>@<alias> or models:/<name>/<version>")
    source.add_argument(
        "--environment",
        metavar="NAME",
        help="bake models:/<model_name>@<alias> of this environment (from the root pyproject)",
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (see below)")
    parser.add_argument(
        "--out", type=Path, required=True, help="directory to create (must be empty or absent)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
