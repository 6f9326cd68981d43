#!/usr/bin/env python3
"""Map a git ref, a GitHub event or an environment name to a deployment environment.

Standard library only: workflows run it with a bare ``python3`` before installing anything.
The mapping lives in ``[tool.purchase-predict.environments.<env>]`` of the root pyproject.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import purchase_contract as contract
import purchase_delivery as delivery
from purchase_contract.command_line import command_parser, read_document
from purchase_contract.config import ConfigError, Environment, ProjectConfig, load_config
from purchase_contract.step_outputs import append_to, format_outputs

# Every key is always written, so a workflow can read any of them even when deploy=false.
OUTPUT_KEYS = (
    "deploy",
    "environment",
    "branch",
    "alias",
    "service",
    "region",
    "artifact-repository",
    "min-instances",
    "max-instances",
    "memory",
    "cpu",
    "concurrency",
    "traffic-steps",
    "observe-seconds",
    "metrics-delay-seconds",
    "allow-faults",
    "model-name",
    "image-name",
    "gate-f1-tolerance",
)

EPILOG = """\
inputs (exactly one):
  REF                       refs/heads/<branch> or a bare branch name
  --event-path FILE         a GitHub event payload ($GITHUB_EVENT_PATH):
                              push                 -> ref
                              workflow_run         -> workflow_run.head_branch
                              repository_dispatch  -> client_payload.environment (a name),
                                                      else client_payload.branch / .ref
                              workflow_dispatch    -> inputs.environment (a name), else ref
                              pull_request         -> never deploys
  --environment NAME        an environment name (unknown names are an error)

outputs (key=value lines on stdout, appended to $GITHUB_OUTPUT when it is set;
a JSON object on stdout with --json):
  deploy                    true when an environment was resolved, false otherwise
  environment               environment name (empty, or null in JSON, when deploy=false;
                            so are the keys below up to allow-faults)
  branch                    the branch the decision was made from (the environment's
                            branch when chosen by name)
  alias                     MLflow registered-model alias the environment serves
  service, region           Cloud Run service and region
  artifact-repository       Artifact Registry repository for the API image
  min-instances, max-instances, memory, cpu, concurrency
                            Cloud Run deploy options
  traffic-steps, observe-seconds, metrics-delay-seconds
                            the rollout: traffic percentages (e.g. 10,50,100), seconds
                            each step is observed, seconds Cloud Monitoring lags
  allow-faults              true when the API's INJECT_FAULTS may be deployed here
  model-name, image-name    registered model and API image names
  gate-f1-tolerance         quality gate tolerance for register_model.py

An unmapped branch (a feature branch, a tag, a pull request) is not an error: it prints
deploy=false and "no environment" on stderr, and exits 0. With --fallback an unmapped branch
resolves to fallback_environment instead (the local pipeline uses this).

exit status: 0 resolved or no environment; 2 bad input (unknown environment name,
unreadable payload, invalid configuration).
"""


class InputError(ValueError):
    """The ref, payload or environment name cannot be used; the message says why."""


@dataclass(frozen=True)
class Target:
    """What was asked for: a branch to map, or an environment named directly."""

    branch: str | None = None
    environment: str | None = None
    # Why there is nothing to map (a tag, a pull request), shown with deploy=false.
    skip_reason: str | None = None


def branch_from_ref(ref: str) -> Target:
    """``refs/heads/x`` or ``x`` -> branch x; other ``refs/`` (tags, pulls) map to nothing."""
    ref = ref.strip()
    if not ref:
        raise InputError("the ref is empty")
    if ref.startswith("refs/heads/"):
        branch = ref.removeprefix("refs/heads/")
        if not branch:
            raise InputError(f"ref {ref!r} names no branch")
        return Target(branch=branch)
    if ref.startswith("refs/"):
        return Target(skip_reason=f"{ref} is not a branch")
    return Target(branch=ref)


def target_from_event(payload: dict[str, Any], source: str) -> Target:
    """Read the branch or environment out of a GitHub event payload (shape decides the kind)."""
    if isinstance(run := payload.get("workflow_run"), dict):
        return branch_from_ref(_text(run, "head_branch", f"{source}: workflow_run"))
    if isinstance(client := payload.get("client_payload"), dict):
        if client.get("environment"):
            return Target(environment=_text(client, "environment", f"{source}: client_payload"))
        for key in ("branch", "ref"):
            if client.get(key):
                return branch_from_ref(_text(client, key, f"{source}: client_payload"))
        raise InputError(
            f"{source}: repository_dispatch client_payload has no environment, branch or ref"
        )
    if isinstance(inputs := payload.get("inputs"), dict) and inputs.get("environment"):
        return Target(environment=_text(inputs, "environment", f"{source}: inputs"))
    if "pull_request" in payload:
        return Target(skip_reason="pull_request events never deploy")
    if payload.get("ref"):
        return branch_from_ref(_text(payload, "ref", source))
    raise InputError(
        f"{source}: not a push, workflow_run, repository_dispatch or workflow_dispatch payload"
    )


def resolve(config: ProjectConfig, target: Target, *, fallback: bool = False) -> dict[str, Any]:
    """The output mapping for ``target``: the environment's settings, or deploy=false."""
    if target.environment is not None:
        env = config.environment(target.environment)
        return _settings(config, env, branch=env.branch)
    env = config.environment_for_branch(target.branch) if target.branch else None
    if env is None and fallback:
        env = config.environment(config.fallback_environment)
    if env is None:
        return (
            dict.fromkeys(OUTPUT_KEYS)
            | _shared(config)
            | {"deploy": False, "branch": target.branch}
        )
    return _settings(config, env, branch=target.branch or env.branch)


def format_lines(outputs: dict[str, Any]) -> str:
    """``key=value`` lines in OUTPUT_KEYS order, booleans as true/false."""
    return format_outputs({key: _scalar(outputs[key]) for key in OUTPUT_KEYS})


def action_inputs(root: Path, env: Mapping[str, str]) -> tuple[list[str], Path]:
    """The command line and the configuration file that actions/resolve-environment's inputs
    ask for (``ENVIRONMENT_NAME``, else ``REF``, else ``EVENT_PATH``; ``CONFIG``, else the
    pyproject.toml of ``root``, the commit the action comes from)."""
    if name := env.get("ENVIRONMENT_NAME"):
        argv = ["--environment", name]
    elif ref := env.get("REF"):
        argv = [ref]
    elif event_path := env.get("EVENT_PATH"):
        argv = ["--event-path", event_path]
    else:
        raise InputError("give one of the inputs environment, ref or event-path")
    config = Path(env.get("CONFIG") or root / "pyproject.toml")
    if not config.is_file():
        raise InputError(f"config {config} does not exist")
    return argv, config.resolve()


def action_outputs(root: Path, config: Path) -> dict[str, str]:
    """What the action adds for the steps after it: the configuration read, the scripts and
    the ``PYTHONPATH`` of the standard-library packages this very run imported."""
    packages = (Path(module.__file__).resolve().parents[1] for module in (contract, delivery))
    return {
        "config": str(config),
        "scripts": str(root.resolve() / "scripts"),
        "pythonpath": ":".join(dict.fromkeys(str(path) for path in packages)),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    config, extra = None, {}
    if args.action is not None:
        try:
            action_argv, config = action_inputs(args.action, os.environ)
        except InputError as err:
            print(f"::error title=resolve-environment::{err}")
            return 2
        args, extra = _parser().parse_args(action_argv), action_outputs(args.action, config)
    try:
        target = _target(args)
        outputs = resolve(load_config(config), target, fallback=args.fallback)
    except (InputError, ConfigError) as err:
        print(f"branch_env: error: {err}", file=sys.stderr)
        return 2
    if not outputs["deploy"]:
        what = target.skip_reason or f"branch {target.branch!r} is not mapped"
        print(f"branch_env: no environment: {what} (deploy=false)", file=sys.stderr)
    lines = format_lines(outputs) + format_outputs(extra)
    append_to("GITHUB_OUTPUT", lines)
    if args.json:
        print(json.dumps(outputs, indent=2))
    else:
        print(lines, end="")
    return 0


def _settings(config: ProjectConfig, env: Environment, *, branch: str) -> dict[str, Any]:
    # Output keys are the environment's fields in kebab-case (GitHub's convention).
    fields = {name.replace("_", "-"): value for name, value in asdict(env).items()}
    return {
        "deploy": True,
        "environment": env.name,
        "branch": branch,
        **{key: fields[key] for key in OUTPUT_KEYS if key in fields and key != "branch"},
        **_shared(config),
    }


def _shared(config: ProjectConfig) -> dict[str, Any]:
    """Project-wide names, output whether or not an environment was resolved."""
    return {
        "model-name": config.model_name,
        "image-name": config.image_name,
        "gate-f1-tolerance": config.gate_f1_tolerance,
    }


def _target(args: argparse.Namespace) -> Target:
    given = [x is not None for x in (args.ref, args.event_path, args.environment)]
    if sum(given) != 1:
        raise InputError("give exactly one of REF, --event-path FILE or --environment NAME")
    if args.environment is not None:
        return Target(environment=args.environment)
    if args.ref is not None:
        return branch_from_ref(args.ref)
    path = Path(args.event_path)
    payload = read_document(path, "event payload", InputError)
    if not isinstance(payload, dict):
        raise InputError(f"event payload {path} is not a JSON object")
    return target_from_event(payload, str(path))


def _text(raw: dict[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where}.{key} must be a non-empty string, got {value!r}")
    return value.strip()


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "branch_env.py",
        (
            "Map a git ref, a GitHub event payload or an environment name to the deployment "
            "environment's settings from [tool.purchase-predict] in the root pyproject.toml "
            "($PURCHASE_PREDICT_CONFIG overrides the file)."
        ),
        EPILOG,
    )
    parser.add_argument("ref", nargs="?", help="refs/heads/<branch> or a branch name")
    parser.add_argument("--event-path", metavar="FILE", help="GitHub event payload JSON")
    parser.add_argument("--environment", metavar="NAME", help="an environment name")
    parser.add_argument(
        "--fallback",
        action="store_true",
        help="map an unmapped branch to fallback_environment instead of deploy=false",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON object")
    parser.add_argument(
        "--action",
        metavar="ROOT",
        type=Path,
        help="run as actions/resolve-environment of the checkout ROOT: the inputs come from "
        "$ENVIRONMENT_NAME, $REF or $EVENT_PATH and $CONFIG, and the outputs config, scripts "
        "and pythonpath are added",
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
