"""The registration step logs the version's compiled form with it when the API is installed.

This suite's environment has no API package: what the step does then is tested for real, and
what it does with the API is tested against a stand-in of ``app.model.publish`` (the API's own
tests publish to a real ``mlflow server`` and fetch it back, in purchase_predict_api/tests).
"""

from __future__ import annotations

import sys
import types

import pytest

from purchase_delivery import register_model
from purchase_delivery.compiled_form import log_compiled_form


@pytest.fixture
def stand_in_publish(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """``app.model.publish`` as a module recording its calls; the calls."""
    calls: list[tuple] = []

    def publish_compiled_form(name: str, version: str, *, tracking_uri: str) -> list[str]:
        calls.append((name, version, tracking_uri))
        if name == "broken":
            raise RuntimeError("the server refused\nthe upload")
        return [] if name == "not-a-pipeline" else ["serving_compiled.json", "serving_model.json"]

    module = types.ModuleType("app.model.publish")
    module.publish_compiled_form = publish_compiled_form
    monkeypatch.setitem(sys.modules, "app.model.publish", module)
    return calls


def test_without_the_api_package_the_version_goes_without_and_the_note_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "app.model.publish", None)  # import fails, as when absent

    note = log_compiled_form("purchase_predict", "3", "http://mlflow")

    assert note.startswith("No compiled form logged with version 3: the API package is not ")
    assert note.endswith("fetch mode reads its MLflow format.")


def test_with_the_api_package_the_compiled_form_is_logged(stand_in_publish: list) -> None:
    note = log_compiled_form("purchase_predict", "3", "http://mlflow")

    assert stand_in_publish == [("purchase_predict", "3", "http://mlflow")]
    assert note == (
        "Compiled form (`serving_compiled.json`, `serving_model.json`) logged with version 3."
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "broken",
            "No compiled form logged with version 3: RuntimeError: the server refused the upload.",
        ),
        ("not-a-pipeline", "No compiled form logged with version 3: not the training pipeline."),
    ],
)
def test_a_failed_or_empty_publication_never_fails_the_registration(
    stand_in_publish: list, name: str, expected: str
) -> None:
    assert log_compiled_form(name, "3", "http://mlflow") == expected


def test_the_promotion_summary_carries_the_note(
    registry, stand_in_publish: list, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    good = registry.runs["good"]

    status = register_model.main(["--run-id", good.run_id, "--alias", "compiled-form-test"])

    out = capsys.readouterr().out
    assert status == 0
    assert [call[1] for call in stand_in_publish] == [good.model_version]
    assert (
        f"- Compiled form (`serving_compiled.json`, `serving_model.json`) logged with "
        f"version {good.model_version}." in out
    )
