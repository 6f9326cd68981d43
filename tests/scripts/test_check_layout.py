"""scripts/check_layout.py: the layout the reusable workflows read from a checkout.

The repository's own layout passes; each missing piece gives one ``caller layout`` error naming
the path, all at once, and exit status 1. Kedro's own rule for a missing environment directory
(``OmegaConfigLoader``: "Given configuration path either does not exist or is not a valid
directory") is why ``conf/<kedro-env>`` is required.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from purchase_delivery import check_layout

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of what the workflows read from this repository, as the working directory."""
    shutil.copy2(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    api = tmp_path / "purchase_predict_api"
    api.mkdir()
    shutil.copy2(REPO_ROOT / "purchase_predict_api" / "Dockerfile", api / "Dockerfile")
    (tmp_path / "smoke.json").write_text('{"product_id": 1}')
    kedro = tmp_path / "purchase_predict"
    kedro.mkdir()
    shutil.copy2(REPO_ROOT / "purchase_predict" / "pyproject.toml", kedro / "pyproject.toml")
    shutil.copytree(REPO_ROOT / "purchase_predict" / "conf", kedro / "conf")
    monkeypatch.chdir(tmp_path)
    return tmp_path


ALL = [
    "--config",
    "pyproject.toml",
    "--api-directory",
    "purchase_predict_api",
    "--smoke-request",
    "smoke.json",
    "--project-directory",
    "purchase_predict",
]


def _errors(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("::error title=caller layout::")]


def test_this_repositorys_layout_passes(checkout: Path, capsys: pytest.CaptureFixture) -> None:
    assert check_layout.main(ALL) == 0
    out = capsys.readouterr().out
    assert out.startswith("layout ok: config pyproject.toml, API project purchase_predict_api")
    assert "::warning" not in out


@pytest.mark.parametrize(
    ("remove", "message"),
    [
        ("smoke.json", "smoke-request smoke.json is missing"),
        ("purchase_predict_api/Dockerfile", "purchase_predict_api/Dockerfile is missing"),
        ("purchase_predict_api", "api-directory purchase_predict_api is not a directory"),
        ("purchase_predict/pyproject.toml", "purchase_predict/pyproject.toml is missing"),
        ("purchase_predict/conf/base", "purchase_predict/conf/base is missing"),
        ("purchase_predict", "project-directory purchase_predict is not a directory"),
        ("pyproject.toml", "config pyproject.toml does not exist"),
    ],
)
def test_each_missing_piece_is_named(
    checkout: Path, capsys: pytest.CaptureFixture, remove: str, message: str
) -> None:
    target = checkout / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert check_layout.main(ALL) == 1
    errors = _errors(capsys.readouterr().out)
    assert len(errors) == 1 and message in errors[0], errors
    assert "docs/workflows.md" in errors[0]


def test_every_problem_is_reported_at_once(checkout: Path, capsys: pytest.CaptureFixture) -> None:
    (checkout / "smoke.json").unlink()
    (checkout / "purchase_predict_api" / "Dockerfile").unlink()
    shutil.rmtree(checkout / "purchase_predict" / "conf")
    assert check_layout.main(ALL) == 1
    assert len(_errors(capsys.readouterr().out)) == 3


def test_a_rollback_needs_no_dockerfile(checkout: Path) -> None:
    (checkout / "purchase_predict_api" / "Dockerfile").unlink()
    assert check_layout.main(["--api-directory", "purchase_predict_api", "--no-dockerfile"]) == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [("[1, 2]", "must be a JSON object"), ("{not json", "is not JSON")],
)
def test_the_smoke_request_is_a_json_object(
    checkout: Path, capsys: pytest.CaptureFixture, body: str, message: str
) -> None:
    (checkout / "smoke.json").write_text(body)
    assert check_layout.main(["--smoke-request", "smoke.json"]) == 1
    assert message in capsys.readouterr().out


def test_without_a_smoke_request_the_api_project_needs_only_its_dockerfile(checkout: Path) -> None:
    # The deploy then sends the contract's example session (deploy_steps.smoke_request).
    assert check_layout.main(["--api-directory", "purchase_predict_api"]) == 0


def test_a_config_without_experiment_name_is_refused(
    checkout: Path, capsys: pytest.CaptureFixture
) -> None:
    path = checkout / "pyproject.toml"
    text = path.read_text()
    assert "experiment_name" in text
    path.write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("experiment_name"))
    )
    assert check_layout.main(["--config", "pyproject.toml"]) == 1
    assert "experiment_name must be a non-empty string" in capsys.readouterr().out


def test_a_kedro_project_needs_tool_kedro_and_its_environment(
    checkout: Path, capsys: pytest.CaptureFixture
) -> None:
    (checkout / "purchase_predict" / "pyproject.toml").write_text('[project]\nname = "x"\n')
    # An environment the project does not have (conf/cloud and conf/spark exist).
    args = ["--project-directory", "purchase_predict", "--kedro-env", "nowhere"]
    assert check_layout.main(args) == 1
    errors = _errors(capsys.readouterr().out)
    assert any("has no [tool.kedro] table" in e for e in errors), errors
    assert any("purchase_predict/conf/nowhere is missing" in e for e in errors), errors


def test_a_catalog_without_the_training_record_is_a_warning(
    checkout: Path, capsys: pytest.CaptureFixture
) -> None:
    for catalog in (checkout / "purchase_predict" / "conf" / "base").glob("catalog*.yml"):
        catalog.write_text(catalog.read_text().replace("training_run.json", "run.json"))
    assert check_layout.main(["--project-directory", "purchase_predict"]) == 0
    assert "::warning title=caller layout::" in capsys.readouterr().out
