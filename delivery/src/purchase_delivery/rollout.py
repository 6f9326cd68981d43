"""actions/cloud-run-deploy's last two steps: the reference-sample check of the new revision
(before it has traffic) and the progressive rollout (traffic in steps, each observed and judged;
automatic rollback when one fails). ``scripts/rollout.py --help``.

Both read the action's step environment (names as in action.yml's ``env:``), call the real
``gcloud`` for every traffic change, and write outputs and a job summary. Exit status: 0 passed,
1 failed (the revision is then left without traffic, its tag kept for inspection), 2 usage or
bad settings. Standard library only. docs/workflows.md, "Progressive rollout", is the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from purchase_contract.model_dir import ModelSourceError, ReferenceSample
from purchase_contract.step_outputs import append_summary, write_outputs
from purchase_delivery.rollout_analysis import (
    Check,
    RolloutConfigError,
    Stats,
    Thresholds,
    compare_sample,
    judge,
    parse_steps,
    setting,
)
from purchase_delivery.rollout_metrics import (
    MONITORING,
    MetricsError,
    MonitoringMetrics,
    Probe,
    ProbeMetrics,
    RevisionMetrics,
    metrics_kind,
    opener,
)

PROG = "rollout.py"
TITLE = "cloud-run-deploy"
# The tags this pipeline gives: a deploy's (sha-<7>) and a rollback to a revision's.
PIPELINE_TAG = re.compile(r"^(sha-[0-9a-f]{7}|rollback-[a-z0-9-]+)$")


class RolloutFailed(RuntimeError):
    """A check failed; the message is the annotation."""


def gcloud(env: Mapping[str, str], *args: str) -> str:
    """``gcloud --quiet [--project P] ARGS`` (stdout); a failure is a :class:`RolloutFailed`."""
    project = ["--project", env["PROJECT_ID"]] if env.get("PROJECT_ID") else []
    done = subprocess.run(
        ["gcloud", "--quiet", *project, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RolloutFailed(f"gcloud {' '.join(args[:3])} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def traffic(env: Mapping[str, str]) -> list[dict]:
    """The service's traffic list, read back with gcloud."""
    described = gcloud(
        env, "run", "services", "describe", env["SERVICE"], "--region", env["REGION"],
        "--format", "json",
    )  # fmt: skip
    return json.loads(described).get("status", {}).get("traffic") or []


def update_traffic(env: Mapping[str, str], *flags: str) -> None:
    gcloud(env, "run", "services", "update-traffic", env["SERVICE"], "--region", env["REGION"],
           *flags)  # fmt: skip


def parse_previous(text: str) -> dict[str, int]:
    """``rev-a=90,rev-b=10`` (the deploy step's previous-traffic output; ``-`` for none)."""
    shares: dict[str, int] = {}
    if (text or "").strip() in ("", "-"):
        return shares
    for item in text.split(","):
        name, _, percent = item.strip().rpartition("=")
        if not name or not percent.isdigit():
            raise RolloutConfigError(
                f"previous-traffic must be revision=percent pairs, got {text!r}"
            )
        shares[name] = int(percent)
    return shares


def token(env: Mapping[str, str]) -> str:
    """The bearer token of the smoke test: given, else printed by identity-token-command."""
    if env.get("IDENTITY_TOKEN"):
        return env["IDENTITY_TOKEN"]
    if command := env.get("IDENTITY_TOKEN_COMMAND"):
        audience = env.get("CUSTOM_AUDIENCE") or env.get("SERVICE_URL", "")
        done = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, check=False,
            env={**os.environ, "AUDIENCE": audience},
        )  # fmt: skip
        if done.returncode != 0:
            raise RolloutFailed("identity-token-command failed")
        return done.stdout.strip()
    return ""


# ---- the reference sample ------------------------------------------------------------------
def check_sample(env: Mapping[str, str]) -> Check | None:
    """POST the reference sample's sessions to the tag URL; None when there is no sample."""
    path = env.get("REFERENCE_SAMPLE", "")
    if not path:
        return None
    try:
        sample = ReferenceSample.read(Path(path))
    except ModelSourceError as err:
        raise RolloutConfigError(f"reference sample: {err}") from None
    sessions, expected = sample.sessions, sample.probabilities
    limits = Thresholds.from_env(env)
    bearer = token(env)
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    request = urllib.request.Request(
        f"{env['TAG_URL']}/predict", data=json.dumps(sessions).encode(), headers=headers
    )
    try:
        with opener(env).open(request, timeout=60) as answer:
            body = json.load(answer)
        answered = [float(p["probability"]) for p in body["predictions"]]
    except urllib.error.HTTPError as err:
        return Check("reference sample", f"POST /predict answered {err.code}", "200", False)
    except (OSError, ValueError, KeyError, TypeError) as err:
        return Check("reference sample", f"no usable answer ({err})", "200 with predictions", False)
    return compare_sample(answered, expected, limits.sample_tolerance)


def sample_step(env: Mapping[str, str]) -> int:
    """The ``sample`` command: pass, or fail before the revision has any traffic."""
    check = check_sample(env)
    if check is None:
        print("no reference sample given: predictions are not compared with training time")
        write_outputs({"sample-result": "skipped"})
        return 0
    print(check.line())
    write_outputs({"sample-result": "passed" if check.passed else check.measured})
    if check.passed:
        return 0
    where = (
        "first deploy: it serves all traffic, there is no earlier revision to keep"
        if env.get("FIRST_DEPLOY") == "true"
        else f"traffic stays on {env.get('PREVIOUS_TRAFFIC', '-')}"
    )
    append_summary(
        f"### Reference sample failed: revision `{env.get('REVISION', '')}`\n\n"
        f"{check.line()}. The revision does not predict what its model predicted at training "
        f"time. {where}; its tag URL {env.get('TAG_URL', '')} stays for inspection.\n"
    )
    print(f"::error title={TITLE}::reference sample of {env.get('REVISION')} failed: "
          f"{check.measured} ({where})")  # fmt: skip
    return 1


# ---- the rollout ---------------------------------------------------------------------------
@dataclass
class StepReport:
    percent: int
    new: Stats
    baseline: Stats
    checks: list[Check]
    probes: str = ""

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)


@dataclass
class Rollout:
    """One rollout of ``env['REVISION']`` (tag ``env['TAG']``) over ``steps``."""

    env: Mapping[str, str]
    steps: list[int]
    observe_s: float
    delay_s: float
    probe_rate: float
    kind: str
    limits: Thresholds
    previous: dict[str, int]
    reports: list[StepReport] = field(default_factory=list)
    error: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Rollout:
        def seconds(name: str, default: float) -> float:
            value = setting(env, name)
            return default if value is None else float(value)

        return cls(
            env=env,
            steps=parse_steps(env.get("TRAFFIC_STEPS") or "100"),
            observe_s=seconds("OBSERVE_SECONDS", 60),
            delay_s=seconds("METRICS_DELAY", 0),
            probe_rate=seconds("PROBE_RATE", 10),
            kind=metrics_kind(env.get("METRICS", "")),
            limits=Thresholds.from_env(env),
            previous=parse_previous(env.get("PREVIOUS_TRAFFIC", "")),
        )

    def metrics(self, probe: Probe | None) -> RevisionMetrics:
        if self.kind == "probes":
            if probe is None:
                raise RolloutConfigError("metrics: probes needs probe-rate above 0")
            return ProbeMetrics(probe)
        env = self.env
        return MonitoringMetrics(
            project=env.get("PROJECT_ID") or gcloud(env, "config", "get-value", "project").strip(),
            service=env["SERVICE"],
            region=env["REGION"],
            access_token=gcloud(env, "auth", "print-access-token").strip(),
            http=opener(env),
            endpoint=env.get("CLOUDSDK_API_ENDPOINT_OVERRIDES_MONITORING") or MONITORING,
        )

    def observe(self, percent: int, bearer: str, baseline: Stats) -> StepReport:
        """Move ``percent`` of traffic to the new revision, observe, judge."""
        env = self.env
        update_traffic(env, "--to-tags", f"{env['TAG']}={percent}")
        print(f"step {percent}%: observing {self.observe_s:g}s", flush=True)
        start = datetime.now(UTC)
        probe = None
        if self.probe_rate > 0:
            body = Path(env["SMOKE_REQUEST"]).read_bytes()
            probe = Probe(env["SERVICE_URL"], body, bearer, opener(env), self.probe_rate)
            probe.run(self.observe_s, env["REVISION"], self.limits.min_requests)
        else:
            time.sleep(self.observe_s)
        end = datetime.now(UTC)
        time.sleep(self.delay_s)  # metrics become visible after a delay on Cloud Run
        source = self.metrics(probe)
        new = source.stats([env["REVISION"]], start, end)
        old = source.stats(self.previous, start, end)
        if old.requests >= self.limits.min_requests:
            baseline = old
        probes = ""
        if probe is not None:
            probes = f"{probe.sent} probes" + (f"; {probe.refused}" if probe.refused else "")
        report = StepReport(percent, new, baseline, judge(new, baseline, self.limits), probes)
        for check in report.checks:
            print(f"  {check.line()}")
        return report

    def run(self) -> bool:
        """All steps; False (traffic returned to the previous revisions) when one failed."""
        baseline = Stats()
        for percent in self.steps:
            try:
                # Per step: an identity-token-command mints a fresh token for each (ID tokens
                # live 10 minutes, a production rollout longer).
                report = self.observe(percent, token(self.env), baseline)
            except (RolloutFailed, MetricsError, OSError) as err:
                self.error = f"at {percent}%: {err}"
                self.roll_back()
                return False
            except BaseException:  # cancelled (SIGINT, SIGTERM): no traffic is left behind
                self.error = f"at {percent}%: cancelled"
                self.roll_back()
                raise
            self.reports.append(report)
            baseline = report.baseline
            if not report.passed:
                self.roll_back()
                return False
        return True

    def roll_back(self) -> None:
        """All traffic back to the revisions that served before; the new tag stays."""
        shares = ",".join(
            f"{'LATEST' if name == 'latest' else name}={p}" for name, p in self.previous.items()
        )
        update_traffic(self.env, "--to-revisions", shares)
        print(f"rolled back: traffic is {shares} again", flush=True)


def remove_stale_tags(env: Mapping[str, str]) -> str:
    """Earlier deploys' ``sha-*`` and ``rollback-*`` tags, removed now that traffic has moved
    (comma-separated); other tags are someone else's and stay."""
    stale = sorted(
        {t["tag"] for t in traffic(env) if PIPELINE_TAG.match(t.get("tag", ""))} - {env["TAG"]}
    )
    if not stale:
        return ""
    try:
        update_traffic(env, "--remove-tags", ",".join(stale))
    except RolloutFailed as err:
        print(f"::warning title={TITLE}::could not remove the earlier tags {stale}: {err}")
        return ""
    print(f"removed the earlier tags {','.join(stale)}")
    return ",".join(stale)


def summary(rollout: Rollout, passed: bool) -> str:
    env = rollout.env
    verdict = "promoted" if passed else "rolled back"
    lines = [
        f"### Rollout of `{env['REVISION']}`: {verdict}",
        "",
        f"Steps {', '.join(f'{p}%' for p in rollout.steps)}, {rollout.observe_s:g}s each, "
        f"figures from {'Cloud Monitoring' if rollout.kind == 'monitoring' else 'the probes'}.",
        "",
        "| traffic | new revision | baseline | checks |",
        "|---|---|---|---|",
    ]
    for r in rollout.reports:
        checks = "<br>".join(c.line() for c in r.checks)
        base = r.baseline.describe() if r.baseline.requests else "none"
        new = r.new.describe() + (f" ({r.probes})" if r.probes else "")
        lines.append(f"| {r.percent}% | {new} | {base} | {checks} |")
    if rollout.error:
        lines += ["", f"Stopped {rollout.error}."]
    if not passed:
        lines += ["", f"Traffic went back to {env.get('PREVIOUS_TRAFFIC')}; tag `{env['TAG']}` "
                  f"keeps the revision reachable at {env.get('TAG_URL')} for inspection."]  # fmt: skip
    return "\n".join(lines) + "\n"


def rollout_step(env: Mapping[str, str]) -> int:
    """The ``rollout`` command."""
    if env.get("TRAFFIC") == "latest":
        update_traffic(env, "--to-latest")
        write_outputs({"rollout-result": "latest", "removed-tags": remove_stale_tags(env)})
        return 0
    rollout = Rollout.from_env(env)
    if env.get("FIRST_DEPLOY") == "true" or not rollout.previous:
        update_traffic(env, "--to-tags", f"{env['TAG']}=100")
        print("first deploy: the revision serves all traffic, there is nothing to compare with")
        write_outputs({"rollout-result": "first-deploy", "removed-tags": ""})
        return 0
    # A cancelled job gets SIGTERM (after SIGINT): roll back before going.
    signal.signal(signal.SIGTERM, _cancelled)
    passed = rollout.run()
    append_summary(summary(rollout, passed))
    failed = rollout.error or "; ".join(
        f"{c.name} {c.measured} (limit {c.limit})"
        for c in rollout.reports[-1].checks
        if not c.passed
    )
    at = rollout.steps[len(rollout.reports) - (0 if rollout.error else 1)]
    outputs = {
        "rollout-result": "promoted" if passed else f"rolled-back at {at}%",
        "rollout-report": failed or "all steps passed",
        "removed-tags": remove_stale_tags(env) if passed else "",
    }
    write_outputs(outputs)
    if not passed:
        print(f"::error title={TITLE}::rollout of {env['REVISION']} failed at {at}%: "
              f"{failed}; traffic is back on {env.get('PREVIOUS_TRAFFIC')}")  # fmt: skip
        return 1
    print(f"all traffic of {env['SERVICE']} now goes to {env['REVISION']}")
    return 0


def _cancelled(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


COMMANDS = {"sample": sample_step, "rollout": rollout_step}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="actions/cloud-run-deploy's reference-sample check and progressive rollout; "
        "each reads its inputs from the environment (see the action's action.yml).",
        epilog="Exit status: 0 passed; 1 failed (no traffic left on the new revision); "
        "2 usage or bad settings. docs/workflows.md explains the rules and thresholds.",
    )
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](os.environ)
    except RolloutConfigError as err:
        print(f"::error title={TITLE}::{err}", flush=True)
        return 2
    except (RolloutFailed, MetricsError) as err:
        print(f"::error title={TITLE}::{err}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
