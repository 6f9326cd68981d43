"""Every ``gcloud`` command of docs/gcp-setup.md (and of docs/api.md's base-image mirror) parses
with the real gcloud, offline.

The commands come from the guide itself: its ```bash blocks run, in order, in a bash whose PATH
is empty and whose ``gcloud`` is a shell function that records its arguments, so bash does the
line continuations, the variables of section 0, the quoting and the ``for`` loop exactly as for
a reader (``set -u``: a variable the guide never defines fails the test). Other commands
(``gh``, ``python3``) are not found and do nothing. Each recorded command then runs with the real
gcloud, a throwaway configuration and a placeholder access token, every API endpoint pointed
through an HTTP proxy on 127.0.0.1 that answers 403 to everything: a command whose arguments
parse sends its request and reports the stand-in's refusal; one that does not parse stops before
any request (gcloud's argument parser: exit status 2, "unrecognized arguments" / "argument
--x: ..."). Only parsing is checked: the roles and conditions themselves are the guide's reasoning.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "gcp-setup.md"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.DOTALL | re.MULTILINE)
# What the stand-in answers; seeing it in gcloud's error proves the command sent its request.
REFUSAL = "refused-by-the-gcp-setup-test"
# The APIs the guide's commands call, each sent to the proxy as plain http.
APIS = ("artifactregistry", "cloudresourcemanager", "iam", "run", "serviceusage", "storage")
# IAM API, WorkloadIdentityPool(Provider).displayName: "Cannot exceed 32 characters"; gcloud does
# not check it locally (the review, finding 8: a 40-character name reached the network).
DISPLAY_NAME_LIMIT = 32
# IAM API, projects.serviceAccounts.create accountId: 6-30 characters, [a-z]([-a-z0-9]*[a-z0-9]).
SERVICE_ACCOUNT_ID = re.compile(r"^[a-z][-a-z0-9]{4,28}[a-z0-9]$")
GCLOUD_TIMEOUT_S = 60
WORKERS = 4

pytestmark = pytest.mark.skipif(
    shutil.which("gcloud") is None,
    reason="needs the gcloud CLI (preinstalled on GitHub's ubuntu runners)",
)

# Records each call's arguments, NUL-separated, a record separator after each call; prints a
# placeholder for the guide's command substitutions (the project number).
RECORDER = r"""set -u
gcloud() {
  printf '%s\0' "$@" >> "${GCLOUD_RECORD}"
  printf '\036\0' >> "${GCLOUD_RECORD}"
  echo 123456789
}
command_not_found_handle() { return 0; }
"""


def guide_commands(text: str, work: Path) -> list[list[str]]:
    """The argument lists of every gcloud call the guide's bash blocks make, in order."""
    work.mkdir(parents=True, exist_ok=True)
    record = work / "record"
    record.write_bytes(b"")
    empty_path = work / "no-commands"
    empty_path.mkdir(exist_ok=True)
    script = RECORDER + "\n".join(BASH_BLOCK.findall(text))
    done = subprocess.run(
        ["/bin/bash", "--noprofile", "--norc", "-c", script],
        env={"PATH": str(empty_path), "HOME": str(work), "GCLOUD_RECORD": str(record)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, f"the guide's bash blocks do not run: {done.stderr}"
    commands, current = [], []
    for argument in record.read_bytes().split(b"\0")[:-1]:
        if argument == b"\x1e":
            commands.append(current)
            current = []
        else:
            current.append(argument.decode())
    return commands


@dataclass
class Outcome:
    command: list[str]
    returncode: int
    stderr: str

    @property
    def kind(self) -> str:
        """``parse-error``, ``sent`` (parsed, request refused by the stand-in), ``local`` (no
        request needed, exit 0) or ``other``."""
        if self.returncode == 2 or re.search(
            r"unrecognized arguments|^ERROR: \(gcloud[^)]*\) argument ", self.stderr, re.MULTILINE
        ):
            return "parse-error"
        if self.returncode == 0:
            return "local"
        if REFUSAL in self.stderr:
            return "sent"
        return "other"

    def explain(self) -> str:
        tail = " | ".join(self.stderr.strip().splitlines()[-4:])
        return (
            f"gcloud {' '.join(self.command)}\n    -> {self.kind} (exit {self.returncode}): {tail}"
        )


class _Refuse(BaseHTTPRequestHandler):
    """Every request, as proxy or server: 403 in Google's error format."""

    def _refuse(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps(
            {"error": {"code": 403, "message": REFUSAL, "status": "PERMISSION_DENIED"}}
        ).encode()
        self.send_response(403)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_CONNECT = _refuse

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def offline_gcloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment that aims gcloud at the refusing stand-in; nothing leaves 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    home = tmp_path_factory.mktemp("gcloud-home")
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("CLOUDSDK_", "GOOGLE_"))}
    env = {
        **inherited,
        "HOME": str(home),
        "CLOUDSDK_CORE_PROJECT": "my-project",
        "CLOUDSDK_AUTH_ACCESS_TOKEN": "placeholder-token",
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_SHOULD_PROMPT_TO_ENABLE_API": "false",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_HTTP_TIMEOUT": "10",
        "CLOUDSDK_PROXY_TYPE": "http",
        "CLOUDSDK_PROXY_ADDRESS": "127.0.0.1",
        "CLOUDSDK_PROXY_PORT": str(server.server_address[1]),
        # Plain http through the proxy: a 403 is final (apitools retries connection errors,
        # which a refused https tunnel would be, for half a minute).
        **{
            f"CLOUDSDK_API_ENDPOINT_OVERRIDES_{api.upper()}": f"http://{api}.gcp-setup.test/"
            for api in APIS
        },
    }
    try:
        yield env
    finally:
        server.shutdown()
        server.server_close()


def run_gcloud(commands: list[list[str]], env: dict[str, str], work: Path) -> list[Outcome]:
    """Each command with the real gcloud, concurrently, each with its own throwaway config."""

    def one(index: int, command: list[str]) -> Outcome:
        config = work / f"config-{index}"
        done = subprocess.run(
            ["gcloud", *command],
            env={**env, "CLOUDSDK_CONFIG": str(config)},
            capture_output=True,
            text=True,
            timeout=GCLOUD_TIMEOUT_S,
            check=False,
        )
        return Outcome(command, done.returncode, done.stderr)

    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        return list(pool.map(one, range(len(commands)), commands))


# About 1.2 s of CPU per command (31 today): 20 s on two idle cores, more on a busy machine.
@pytest.mark.slow
def test_every_gcloud_command_of_the_guide_parses(
    offline_gcloud: dict[str, str], tmp_path: Path
) -> None:
    commands = guide_commands(GUIDE.read_text(encoding="utf-8"), tmp_path / "guide")
    # Every section has commands; far fewer means the extraction broke.
    assert len(commands) >= 25, commands
    outcomes = run_gcloud(commands, offline_gcloud, tmp_path)
    bad = [outcome.explain() for outcome in outcomes if outcome.kind not in {"sent", "local"}]
    assert not bad, "\n".join(bad)
    # Only `gcloud config set` needs no request.
    assert [o.command[:2] for o in outcomes if o.kind == "local"] == [["config", "set"]]


def test_the_base_image_mirror_commands_of_the_api_guide_parse(
    offline_gcloud: dict[str, str], tmp_path: Path
) -> None:
    """docs/api.md "Pinning the base image", with the variables of gcp-setup.md section 0."""
    section_0 = next(
        b for b in BASH_BLOCK.findall(GUIDE.read_text(encoding="utf-8")) if "PROJECT_ID=" in b
    )
    api_guide = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    blocks = [section_0, *(b for b in BASH_BLOCK.findall(api_guide) if "gcloud " in b)]
    commands = guide_commands("".join(f"```bash\n{b}```\n" for b in blocks), tmp_path / "api")
    setup = guide_commands(f"```bash\n{section_0}```\n", tmp_path / "setup")
    mirror = commands[len(setup) :]
    assert any(c[:3] == ["artifacts", "repositories", "create"] for c in mirror), mirror
    outcomes = run_gcloud(mirror, offline_gcloud, tmp_path)
    bad = [outcome.explain() for outcome in outcomes if outcome.kind not in {"sent", "local"}]
    assert not bad, "\n".join(bad)


# Each mutation of the guide must be caught: the changed command no longer parses.
@pytest.mark.parametrize(
    ("original", "mutated"),
    [
        pytest.param(
            "  --workload-identity-pool=", "  --workload-identity-poool=", id="misspelled-flag"
        ),
        pytest.param(
            "  --role=roles/run.developer\n",
            "  --role=roles/run.developer --no-such-flag\n",
            id="unknown-flag",
        ),
        pytest.param(
            '  --location=global \\\n  --display-name="GitHub Actions"',
            '  --location \\\n  --display-name="GitHub Actions"',
            id="flag-without-value",
        ),
    ],
)
def test_a_command_that_does_not_parse_is_caught(
    offline_gcloud: dict[str, str], tmp_path: Path, original: str, mutated: str
) -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert original in text, "the mutation no longer matches the guide: update the test"
    before = guide_commands(text, tmp_path / "before")
    after = guide_commands(text.replace(original, mutated, 1), tmp_path / "after")
    changed = [command for command in after if command not in before]
    assert len(changed) == 1, changed
    (outcome,) = run_gcloud(changed, offline_gcloud, tmp_path)
    assert outcome.kind == "parse-error", outcome.explain()


def test_a_variable_the_guide_never_defines_fails_the_extraction(tmp_path: Path) -> None:
    text = GUIDE.read_text(encoding="utf-8").replace("${DEPLOYER_STAGING}", "${DEPLOYER_STAGIN}", 1)
    with pytest.raises(AssertionError, match="DEPLOYER_STAGIN: unbound variable"):
        guide_commands(text, tmp_path)


def _flag(command: list[str], name: str) -> str | None:
    values = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"--{name}=")]
    return values[-1] if values else None


@pytest.mark.parametrize(
    "repository",
    [
        "OWNER/purchase-predict",
        # GitHub's longest owner (39) and repository (100) names: display names must not grow.
        f"{'o' * 39}/{'r' * 100}",
    ],
)
def test_pool_and_provider_display_names_fit_the_iam_limit(tmp_path: Path, repository: str) -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert "GITHUB_REPO=OWNER/purchase-predict " in text
    text = text.replace("GITHUB_REPO=OWNER/purchase-predict ", f"GITHUB_REPO={repository} ", 1)
    federation = [
        command
        for command in guide_commands(text, tmp_path)
        if command[:2] == ["iam", "workload-identity-pools"]
        and ("create" in command[:3] or "create-oidc" in command[:4])
    ]
    assert len(federation) >= 2, federation
    for command in federation:
        name = _flag(command, "display-name")
        assert name is not None, command
        assert len(name) <= DISPLAY_NAME_LIMIT, f"{name!r} ({len(name)} characters): {command}"


def test_service_account_ids_fit_the_iam_rule(tmp_path: Path) -> None:
    created = [
        command[3]
        for command in guide_commands(GUIDE.read_text(encoding="utf-8"), tmp_path)
        if command[:3] == ["iam", "service-accounts", "create"]
    ]
    assert created
    assert [name for name in created if not SERVICE_ACCOUNT_ID.match(name)] == []


# --- The least-privilege shape of the guide (its "Who may do what"), on the expanded commands ---


def _bindings(tmp_path: Path) -> list[list[str]]:
    commands = guide_commands(GUIDE.read_text(encoding="utf-8"), tmp_path)
    return [command for command in commands if "add-iam-policy-binding" in command]


def test_no_role_is_granted_on_the_whole_project_but_reading_metrics(tmp_path: Path) -> None:
    # Cloud Monitoring has no per-service IAM: the rollout's read of the deployers' request
    # metrics is the one project-level grant, read-only, to the two deployers alone.
    bindings = _bindings(tmp_path)
    assert bindings
    wide = [b for b in bindings if b[0] in {"projects", "organizations", "folders"}]
    assert [(b[0], b[2], _flag(b, "member"), _flag(b, "role")) for b in wide] == [
        ("projects", "my-project", f"serviceAccount:deployer-{env}@my-project.iam.gserviceaccount.com",
         "roles/monitoring.viewer")
        for env in ("staging", "production")
    ]  # fmt: skip
    assert [b for b in bindings if _flag(b, "role") == "roles/run.admin"] == []


def test_each_deployer_deploys_and_acts_as_its_own_environment_only(tmp_path: Path) -> None:
    bindings = _bindings(tmp_path)
    for environment, service in (
        ("staging", "purchase-predict-api-staging"),
        ("production", "purchase-predict-api"),
    ):
        deployer = f"serviceAccount:deployer-{environment}@my-project.iam.gserviceaccount.com"
        run_roles = [
            b for b in bindings if b[:2] == ["run", "services"] and _flag(b, "member") == deployer
        ]
        assert [(b[3], _flag(b, "role")) for b in run_roles] == [(service, "roles/run.developer")]
        act_as = [
            b[3]
            for b in bindings
            if _flag(b, "role") == "roles/iam.serviceAccountUser" and _flag(b, "member") == deployer
        ]
        assert act_as == [f"api-runtime-{environment}@my-project.iam.gserviceaccount.com"]
        federated = [
            b
            for b in bindings
            if b[3] == deployer.removeprefix("serviceAccount:")
            and _flag(b, "role") == "roles/iam.workloadIdentityUser"
        ]
        assert [_flag(b, "member").rsplit("/", 1)[1] for b in federated] == [
            f"deploy-api.yml:{environment}"
        ]
    trainer = "model-trainer@my-project.iam.gserviceaccount.com"
    trainer_roles = {
        _flag(b, "role") for b in bindings if _flag(b, "member") == f"serviceAccount:{trainer}"
    }
    assert trainer_roles <= {"roles/storage.objectViewer", "roles/storage.objectUser"}
    federated = [_flag(b, "member").rsplit("/", 1)[1] for b in bindings if b[3] == trainer]
    assert federated == ["train.yml:staging", "train.yml:production"]


def test_the_provider_condition_pins_the_repository_and_the_environment(tmp_path: Path) -> None:
    (provider,) = [
        command
        for command in guide_commands(GUIDE.read_text(encoding="utf-8"), tmp_path)
        if command[3:5] == ["create-oidc", "purchase-predict"]
    ]
    condition = _flag(provider, "attribute-condition") or ""
    assert "assertion.repository == 'OWNER/purchase-predict'" in condition
    assert "assertion.environment" in condition
    # workflow_run / repository_dispatch tokens carry the default branch's ref (finding 10).
    assert "assertion.ref" not in condition
    assert "attribute.workflow_environment=assertion.job_workflow_ref" in (
        _flag(provider, "attribute-mapping") or ""
    )
