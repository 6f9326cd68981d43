"""scripts/branch_env.py: every ref form, event payloads, outputs, and configuration errors.

Expected values are read from the root pyproject with tomllib, independently of the scripts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from purchase_delivery import branch_env

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "branch_env.py"
SETTINGS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["purchase-predict"]
ENVIRONMENTS = SETTINGS["environments"]
ENV_NAMES = sorted(ENVIRONMENTS)
UNMAPPED_BRANCH = "feature/new-checkout-flow"


def expected_outputs(env_name: str, branch: str | None = None) -> dict[str, str]:
    """The key=value lines the config implies for ``env_name`` (kebab-case keys)."""
    table = ENVIRONMENTS[env_name]
    keys = "alias service region artifact-repository min-instances max-instances memory cpu"
    return {
        "deploy": "true",
        "environment": env_name,
        "branch": branch or table["branch"],
        **{key: str(table[key.replace("-", "_")]) for key in [*keys.split(), "concurrency"]},
        # The rollout's settings as the workflows read them (docs/workflows.md).
        "traffic-steps": ",".join(str(s) for s in table["traffic_steps"]),
        "observe-seconds": str(table["observe_seconds"]),
        "metrics-delay-seconds": str(table["metrics_delay_seconds"]),
        "allow-faults": str(table["allow_faults"]).lower(),
        "model-name": SETTINGS["model_name"],
        "image-name": SETTINGS["image_name"],
        "gate-f1-tolerance": str(float(SETTINGS["gate_f1_tolerance"])),
    }


def parse_lines(text: str) -> dict[str, str]:
    """``key=value`` lines to a dict; fails on anything else."""
    pairs = [line.split("=", 1) for line in text.splitlines() if line]
    assert all(len(pair) == 2 for pair in pairs), text
    return dict(pairs)


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., tuple[int, str, str]]:
    """Call branch_env.main in-process: (exit status, stdout, stderr)."""

    def run(*argv: str) -> tuple[int, str, str]:
        status = branch_env.main(list(argv))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


def event_file(tmp_path: Path, payload: dict[str, Any]) -> str:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(payload))
    return str(path)


# --- the mapping table: every ref form for every configured environment ---------------------


def _ref_forms(env: str) -> list[tuple[str, Callable[[Path], list[str]]]]:
    branch = ENVIRONMENTS[env]["branch"]
    return [
        ("refs/heads", lambda _: [f"refs/heads/{branch}"]),
        ("bare branch", lambda _: [branch]),
        (
            "push event",
            lambda tmp: ["--event-path", event_file(tmp, {"ref": f"refs/heads/{branch}"})],
        ),
        (
            "workflow_run head_branch",
            lambda tmp: [
                "--event-path",
                event_file(tmp, {"workflow_run": {"head_branch": branch, "conclusion": "success"}}),
            ],
        ),
        (
            "repository_dispatch branch",
            lambda tmp: [
                "--event-path",
                event_file(tmp, {"action": "deploy", "client_payload": {"branch": branch}}),
            ],
        ),
        (
            "repository_dispatch ref",
            lambda tmp: [
                "--event-path",
                event_file(tmp, {"client_payload": {"ref": f"refs/heads/{branch}"}}),
            ],
        ),
        (
            "repository_dispatch environment",
            lambda tmp: ["--event-path", event_file(tmp, {"client_payload": {"environment": env}})],
        ),
        (
            "workflow_dispatch environment",
            lambda tmp: [
                "--event-path",
                event_file(tmp, {"ref": "refs/heads/other", "inputs": {"environment": env}}),
            ],
        ),
        ("environment name", lambda _: ["--environment", env]),
    ]


@pytest.mark.parametrize(
    ("env", "form", "argv"),
    [(env, form, argv) for env in ENV_NAMES for form, argv in _ref_forms(env)],
    ids=[f"{env}-{form}" for env in ENV_NAMES for form, _ in _ref_forms(env)],
)
def test_every_ref_form_maps_to_the_configured_environment(
    env: str, form: str, argv: Callable[[Path], list[str]], tmp_path: Path, run_cli
) -> None:
    status, out, err = run_cli(*argv(tmp_path))

    assert (status, err) == (0, "")
    assert parse_lines(out) == expected_outputs(env)


def test_workflow_dispatch_without_environment_uses_its_ref(tmp_path: Path, run_cli) -> None:
    env = ENV_NAMES[0]
    payload = {"ref": f"refs/heads/{ENVIRONMENTS[env]['branch']}", "inputs": {"environment": ""}}

    status, out, _ = run_cli("--event-path", event_file(tmp_path, payload))

    assert status == 0
    assert parse_lines(out)["environment"] == env


# --- branches without an environment ------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv_of", "reason"),
    [
        (lambda _: [UNMAPPED_BRANCH], f"branch {UNMAPPED_BRANCH!r} is not mapped"),
        (lambda _: [f"refs/heads/{UNMAPPED_BRANCH}"], "is not mapped"),
        (lambda _: ["refs/tags/v1.2.0"], "refs/tags/v1.2.0 is not a branch"),
        (lambda _: ["refs/pull/12/merge"], "is not a branch"),
        (
            lambda tmp: [
                "--event-path",
                event_file(tmp, {"workflow_run": {"head_branch": UNMAPPED_BRANCH}}),
            ],
            "is not mapped",
        ),
        (
            lambda tmp: [
                "--event-path",
                event_file(tmp, {"pull_request": {"head": {"ref": "x"}}, "number": 3}),
            ],
            "pull_request events never deploy",
        ),
    ],
    ids=["bare", "refs-heads", "tag", "pull-ref", "workflow_run", "pull_request"],
)
def test_unmapped_refs_say_no_environment_and_succeed(
    argv_of: Callable[[Path], list[str]], reason: str, tmp_path: Path, run_cli
) -> None:
    status, out, err = run_cli(*argv_of(tmp_path))

    outputs = parse_lines(out)
    assert status == 0
    assert outputs["deploy"] == "false"
    assert outputs["environment"] == outputs["alias"] == outputs["service"] == ""
    assert outputs["model-name"] == SETTINGS["model_name"]
    assert "no environment" in err
    assert reason in err
    assert list(outputs) == list(branch_env.OUTPUT_KEYS)


def test_unmapped_branch_as_json(run_cli) -> None:
    status, out, _ = run_cli(UNMAPPED_BRANCH, "--json")

    document = json.loads(out)
    assert status == 0
    assert document["deploy"] is False
    assert document["branch"] == UNMAPPED_BRANCH
    assert document["environment"] is None
    assert document["service"] is None


def test_fallback_maps_an_unmapped_branch_to_the_fallback_environment(run_cli) -> None:
    status, out, err = run_cli(UNMAPPED_BRANCH, "--fallback")

    assert (status, err) == (0, "")
    assert parse_lines(out) == expected_outputs(
        SETTINGS["fallback_environment"], branch=UNMAPPED_BRANCH
    )


def test_fallback_keeps_a_mapped_branch(run_cli) -> None:
    env = next(name for name in ENV_NAMES if name != SETTINGS["fallback_environment"])

    status, out, _ = run_cli(ENVIRONMENTS[env]["branch"], "--fallback")

    assert status == 0
    assert parse_lines(out)["environment"] == env


# --- outputs --------------------------------------------------------------------------------


def test_json_output_has_typed_values(run_cli) -> None:
    env = ENV_NAMES[0]
    table = ENVIRONMENTS[env]

    status, out, _ = run_cli("--environment", env, "--json")

    document = json.loads(out)
    assert status == 0
    assert list(document) == list(branch_env.OUTPUT_KEYS)
    assert document["deploy"] is True
    assert document["min-instances"] == table["min_instances"]
    assert document["max-instances"] == table["max_instances"]
    assert document["concurrency"] == table["concurrency"]
    assert document["gate-f1-tolerance"] == SETTINGS["gate_f1_tolerance"]


def test_writes_github_output_when_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    github_output = tmp_path / "github_output"
    github_output.write_text("earlier=kept\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(github_output))
    env = ENV_NAMES[-1]

    status, out, _ = run_cli("--environment", env, "--json")

    written = github_output.read_text()
    assert status == 0
    assert written.startswith("earlier=kept\n")
    assert parse_lines(written.removeprefix("earlier=kept\n")) == expected_outputs(env)
    assert json.loads(out)["environment"] == env


def test_help_documents_every_output_key(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        branch_env.main(["--help"])

    help_text = capsys.readouterr().out
    assert exit_info.value.code == 0
    for key in branch_env.OUTPUT_KEYS:
        assert f"  {key}" in help_text or f", {key}" in help_text, key


def test_cli_runs_on_a_bare_interpreter_without_site_packages() -> None:
    """Workflows call it with python3 before installing anything: stdlib only, its packages from
    source as actions/resolve-environment gives them (PYTHONPATH)."""
    env = ENV_NAMES[0]
    # -S: no site-packages, so any third-party import would fail.
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    clean_env["PYTHONPATH"] = f"{REPO_ROOT / 'contract/src'}:{REPO_ROOT / 'delivery/src'}"

    result = subprocess.run(
        [sys.executable, "-S", str(SCRIPT), f"refs/heads/{ENVIRONMENTS[env]['branch']}"],
        env=clean_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert parse_lines(result.stdout) == expected_outputs(env)


# --- errors: one line, exit 2 -------------------------------------------------------------------


def _assert_one_line_error(status: int, out: str, err: str, *fragments: str) -> None:
    assert status == 2
    assert out == ""
    assert err.startswith("branch_env: error: ")
    assert err.count("\n") == 1
    for fragment in fragments:
        assert fragment in err


def test_unknown_environment_name_is_an_error(run_cli) -> None:
    status, out, err = run_cli("--environment", "prod-eu")

    _assert_one_line_error(status, out, err, "unknown environment 'prod-eu'", *ENV_NAMES)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"client_payload": {"environment": "qa"}}, "unknown environment 'qa'"),
        ({"inputs": {"environment": "qa"}, "ref": "refs/heads/x"}, "unknown environment 'qa'"),
        ({"client_payload": {}}, "client_payload has no environment, branch or ref"),
        ({"workflow_run": {"head_branch": None}}, "workflow_run.head_branch must be"),
        ({"schedule": "0 3 * * *"}, "not a push, workflow_run"),
        (["not", "an", "object"], "is not a JSON object"),
    ],
    ids=["dispatch-env", "workflow_dispatch-env", "dispatch-empty", "run-null", "schedule", "list"],
)
def test_bad_event_payloads_are_errors(
    payload: Any, fragment: str, tmp_path: Path, run_cli
) -> None:
    status, out, err = run_cli("--event-path", event_file(tmp_path, payload))

    _assert_one_line_error(status, out, err, fragment)


def test_unreadable_event_payload_names_the_file(tmp_path: Path, run_cli) -> None:
    broken = tmp_path / "event.json"
    broken.write_text("{not json")

    status, out, err = run_cli("--event-path", str(broken))
    missing_status, _, missing_err = run_cli("--event-path", str(tmp_path / "absent.json"))

    _assert_one_line_error(status, out, err, str(broken), "is not JSON")
    assert missing_status == 2
    assert "absent.json" in missing_err


@pytest.mark.parametrize(
    "argv", [[], ["staging-ish", "--environment", "x"], ["refs/heads/"], ["  "]]
)
def test_needs_exactly_one_usable_input(argv: list[str], run_cli) -> None:
    status, out, err = run_cli(*argv)

    _assert_one_line_error(status, out, err)


# --- configuration errors -------------------------------------------------------------------


def _two_envs_sharing(field: str) -> dict[str, Any]:
    first, second = ENV_NAMES[:2]
    environments = {name: dict(table) for name, table in ENVIRONMENTS.items()}
    environments[second][field] = environments[first][field]
    return {"environments": environments}


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (_two_envs_sharing("branch"), "share branch"),
        (_two_envs_sharing("alias"), "share alias"),
        ({"fallback_environment": "nowhere"}, "fallback_environment 'nowhere'"),
        ({"gate_f1_tolerance": -0.1}, "gate_f1_tolerance must be a number in [0, 1]"),
        ({"model_name": ""}, "model_name must be a non-empty string"),
        ({"image_name": "bad image"}, "image_name 'bad image' has characters"),
        (
            {
                "environments": {
                    n: {**t, "min_instances": 5, "max_instances": 2}
                    for n, t in ENVIRONMENTS.items()
                }
            },
            "min_instances 5 > max_instances 2",
        ),
        (
            {
                "environments": {
                    n: {k: v for k, v in t.items() if k != "service"}
                    for n, t in ENVIRONMENTS.items()
                }
            },
            "service must be a non-empty string",
        ),
        ({"environments": {}}, "has no [tool.purchase-predict.environments.<name>] tables"),
    ],
    ids=[
        "dup-branch",
        "dup-alias",
        "fallback",
        "tolerance",
        "model-name",
        "image-name",
        "instances",
        "missing-service",
        "no-envs",
    ],
)
def test_invalid_configuration_is_a_one_line_error(
    overrides: dict[str, Any], fragment: str, project_config, run_cli
) -> None:
    project_config(**overrides)

    status, out, err = run_cli("--environment", ENV_NAMES[0])

    _assert_one_line_error(status, out, err, fragment, "pyproject.toml")


def test_config_file_without_the_table_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:
    other = tmp_path / "pyproject.toml"
    other.write_text('[project]\nname = "elsewhere"\n')
    monkeypatch.setenv("PURCHASE_PREDICT_CONFIG", str(other))

    status, out, err = run_cli(ENV_NAMES[0])

    _assert_one_line_error(status, out, err, f"{other} has no [tool.purchase-predict] table")


def test_config_override_is_read(project_config, run_cli) -> None:
    environments = {name: dict(table) for name, table in ENVIRONMENTS.items()}
    env = ENV_NAMES[0]
    environments[env]["branch"] = "release/next"

    project_config(environments=environments, model_name="other_model")
    status, out, _ = run_cli("refs/heads/release/next")

    outputs = parse_lines(out)
    assert status == 0
    assert outputs["environment"] == env
    assert outputs["model-name"] == "other_model"


# --- as actions/resolve-environment (--action ROOT) -------------------------------------------


@pytest.mark.parametrize(
    ("inputs", "environment"),
    [
        ({"ENVIRONMENT_NAME": "production", "REF": "refs/heads/staging"}, "production"),
        ({"REF": "refs/heads/staging", "EVENT_PATH": "/nowhere.json"}, "staging"),
    ],
    ids=["environment-first", "then-ref"],
)
def test_the_action_reads_its_inputs_in_order_and_adds_the_paths(
    run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, inputs, environment
) -> None:
    for name, value in inputs.items():
        monkeypatch.setenv(name, value)
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))

    status, out, err = run_cli("--action", str(REPO_ROOT))

    written = parse_lines(output.read_text())
    assert (status, err) == (0, ""), err
    assert written == parse_lines(out)
    assert written["environment"] == environment
    assert written["config"] == str(REPO_ROOT / "pyproject.toml")
    assert written["scripts"] == str(REPO_ROOT / "scripts")
    # The packages the step imported, so the steps after it import the same ones.
    assert written["pythonpath"] == f"{REPO_ROOT / 'contract/src'}:{REPO_ROOT / 'delivery/src'}"


def test_the_action_reads_an_event_and_a_relative_config(
    run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "pyproject.toml").write_text((REPO_ROOT / "pyproject.toml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVENT_PATH", event_file(tmp_path, {"ref": "refs/heads/master"}))
    monkeypatch.setenv("CONFIG", "pyproject.toml")

    status, out, _ = run_cli("--action", str(REPO_ROOT))

    outputs = parse_lines(out)
    assert status == 0
    assert outputs["branch"] == "master"
    assert outputs["config"] == str(tmp_path / "pyproject.toml")


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "give one of the inputs environment, ref or event-path"),
        ({"REF": "staging", "CONFIG": "/absent/pyproject.toml"}, "config /absent/pyproject.toml"),
    ],
    ids=["no-input", "no-config"],
)
def test_the_action_refuses_with_an_annotation(
    run_cli, monkeypatch: pytest.MonkeyPatch, inputs, message
) -> None:
    for name in ("ENVIRONMENT_NAME", "REF", "EVENT_PATH", "CONFIG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in inputs.items():
        monkeypatch.setenv(name, value)

    status, out, _ = run_cli("--action", str(REPO_ROOT))

    assert status == 2
    assert out.startswith(f"::error title=resolve-environment::{message}")
