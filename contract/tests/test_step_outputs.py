"""Step outputs: kebab-case keys, one line each, written where GitHub Actions reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

from purchase_contract import step_outputs


def test_outputs_go_to_stdout_and_github_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    output, summary = tmp_path / "output", tmp_path / "summary"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    step_outputs.write_outputs({"model-version": "3", "run-id": "abc"})
    step_outputs.append_summary("Baked **3**")
    assert capsys.readouterr().out == "model-version=3\nrun-id=abc\n"
    assert output.read_text() == "model-version=3\nrun-id=abc\n"
    assert summary.read_text() == "Baked **3**\n"


def test_outside_github_actions_only_stdout_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.chdir(tmp_path)
    step_outputs.write_outputs({"model-dir": "model"})
    step_outputs.append_summary("nothing")
    assert capsys.readouterr().out == "model-dir=model\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"model_version": "3"}, "'model_version' is not kebab-case"),
        ({"Model-Version": "3"}, "is not kebab-case"),
        ({"summary": "two\nlines"}, "summary holds a line break"),
    ],
)
def test_a_bad_key_or_a_multi_line_value_is_refused(outputs: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        step_outputs.format_outputs(outputs)
