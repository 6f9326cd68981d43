#!/usr/bin/env python3
"""Check that a checked-out repository holds what the reusable workflows will read from it.

``deploy-api.yml`` and ``train.yml`` build and train the code of the repository they check out,
which may be another team's (docs/workflows.md, "Calling the reusable workflows from another
repository"). This runs right after the checkout, in a dry run too, and names every missing
piece at once, so a caller learns about its layout in seconds rather than after a bake, a
dependency install or a Kedro run. Standard library only: a bare ``python3``, nothing installed.

The contract checked (paths relative to the checkout):

- ``--config PATH``: a pyproject.toml whose ``[tool.purchase-predict]`` table is valid
  (``purchase_contract.config.load_config``: ``model_name``, ``experiment_name``, ``image_name``, ...).
- ``--api-directory DIR``: ``DIR/Dockerfile`` unless ``--no-dockerfile`` (a rollback deploys
  an image that exists and builds nothing).
- ``--smoke-request PATH``: a JSON object, the body of the smoke test's ``POST /predict``
  (without it the deploy sends the contract's example session).
- ``--project-directory DIR``: a Kedro project, ``DIR/pyproject.toml`` with ``[tool.kedro]``
  (what ``kedro run`` looks for), and its configuration ``DIR/conf/base`` (plus
  ``DIR/conf/<env>`` with ``--kedro-env``). The workflow reads
  ``DIR/data/08_reporting/training_run.json`` after the run: a warning when no configuration
  file of those environments names that path.

Exit status: 0 the layout holds; 1 something is missing (one ``::error`` line per problem).
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from purchase_contract.command_line import command_parser, read_document
from purchase_contract.config import ConfigError, load_config

CONTRACT = "docs/workflows.md, section 'Calling the reusable workflows from another repository'"
TRAINING_RUN = "data/08_reporting/training_run.json"


def check_config(config: str) -> list[str]:
    """Problems with the ``[tool.purchase-predict]`` configuration file (empty: none)."""
    path = Path(config)
    if not path.is_file():
        return [
            f"config {config} does not exist in the checkout: it must be a pyproject.toml with "
            "[tool.purchase-predict] (or pass config: '' to use the called repository's)"
        ]
    try:
        load_config(path)
    except ConfigError as err:
        return [f"config {config}: {err}"]
    return []


def check_api(directory: str, *, dockerfile: bool) -> list[str]:
    """Problems with the API project the deploy builds and smoke-tests."""
    root = Path(directory)
    if not root.is_dir():
        return [f"api-directory {directory} is not a directory of the checkout"]
    if dockerfile and not (root / "Dockerfile").is_file():
        return [
            f"{directory}/Dockerfile is missing: the image is built from it, with the repository "
            f"root as the build context and the model baked into {directory}/model"
        ]
    return []


def check_smoke_request(path: str) -> list[str]:
    """Problems with the caller's smoke request, the body POSTed to the new revision."""
    if not Path(path).is_file():
        return [
            f"smoke-request {path} is missing: the smoke test POSTs it to /predict of the new "
            "revision before any traffic moves (a JSON object; leave the input empty to send the "
            "contract's example session)"
        ]
    try:
        body = read_document(Path(path), "smoke-request", ValueError)
    except ValueError as err:  # unreadable, not UTF-8 or not JSON: one line naming the file
        return [str(err)]
    if not isinstance(body, dict):
        return [
            f"smoke-request {path} must be a JSON object (the /predict body), "
            f"got {type(body).__name__}"
        ]
    return []


def check_kedro(directory: str, kedro_env: str = "") -> tuple[list[str], list[str]]:
    """(problems, warnings) with the Kedro project the training runs."""
    root = Path(directory)
    if not root.is_dir():
        return [f"project-directory {directory} is not a directory of the checkout"], []
    problems = []
    pyproject = root / "pyproject.toml"
    try:
        kedro = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {}).get("kedro")
    except OSError:
        kedro = None
        problems.append(f"{directory}/pyproject.toml is missing: it installs the Kedro project")
    except tomllib.TOMLDecodeError as err:
        kedro = None
        problems.append(f"{directory}/pyproject.toml is not valid TOML: {err}")
    else:
        if not isinstance(kedro, dict):
            problems.append(
                f"{directory}/pyproject.toml has no [tool.kedro] table: `kedro run` does not "
                "see a Kedro project there"
            )
    environments = ["base", *([kedro_env] if kedro_env else [])]
    conf_dirs = [root / "conf" / env for env in environments]
    for conf in conf_dirs:
        if not conf.is_dir():
            problems.append(
                f"{directory}/conf/{conf.name} is missing: Kedro reads its configuration "
                f"environment {conf.name!r} from there"
            )
    warnings = []
    if not problems:
        texts = (
            path.read_text(encoding="utf-8", errors="replace")
            for conf in conf_dirs
            for path in sorted(conf.rglob("*.y*ml"))
        )
        if not any(TRAINING_RUN in text for text in texts):
            warnings.append(
                f"no configuration file under {directory}/conf/{{{','.join(environments)}}} "
                f"names {TRAINING_RUN}: the workflow reads {directory}/{TRAINING_RUN} after "
                "`kedro run` (run_id, model_version, metrics.f1) and the promotion step too"
            )
    return problems, warnings


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    problems: list[str] = []
    warnings: list[str] = []
    checked = []
    if args.config:
        problems += check_config(args.config)
        checked.append(f"config {args.config}")
    if args.api_directory:
        problems += check_api(args.api_directory, dockerfile=args.dockerfile)
        checked.append(f"API project {args.api_directory}")
    if args.smoke_request:
        problems += check_smoke_request(args.smoke_request)
        checked.append(f"smoke request {args.smoke_request}")
    if args.project_directory:
        found, warned = check_kedro(args.project_directory, args.kedro_env)
        problems += found
        warnings += warned
        checked.append(f"Kedro project {args.project_directory}")
    for warning in warnings:
        print(f"::warning title=caller layout::{warning}")
    for problem in problems:
        print(f"::error title=caller layout::{problem} (contract: {CONTRACT})")
    if problems:
        return 1
    print(f"layout ok: {', '.join(checked) or 'nothing to check'}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = command_parser("check_layout.py", __doc__.split("\n\n")[0])
    parser.add_argument("--config", default="", help="pyproject.toml with [tool.purchase-predict]")
    parser.add_argument("--api-directory", default="", help="the API project (deploy-api.yml)")
    parser.add_argument(
        "--no-dockerfile",
        dest="dockerfile",
        action="store_false",
        help="do not require a Dockerfile (a rollback builds nothing)",
    )
    parser.add_argument(
        "--smoke-request", default="", help="the body of the smoke test's POST /predict (JSON)"
    )
    parser.add_argument("--project-directory", default="", help="the Kedro project (train.yml)")
    parser.add_argument("--kedro-env", default="", help="the Kedro environment of the run")
    return parser


if __name__ == "__main__":
    sys.exit(main())
