"""Training's Google identity (train.yml): its own service account, only when it needs Google.

A training job runs third-party packages and Kedro code for up to two hours. It must never hold
the deployer's credentials (Cloud Run on the environment's service, image pushes, actAs on the
runtime account), and it needs Google at all only when its catalog reads ``gs://`` data or MLflow
stores artifacts in a bucket. So train.yml impersonates ``GCP_TRAINING_SERVICE_ACCOUNT`` (or its
``service-account`` input) and nothing else; without one it does not authenticate, even when the
deployer's ``GCP_SERVICE_ACCOUNT`` and the shared provider are set (docs/gcp-setup.md, "Who may
do what": the Workload Identity bindings let train.yml jobs impersonate only the training account).

Dry runs through training.yml, as a push to ``staging``: the Settings step's plan is what the
authentication step would use.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from purchase_rig.act import ActRun

Act = Callable[..., ActRun]

PROVIDER = (
    "projects/123456789/locations/global/workloadIdentityPools/github/providers/purchase-predict"
)
DEPLOYER = "deployer-staging@my-project.iam.gserviceaccount.com"
TRAINER = "trainer@my-project.iam.gserviceaccount.com"
JOB = "Train (staging)"


def _plan(run: ActRun) -> dict[str, str]:
    assert run.returncode == 0, run.explain()
    assert run.job(JOB) == "success", run.explain()
    return run.outputs(JOB, step="settings")


def _train(act: Act, **variables: str) -> ActRun:
    return act("push", "training.yml", {"ref": "refs/heads/staging"}, variables=variables)


def test_with_only_the_deployer_configured_training_does_not_authenticate(act: Act) -> None:
    run = _train(act, GCP_WORKLOAD_IDENTITY_PROVIDER=PROVIDER, GCP_SERVICE_ACCOUNT=DEPLOYER)
    plan = _plan(run)
    assert plan["google-auth"] == "false"
    assert DEPLOYER not in plan.values()
    assert DEPLOYER not in "\n".join(run.lines(JOB))
    assert any(
        "google: no authentication" in line and "GCP_TRAINING_SERVICE_ACCOUNT" in line
        for line in run.lines(JOB)
    ), run.explain()


def test_training_impersonates_its_own_service_account(act: Act) -> None:
    run = _train(
        act,
        GCP_WORKLOAD_IDENTITY_PROVIDER=PROVIDER,
        GCP_SERVICE_ACCOUNT=DEPLOYER,
        GCP_TRAINING_SERVICE_ACCOUNT=TRAINER,
    )
    plan = _plan(run)
    assert plan["google-auth"] == "true"
    assert plan["service-account"] == TRAINER
    assert plan["workload-identity-provider"] == PROVIDER
    assert any(f"google: authenticate as {TRAINER}" in line for line in run.lines(JOB))


def test_without_any_google_settings_training_does_not_authenticate(act: Act) -> None:
    plan = _plan(_train(act))
    assert plan["google-auth"] == "false"
    assert plan["service-account"] == ""


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"GCP_TRAINING_SERVICE_ACCOUNT": TRAINER},
            f"the training service account {TRAINER} needs a workload identity provider",
        ),
        (
            {
                "GCP_WORKLOAD_IDENTITY_PROVIDER": PROVIDER,
                "GCP_SERVICE_ACCOUNT": DEPLOYER,
                "GCP_TRAINING_SERVICE_ACCOUNT": DEPLOYER,
            },
            f"training must not run as the deployer ({DEPLOYER}, GCP_SERVICE_ACCOUNT)",
        ),
        (
            {"GCP_WORKLOAD_IDENTITY_PROVIDER": PROVIDER, "GCP_TRAINING_SERVICE_ACCOUNT": "trainer"},
            "the training service account must be an email, got 'trainer'",
        ),
    ],
)
def test_a_bad_training_identity_fails_clearly(
    act: Act, variables: dict[str, str], message: str
) -> None:
    run = _train(act, **variables)
    assert run.returncode != 0
    assert run.job(JOB) == "failure"
    assert message in run.explain()
