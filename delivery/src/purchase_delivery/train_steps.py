"""The steps of ``train.yml`` that decide and report: ``settings``, ``training-run``, ``result``.

``settings`` checks the inputs and plans the run: the ``kedro run`` command, the quality gate's
arguments, and whether (and as whom) to authenticate to Google Cloud; training never runs as
the deployer. ``training-run`` reads ``training_run.json``. ``result`` turns what the steps did
into the workflow's outputs and the job summary. Each reads the step's environment (names as
in the workflow's ``env:``); standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from purchase_contract.command_line import read_document
from purchase_delivery.check_layout import TRAINING_RUN
from purchase_delivery.workflow_step import StepRefused, StepResult, is_true, run_steps

DIRECTORY = re.compile(r"^[A-Za-z0-9._/-]+$")
PLAIN_NAME = re.compile(r"^[A-Za-z0-9_-]*$")
POSITIVE = re.compile(r"^[1-9][0-9]*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
SETUP = "docs/gcp-setup.md"


def settings(env: Mapping[str, str]) -> StepResult:
    """The plan of one training run, or :class:`StepRefused`."""
    get = env.get
    directory, kedro_env, max_evals = (
        get("PROJECT_DIRECTORY", ""),
        get("KEDRO_ENV", ""),
        get("MAX_EVALS", ""),
    )
    if not (DIRECTORY.match(directory) and Path(directory).is_dir()):
        raise StepRefused(f"project-directory '{directory}' is not a directory of the checkout")
    if not PLAIN_NAME.match(kedro_env):
        raise StepRefused(f"kedro-env must be a plain name, got '{kedro_env}'")
    if max_evals and not POSITIVE.match(max_evals):
        raise StepRefused(f"automl-max-evals must be a positive integer, got '{max_evals}'")
    kedro = ["kedro", "run"]
    kedro += ["--env", kedro_env] if kedro_env else []
    kedro += ["--params", f"automl_max_evals={max_evals}"] if max_evals else []
    register = [
        "--training-run-json",
        f"{directory}/{TRAINING_RUN}",
        "--environment",
        get("ENVIRONMENT", ""),
    ]
    register += ["--force"] if is_true(get("FORCE")) else []
    provider, account, line = _google(env)
    outputs = {
        "mode": "dry-run" if is_true(get("DRY_RUN")) else "train",
        "kedro": " ".join(kedro),
        "register-args": " ".join(register),
        "google-auth": "true" if account else "false",
        "workload-identity-provider": provider,
        "service-account": account,
        "project": get("PROJECT_ID", ""),
    }
    plan = (
        f"plan: (cd {directory} && {' '.join(kedro)}) && "
        f"python {get('SCRIPTS', '')}/register_model.py {' '.join(register)}"
    )
    return StepResult(outputs, log=[line, plan])


def _google(env: Mapping[str, str]) -> tuple[str, str, str]:
    """(provider, account, log line): Google only when a training service account is
    configured; the shared provider (and the deployer's variable) alone are no reason to
    authenticate."""
    account, provider = env.get("SERVICE_ACCOUNT", ""), env.get("WORKLOAD_IDENTITY_PROVIDER", "")
    if not account:
        return (
            "",
            "",
            "google: no authentication (no GCP_TRAINING_SERVICE_ACCOUNT: set it when the catalog "
            "reads gs:// or MLflow stores artifacts in a bucket)",
        )
    if not EMAIL.match(account):
        raise StepRefused(
            f"the training service account must be an email, got '{account}' "
            "(GCP_TRAINING_SERVICE_ACCOUNT or the service-account input)"
        )
    if account == env.get("DEPLOYER_SERVICE_ACCOUNT", ""):
        raise StepRefused(
            f"training must not run as the deployer ({account}, GCP_SERVICE_ACCOUNT): set "
            f"GCP_TRAINING_SERVICE_ACCOUNT to the training service account ({SETUP})"
        )
    if not provider:
        raise StepRefused(
            f"the training service account {account} needs a workload identity provider: set "
            f"GCP_WORKLOAD_IDENTITY_PROVIDER or the workload-identity-provider input ({SETUP})"
        )
    return provider, account, f"google: authenticate as {account} through {provider}"


def training_run(env: Mapping[str, str]) -> StepResult:
    """``run-id``, ``model-version`` and ``f1`` of ``$TRAINING_RUN`` (``kedro run``'s record)."""
    path = Path(env.get("TRAINING_RUN", ""))
    run = read_document(path, "the training record", StepRefused)
    try:
        outputs = {
            "run-id": str(run["run_id"]),
            "model-version": str(run["model_version"]),
            "f1": str(run["metrics"]["f1"]),
        }
    except (KeyError, TypeError) as err:
        raise StepRefused(
            f"{path} is not a training record (run_id, model_version, metrics.f1): {err!r}"
        ) from None
    line = f"training run {outputs['run-id']}: version {outputs['model-version']}"
    return StepResult(outputs, log=[f"{line}, test F1 {outputs['f1']}"])


def result(env: Mapping[str, str]) -> StepResult:
    """The workflow's outputs and the job summary, from what the steps did."""
    get = env.get
    if get("MODE") == "dry-run":
        decision, promoted = "dry-run", "false"
    else:
        reached = get("REGISTER_OUTCOME") or "not reached"
        decision = get("DECISION") or f"training or promotion failed ({reached})"
        promoted = get("PROMOTED") or "false"
    version = get("MODEL_VERSION") or get("RUN_VERSION", "")
    outputs = {
        "model-version": version,
        "run-id": get("RUN_ID", ""),
        "f1": get("RUN_F1", ""),
        "promoted": promoted,
        "decision": decision,
    }
    headline = "promoted" if promoted == "true" else "not promoted"
    champion = get("CHAMPION_F1")
    rows = [
        (
            "Environment",
            f"`{get('ENVIRONMENT', '')}` (alias `{get('MODEL_NAME', '')}@{get('ALIAS', '')}`)",
        ),
        ("Code", f"`{get('GIT_SHA', '')}`"),
        ("MLflow run", f"`{get('RUN_ID') or '-'}`"),
        ("Model version", version or "-"),
        ("Test F1", (get("RUN_F1") or "-") + (f" (alias holder: {champion})" if champion else "")),
        ("Decision", f"**{decision}**"),
    ]
    if get("MODE") == "dry-run":
        plan = f"`{get('PLAN_KEDRO', '')}` then `register_model.py {get('PLAN_REGISTER', '')}`"
        rows.append(("Would run", plan))
    table = "".join(f"| {key} | {value} |\n" for key, value in rows)
    summary = f"## Training: {get('ENVIRONMENT') or '?'} - {headline}\n\n| | |\n|---|---|\n{table}"
    return StepResult(outputs, log=[f"decision: {decision}"], summary=summary)


STEPS = {"settings": settings, "training-run": training_run, "result": result}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``scripts/train_steps.py settings|training-run|result``)."""
    return run_steps("train_steps.py", "train", STEPS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
