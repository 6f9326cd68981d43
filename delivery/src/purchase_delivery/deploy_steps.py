"""The steps of ``deploy-api.yml`` that decide and report: ``settings`` and ``result``.

``settings`` checks the inputs and the GitHub environment's declarations and plans the run:
the mode (``build``, ``rollback`` to a pushed image, ``revision``: a rollback to an existing
revision, or ``dry-run``), the image reference, the model URI, the
identity, and the smoke request (the caller's file, or the contract's example session). It
refuses with a message naming the variable or input to set. ``result`` turns what the steps
did into the workflow's outputs and the job summary. Both read the step's environment
(names as in the workflow's ``env:``); standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from purchase_contract.features import example_session_json
from purchase_contract.images import image_path, image_reference, registry_host
from purchase_contract.model_dir import alias_uri, version_uri
from purchase_delivery.trigger_plan import FULL_SHA, REVISION
from purchase_delivery.workflow_step import StepRefused, StepResult, is_true, run_steps

VERSION = re.compile(r"^[0-9]+$")
SETUP = "docs/gcp-setup.md"


def settings(env: Mapping[str, str]) -> StepResult:
    """The plan of one deploy, or :class:`StepRefused`."""
    get = env.get
    image_tag, model_version = get("IMAGE_TAG", ""), get("MODEL_VERSION", "")
    revision = get("REVISION", "")
    mode = "rollback" if image_tag else ("revision" if revision else "build")
    mode = "dry-run" if is_true(get("DRY_RUN")) else mode
    _check_versions(image_tag, revision, model_version)
    _check_declared_service(env)
    project = get("PROJECT_ID") or get("CLOUDSDK_CORE_PROJECT", "")
    if mode != "dry-run":
        _check_identity(env, project)
    registry = registry_host(get("REGION", ""), get("REGISTRY", ""))
    # A revision's code is its image's, not the checked-out configuration's.
    tag = "" if revision else (image_tag or get("GIT_SHA", ""))
    # A dry run may have no project: the plan shows where it goes.
    path = image_path(
        registry, project or "PROJECT", get("ARTIFACT_REPOSITORY", ""), get("IMAGE_NAME", "")
    )
    # A revision's image is the one it was deployed with (the deploy action reads it).
    image = "" if revision else image_reference(path, tag)
    name = get("MODEL_NAME", "")
    model_uri = (
        version_uri(name, model_version) if model_version else alias_uri(name, get("ALIAS", ""))
    )
    runtime = get("RUNTIME_SERVICE_ACCOUNT", "")
    outputs = {
        "mode": mode,
        "project": project,
        "registry": registry,
        "image-tag": tag,
        "image": image,
        "model-uri": model_uri,
        "workload-identity-provider": get("WORKLOAD_IDENTITY_PROVIDER", ""),
        "service-account": get("SERVICE_ACCOUNT", ""),
        "revision": revision,
        # A revision is immutable: neither its account nor its environment can change.
        "flags": ""
        if revision
        else " ".join([f"--service-account={runtime}"] * bool(runtime) + [fault_flag(env)]),
        "smoke-request": str(smoke_request(env)),
    }
    target = f"revision {revision}" if revision else f"{model_uri} -> {image}"
    return StepResult(outputs, log=[f"mode {mode}: {target}"])


def _check_versions(image_tag: str, revision: str, model_version: str) -> None:
    """What to deploy: a build (of a model version, or the alias's), or one rollback."""
    if revision and (image_tag or model_version):
        raise StepRefused(
            "revision is a rollback to an existing revision, with its own image and model: "
            "give neither image-tag nor model-version with it"
        )
    if revision and not REVISION.match(revision):
        raise StepRefused(
            "revision must be a Cloud Run revision name (lowercase letters, digits and dashes, "
            f"as `gcloud run revisions list` shows it), got '{revision}'"
        )
    if image_tag and not FULL_SHA.match(image_tag):
        raise StepRefused(
            "image-tag must be a full 40-character commit SHA (the tag docker-push gives), "
            f"got '{image_tag}'"
        )
    if model_version and not VERSION.match(model_version):
        raise StepRefused(f"model-version must be a number, got '{model_version}'")


def fault_flag(env: Mapping[str, str]) -> str:
    """The revision's INJECT_FAULTS (the API_INJECT_FAULTS variable), set or removed on every
    deploy: an environment variable left over from a faulty deploy would outlive it otherwise.
    Refused where the configuration does not allow faults (production)."""
    faults = "".join((env.get("INJECT_FAULTS") or "").split())
    if not faults:
        return "--remove-env-vars=INJECT_FAULTS"
    name = env.get("ENVIRONMENT", "")
    if not is_true(env.get("ALLOW_FAULTS")):
        raise StepRefused(
            f"the API_INJECT_FAULTS variable is set ({faults}), but environment {name} does not "
            f"allow fault injection (allow_faults in [tool.purchase-predict.environments.{name}]):"
            " refusing to deploy"
        )
    # gcloud's alternate delimiter (^|^): the faults' own commas stay in the value.
    return f"--update-env-vars=^|^INJECT_FAULTS={faults}"


def _check_declared_service(env: Mapping[str, str]) -> None:
    """The checked-out code names the service; a push can edit it, so it must agree with the
    service the GitHub environment declares (docs/workflows.md)."""
    declared, service, name = (
        env.get("DECLARED_SERVICE", ""),
        env.get("SERVICE", ""),
        env.get("ENVIRONMENT", ""),
    )
    if declared and declared != service:
        raise StepRefused(
            f"the code maps environment {name} to the Cloud Run service '{service}', but the "
            f"GitHub environment {name} declares CLOUD_RUN_SERVICE='{declared}': refusing to deploy"
        )


def _check_identity(env: Mapping[str, str], project: str) -> None:
    """A real deploy needs the project, the identity, and the environment's declarations."""
    name = env.get("ENVIRONMENT", "")
    required = [
        (project, "set the GCP_PROJECT_ID variable or the gcp-project-id input"),
        (
            env.get("WORKLOAD_IDENTITY_PROVIDER"),
            f"set the GCP_WORKLOAD_IDENTITY_PROVIDER variable or the workload-identity-provider input ({SETUP})",
        ),
        (
            env.get("SERVICE_ACCOUNT"),
            f"set the GCP_SERVICE_ACCOUNT variable or the service-account input ({SETUP})",
        ),
        (
            env.get("DECLARED_SERVICE"),
            f"set the variable CLOUD_RUN_SERVICE={env.get('SERVICE', '')} on the GitHub environment "
            f"{name}: the service it may deploy to ({SETUP})",
        ),
        (
            env.get("RUNTIME_SERVICE_ACCOUNT"),
            f"set the CLOUD_RUN_SERVICE_ACCOUNT variable (on the GitHub environment {name}) or the "
            "runtime-service-account input: the deployer may act only as that account, not as the "
            f"default compute one ({SETUP})",
        ),
    ]
    for value, message in required:
        if not value:
            raise StepRefused(message)


def smoke_request(env: Mapping[str, str]) -> Path:
    """The body POSTed to ``/predict`` by the smoke test: ``SMOKE_REQUEST`` when given (a file of
    the checkout, checked by actions/check-layout), else the contract's example session written
    to ``$RUNNER_TEMP`` (the working directory outside a runner)."""
    if given := env.get("SMOKE_REQUEST", ""):
        return Path(given)
    path = Path(env.get("RUNNER_TEMP") or ".") / "smoke-request.json"
    path.write_text(example_session_json(), encoding="utf-8")
    return path.resolve()


def decision(env: Mapping[str, str]) -> str:
    """``dry-run``, ``deployed``, ``smoke-test-failed``, ``sample-failed``, ``rolled-back`` or
    ``failed``."""
    smoke, sample = env.get("SMOKE_RESULT", ""), env.get("SAMPLE_RESULT", "")
    if env.get("MODE") == "dry-run":
        return "dry-run"
    if env.get("DEPLOY_OUTCOME") == "success":
        return "deployed"
    if smoke and smoke != "passed":
        return "smoke-test-failed"
    if sample and sample not in ("passed", "skipped"):
        return "sample-failed"
    return "rolled-back" if env.get("ROLLOUT_RESULT", "").startswith("rolled-back") else "failed"


def result(env: Mapping[str, str]) -> StepResult:
    """The workflow's outputs and the job summary, from what the steps did."""
    get = env.get
    outcome = decision(env)
    outputs = {
        "decision": outcome,
        "url": get("URL", ""),
        "tag-url": get("TAG_URL", ""),
        "revision": get("REVISION", ""),
        "image": get("IMAGE", ""),
        "digest": get("DIGEST", ""),
        "model-version": get("MODEL_VERSION", ""),
    }
    return StepResult(outputs, log=[f"decision: {outcome}"], summary=summary(env, outcome))


def summary(env: Mapping[str, str], outcome: str) -> str:
    """The job summary's Markdown table."""
    get = env.get
    service, region = get("SERVICE", ""), get("REGION", "")
    # The revision that served before a successful switch: untagged now, but kept.
    rollback = "-"
    if outcome == "deployed" and (previous := get("PREVIOUS_REVISION")):
        command = f"gcloud run services update-traffic {service} --region {region} --to-revisions {previous}=100"
        rollback = f"`{previous}` (`{command}`)"
    if get("MODE") == "rollback":
        model = "rollback: the model baked into that image"
    elif get("MODE") == "revision":
        model = (
            f"rollback to the revision `{get('TO_REVISION', '')}`: the model baked into its image"
        )
    else:
        f1, run = get("MODEL_F1"), get("MODEL_RUN")
        model = (
            f"`{get('MODEL_URI', '')}` -> version {get('MODEL_VERSION') or '?'}"
            + (f", test F1 {f1}" if f1 else "")
            + (f" (MLflow run `{run}`)" if run else "")
        )
    smoke = get("SMOKE_RESULT")
    rows = [
        ("Environment", f"`{get('ENVIRONMENT', '')}` (Cloud Run `{service}`, {region})"),
        ("Code", f"`{get('GIT_SHA')}`" if get("GIT_SHA") else "- (the revision's image)"),
        ("Model", model),
        ("Image", f"`{get('IMAGE', '')}`"),
        ("Revision", f"`{get('REVISION') or '-'}` (tag URL {get('TAG_URL') or '-'})"),
        ("Service URL", get("URL") or "-"),
        ("Traffic before", get("PREVIOUS_TRAFFIC") or "-"),
        ("Rollback target", rollback),
        ("Tags removed", get("REMOVED_TAGS") or "-"),
        ("Reference sample", get("SAMPLE_RESULT") or "-"),
        (
            "Rollout",
            " - ".join(filter(None, [get("ROLLOUT_RESULT"), get("ROLLOUT_REPORT")])) or "-",
        ),
        ("Decision", f"**{outcome}**" + (f" (smoke test: {smoke})" if smoke else "")),
    ]
    table = "".join(f"| {key} | {value} |\n" for key, value in rows)
    return f"## API deploy: {get('ENVIRONMENT') or '?'} - {outcome}\n\n| | |\n|---|---|\n{table}"


STEPS = {"settings": settings, "result": result}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (``scripts/deploy_steps.py settings|result``)."""
    return run_steps("deploy_steps.py", "deploy-api", STEPS, argv)


if __name__ == "__main__":
    raise SystemExit(main())
