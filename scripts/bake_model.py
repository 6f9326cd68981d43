#!/usr/bin/env python3
"""Bake a registered model into a directory the API image copies in at build time.

The alias is resolved to a concrete version once, here, before ``docker build``: the image
then carries that version for its whole life, and starting or scaling it never needs the
MLflow server. The directory holds the MLflow model (``MLmodel``, the serialized estimator,
``requirements.txt``) and ``model_meta.json``::

    {"name", "version", "alias", "run_id", "decision_threshold", "model_uri": "models:/<name>/<version>"}

Needs MLflow (``mlflow-skinny`` is enough against a server). The resolve-and-download code is
the API's own fetch mode (``purchase_predict_api/app/core/registry.py``), imported from the
source tree, so a baked model and a fetched one are described the same way.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from purchase_contract.config import ConfigError, load_config, tracking_uri

API_DIR = Path(__file__).resolve().parent.parent / "purchase_predict_api"
if str(API_DIR) not in sys.path:
    sys.path.insert(0, str(API_DIR))

from app.core.registry import ModelMeta, ModelSourceError, fetch_model  # noqa: E402

EPILOG = """\
outputs (key=value lines on stdout, appended to $GITHUB_OUTPUT when it is set):
  model_name, model_version, model_alias, run_id, decision_threshold,
  model_uri (models:/<name>/<version>), model_dir

then, for example:
  docker build purchase_predict_api --build-arg MODEL_DIR=model \\
    --build-arg MODEL_VERSION=<model_version> --build-arg GIT_SHA=$(git rev-parse HEAD)

MLflow: --tracking-uri, else MLFLOW_TRACKING_URI, else the SQLite store
purchase_predict/mlruns/mlflow.db. Exit status: 0 baked; 2 bad input or error.
"""


def bake(model_uri: str, out_dir: Path, *, tracking_uri: str) -> ModelMeta:
    """Resolve ``model_uri``, download that version into ``out_dir``, write model_meta.json."""
    return fetch_model(model_uri, out_dir, tracking_uri=tracking_uri)


def outputs(meta: ModelMeta, out_dir: Path) -> dict[str, str]:
    """The step outputs of a bake, as strings."""
    return {
        "model_name": meta.name,
        "model_version": meta.version,
        "model_alias": meta.alias or "",
        "run_id": meta.run_id or "",
        "decision_threshold": f"{meta.decision_threshold:g}",
        "model_uri": meta.model_uri,
        "model_dir": str(out_dir),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        model_uri = args.model_uri or _environment_uri(args.environment)
        meta = bake(model_uri, args.out, tracking_uri=args.tracking_uri or tracking_uri())
    except (ConfigError, ModelSourceError) as err:
        print(f"bake_model.py: {err}", file=sys.stderr)
        return 2
    lines = "".join(f"{key}={value}\n" for key, value in outputs(meta, args.out).items())
    print(lines, end="")
    _append_env_file("GITHUB_OUTPUT", lines)
    alias = f" (`@{meta.alias}`)" if meta.alias else ""
    _append_env_file(
        "GITHUB_STEP_SUMMARY",
        f"Baked model `{meta.name}` version **{meta.version}**{alias}, run `{meta.run_id}`, "
        f"decision threshold {meta.decision_threshold:g}, into `{args.out}`.\n",
    )
    return 0


def _environment_uri(environment: str) -> str:
    """models:/<model_name>@<alias> of an environment in [tool.purchase-predict]."""
    config = load_config()
    return f"models:/{config.model_name}@{config.environment(environment).alias}"


def _append_env_file(variable: str, text: str) -> None:
    if path := os.environ.get(variable):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bake_model.py",
        description=(
            "Resolve a registered model (by alias or version) to one version and download it, "
            "with model_meta.json, into the directory the API image is built with."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
