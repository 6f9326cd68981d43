#!/usr/bin/env python3
"""Promote a training run's model to an environment's MLflow alias, behind a quality gate.

1. The run's model becomes a registered version of ``model_name`` (an existing version of the
   same run is reused, so re-running never creates a duplicate).
2. The version gets lineage tags (git commit, branch, workflow run URL, data fingerprint), and
   its compiled form is logged with it when the API package is installed here
   (:mod:`purchase_delivery.compiled_form`: the API's fetch mode then starts without MLflow).
3. Quality gate: the candidate and the alias's current holder are evaluated on the candidate
   run's frozen test set; the alias does not move when the candidate's F1 trails by more than
   the tolerance. The first model for an alias always passes; ``--force`` overrides.
4. The alias is set, and a Markdown summary goes to stdout and ``$GITHUB_STEP_SUMMARY``.

Names (model, aliases, tolerance) come from ``[tool.purchase-predict]`` via ``purchase_contract.config``.
See docs/registry.md for the race handling.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from purchase_contract.command_line import command_parser
from purchase_contract.config import ConfigError, ProjectConfig, load_config, tracking_uri
from purchase_contract.step_outputs import append_to, format_outputs
from purchase_delivery.compiled_form import log_compiled_form

MODEL_ARTIFACT = "model"
TEST_SET_ARTIFACT = "test_set/test_set.parquet"
LABEL_COLUMN = "purchased"
DEFAULT_THRESHOLD = 0.5
# How often the gate is re-run when the alias keeps moving under it before giving up.
MAX_GATE_ROUNDS = 3
# Rounding noise must not flip a gate decision that sits exactly on the tolerance.
F1_EPSILON = 1e-9

# Lineage tags on the model version; the first three share their names with the run's tags.
TAG_GIT_COMMIT = "git_commit"
TAG_GIT_BRANCH = "git_branch"
TAG_DATA_FINGERPRINT = "data_fingerprint"
TAG_WORKFLOW_RUN_URL = "workflow_run_url"
TAG_TRAINING_RUN = "training_run_id"

DECISIONS_THAT_PROMOTE = ("first", "passed", "forced", "unchanged")

EPILOG = """\
decisions:
  first      nothing held the alias: the first model for an environment always passes
  passed     candidate F1 >= holder F1 - tolerance: the alias moved to the candidate
  refused    candidate F1 <  holder F1 - tolerance: the alias stayed where it was
  forced     the gate refused (or could not evaluate the holder) and --force moved the alias
  unchanged  the candidate already held the alias

outputs (key=value lines appended to $GITHUB_OUTPUT when it is set):
  model-version   registered version of the candidate
  promoted        true when the alias points at the candidate afterwards
  decision        one of the decisions above
  candidate-f1    candidate F1 on the test set
  champion-f1     F1 of the previous holder on the same test set ('' when none)
  champion-version, alias, environment, model-name, model-uri (models:/<name>/<version>)

lineage precedence: flag > training_run.json > the training run's tags > GitHub variables
(GITHUB_SHA, GITHUB_REF_NAME, GITHUB_SERVER_URL/GITHUB_REPOSITORY/actions/runs/GITHUB_RUN_ID).
Without --environment or --alias, the environment is the one mapped to the lineage branch,
or fallback_environment when that branch is not mapped.

MLflow: MLFLOW_TRACKING_URI, else the SQLite store purchase_predict/mlruns/mlflow.db.

exit status: 0 the alias holds the candidate; 1 the gate refused; 2 bad input or error.
"""


class PromotionError(RuntimeError):
    """Promotion cannot proceed; the message is the one-line reason."""


@dataclass(frozen=True)
class Evaluation:
    """One model version's scores on the frozen test set, at its own decision threshold."""

    version: str
    run_id: str
    threshold: float
    f1: float
    precision: float
    recall: float
    roc_auc: float | None
    rows: int


@dataclass(frozen=True)
class Lineage:
    """Where a model version comes from; empty fields are not tagged."""

    training_run_id: str
    git_commit: str | None = None
    git_branch: str | None = None
    workflow_run_url: str | None = None
    data_fingerprint: str | None = None

    def tags(self) -> dict[str, str]:
        """The version tags for the known fields."""
        values = {
            TAG_TRAINING_RUN: self.training_run_id,
            TAG_GIT_COMMIT: self.git_commit,
            TAG_GIT_BRANCH: self.git_branch,
            TAG_WORKFLOW_RUN_URL: self.workflow_run_url,
            TAG_DATA_FINGERPRINT: self.data_fingerprint,
        }
        return {key: value for key, value in values.items() if value}


@dataclass
class GateOutcome:
    """What the gate decided, against which holder of the alias, and why."""

    decision: str
    candidate: Evaluation
    champion: Evaluation | None
    # The alias holder the decision was made against (None: nothing held the alias).
    holder: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def promoted(self) -> bool:
        """Whether the alias points at the candidate after this promotion."""
        return self.decision in DECISIONS_THAT_PROMOTE


@dataclass(frozen=True)
class Promotion:
    """One promotion: which version went (or not) to which alias, with its gate outcome."""

    model_name: str
    alias: str
    environment: str | None
    version: str
    tolerance: float
    lineage: Lineage
    gate: GateOutcome

    def outputs(self) -> dict[str, str]:
        """The step outputs, as strings."""
        gate = self.gate
        return {
            "model-name": self.model_name,
            "model-version": self.version,
            "model-uri": f"models:/{self.model_name}/{self.version}",
            "alias": self.alias,
            "environment": self.environment or "",
            "promoted": "true" if gate.promoted else "false",
            "decision": gate.decision,
            "candidate-f1": f"{gate.candidate.f1:.6f}",
            "champion-f1": f"{gate.champion.f1:.6f}" if gate.champion else "",
            "champion-version": gate.holder or "",
        }


class VersionEvaluator:
    """Scores registered versions on one test set, each version once."""

    def __init__(self, model_name: str, features: pd.DataFrame, labels: pd.Series) -> None:
        self.model_name = model_name
        self.features = features
        self.labels = labels
        self._cache: dict[str, Evaluation] = {}

    def __call__(self, version: str) -> Evaluation:
        """The evaluation of ``version``; loading or predicting problems raise PromotionError."""
        if version not in self._cache:
            self._cache[version] = self._evaluate(version)
        return self._cache[version]

    def _evaluate(self, version: str) -> Evaluation:
        uri = f"models:/{self.model_name}/{version}"
        try:
            model = mlflow.pyfunc.load_model(uri)
            predictions = np.asarray(model.predict(self.features))
        except Exception as err:
            raise PromotionError(f"cannot score {uri} on the test set: {_one_line(err)}") from err
        if predictions.ndim != 2 or predictions.shape[1] < 2:
            raise PromotionError(
                f"{uri} predict() returned shape {predictions.shape}, expected (n, 2) "
                "probabilities (log it with pyfunc_predict_fn='predict_proba')"
            )
        probability = predictions[:, 1].astype(float)
        threshold = _threshold(model.metadata.metadata, uri)
        predicted = (probability >= threshold).astype(int)
        labels = self.labels.to_numpy()
        both_classes = len(np.unique(labels)) == 2
        return Evaluation(
            version=version,
            run_id=model.metadata.run_id or "",
            threshold=threshold,
            f1=float(f1_score(labels, predicted, zero_division=0)),
            precision=float(precision_score(labels, predicted, zero_division=0)),
            recall=float(recall_score(labels, predicted, zero_division=0)),
            roc_auc=float(roc_auc_score(labels, probability)) if both_classes else None,
            rows=len(labels),
        )


def gate_passes(candidate: Evaluation, champion: Evaluation, tolerance: float) -> bool:
    """The candidate may trail the champion's F1 by at most ``tolerance``."""
    return candidate.f1 >= champion.f1 - tolerance - F1_EPSILON


def alias_holder(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """The version the alias points at, or None."""
    version = client.get_registered_model(model_name).aliases.get(alias)
    # Stores disagree on the type (SQLite gives int, REST gives str): compare as strings.
    return None if version is None else str(version)


def promote(
    client: MlflowClient,
    *,
    model_name: str,
    alias: str,
    version: str,
    evaluate: Callable[[str], Evaluation],
    tolerance: float,
    force: bool,
) -> GateOutcome:
    """Run the gate and move the alias when it allows (or ``force``).

    Gate tags are written before the alias moves, and the holder is re-read just before the
    move: when another promotion moved the alias meanwhile, the gate is re-run against it.
    """
    holder = alias_holder(client, model_name, alias)
    for _ in range(MAX_GATE_ROUNDS):
        candidate = evaluate(version)
        if holder == version:
            return GateOutcome("unchanged", candidate, None, holder)
        outcome = _judge(candidate, holder, evaluate, alias=alias, tolerance=tolerance, force=force)
        _record_gate(client, model_name=model_name, version=version, alias=alias, outcome=outcome)
        current = alias_holder(client, model_name, alias)
        if current != holder:
            # Another promotion moved the alias while this gate ran: judge against its result.
            holder = current
            continue
        if outcome.promoted:
            client.set_registered_model_alias(model_name, alias, version)
            after = alias_holder(client, model_name, alias)
            if after != version:
                outcome.notes.append(f"@{alias} moved on to version {after} right after this one.")
        return outcome
    raise PromotionError(
        f"@{alias} moved {MAX_GATE_ROUNDS} times while the gate ran; promotion abandoned, "
        "retry once the concurrent promotions are done"
    )


def _judge(
    candidate: Evaluation,
    holder: str | None,
    evaluate: Callable[[str], Evaluation],
    *,
    alias: str,
    tolerance: float,
    force: bool,
) -> GateOutcome:
    """The gate's decision for the candidate against the alias's current holder."""
    if holder is None:
        return GateOutcome("first", candidate, None, None)
    try:
        champion = evaluate(holder)
    except PromotionError as err:
        if not force:
            raise PromotionError(
                f"cannot evaluate the @{alias} holder (version {holder}): {err}; "
                "--force promotes without the gate"
            ) from err
        note = f"The @{alias} holder (version {holder}) could not be scored: {err}"
        return GateOutcome("forced", candidate, None, holder, [note])
    if gate_passes(candidate, champion, tolerance):
        return GateOutcome("passed", candidate, champion, holder)
    return GateOutcome("forced" if force else "refused", candidate, champion, holder)


def summary_markdown(promotion: Promotion) -> str:
    """The Markdown summary of a promotion, for people reading the job's summary."""
    p, gate = promotion, promotion.gate
    where = f"`@{p.alias}`" + (f" (environment `{p.environment}`)" if p.environment else "")
    lines = [
        f"## Promotion of `{p.model_name}` version {p.version} to {where}",
        "",
        f"**Decision: {gate.decision}**: {_explain(p)}",
        "",
        "| Model | Version | Training run | Threshold | F1 | Precision | Recall | ROC AUC |",
        "|---|---|---|---|---|---|---|---|",
        _row("Candidate", gate.candidate),
    ]
    if gate.champion:
        lines.append(_row(f"Previous `@{p.alias}`", gate.champion))
    elif gate.holder and gate.holder != p.version:
        lines.append(f"| Previous `@{p.alias}` | {gate.holder} | not scored | | | | | |")
    lines += [
        "",
        f"Scored on the {gate.candidate.rows} rows of `{TEST_SET_ARTIFACT}` logged by the "
        f"candidate's training run `{p.lineage.training_run_id}`; F1 tolerance {p.tolerance:g}.",
        "",
        "**Lineage**: " + _lineage_text(p.lineage),
    ]
    lines += ["", *(f"- {note}" for note in gate.notes)] if gate.notes else []
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    # Download progress bars would bury the one-line reason on stderr (and clutter CI logs).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        promotion = run_promotion(args)
    except (PromotionError, ConfigError) as err:
        print(f"register_model: error: {err}", file=sys.stderr)
        return 2
    summary = summary_markdown(promotion)
    print(summary, end="")
    append_to("GITHUB_STEP_SUMMARY", summary)
    append_to("GITHUB_OUTPUT", format_outputs(promotion.outputs()))
    gate = promotion.gate
    if not gate.promoted:
        print(
            f"register_model: refused: version {promotion.version} F1 {gate.candidate.f1:.4f} "
            f"trails @{promotion.alias} version {gate.holder} F1 {gate.champion.f1:.4f} "
            f"by more than {promotion.tolerance:g}",
            file=sys.stderr,
        )
        return 1
    return 0


def run_promotion(args: argparse.Namespace) -> Promotion:
    """Register, tag, gate and promote as the parsed arguments say."""
    config = load_config()
    tolerance = config.gate_f1_tolerance if args.tolerance is None else args.tolerance
    if not (math.isfinite(tolerance) and 0 <= tolerance <= 1):
        raise PromotionError(f"--tolerance must be in [0, 1], got {tolerance}")

    mlflow.set_tracking_uri(tracking_uri())
    client = MlflowClient()
    try:
        training_run = _read_training_run(args.training_run_json, config)
        run_id, source_uri, pinned_version = _candidate_source(
            client, config.model_name, args, training_run
        )
        lineage = _lineage(args, training_run, client.get_run(run_id).data.tags, run_id)
        environment, alias = _target(config, args, lineage)
        version = ensure_registered(
            client,
            model_name=config.model_name,
            run_id=run_id,
            source_uri=source_uri,
            pinned_version=pinned_version,
            lineage=lineage,
        )
        compiled_note = log_compiled_form(config.model_name, version, mlflow.get_tracking_uri())
        features, labels = load_test_set(run_id)
        evaluate = VersionEvaluator(config.model_name, features, labels)
        gate = promote(
            client,
            model_name=config.model_name,
            alias=alias,
            version=version,
            evaluate=evaluate,
            tolerance=tolerance,
            force=args.force,
        )
    except MlflowException as err:
        raise PromotionError(f"MLflow ({mlflow.get_tracking_uri()}): {_one_line(err)}") from err
    gate.notes.append(compiled_note)
    if gate.decision == "forced":
        gate.notes.insert(0, "Promoted with --force: the quality gate did not allow this version.")
    elif args.force and gate.decision != "unchanged":
        gate.notes.insert(0, "--force was given but not needed: the gate allowed this version.")
    return Promotion(
        model_name=config.model_name,
        alias=alias,
        environment=environment,
        version=version,
        tolerance=tolerance,
        lineage=lineage,
        gate=gate,
    )


def ensure_registered(
    client: MlflowClient,
    *,
    model_name: str,
    run_id: str,
    source_uri: str,
    pinned_version: str | None,
    lineage: Lineage,
) -> str:
    """The registered version of the run's model, created only when none exists; tagged."""
    tags = lineage.tags()
    if pinned_version and client.get_model_version(model_name, pinned_version).run_id != run_id:
        raise PromotionError(
            f"{model_name} version {pinned_version} was not registered from run {run_id}"
        )
    version = pinned_version or _existing_version(client, model_name, run_id)
    if version is None:
        # Tags go in with the version itself, so no reader ever sees it untagged.
        version = mlflow.register_model(source_uri, model_name, tags=tags).version
        # A concurrent registration of the same run may have won: keep the oldest version.
        version = _existing_version(client, model_name, run_id) or version
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    return str(version)


def load_test_set(run_id: str) -> tuple[pd.DataFrame, pd.Series]:
    """The frozen test set logged by the run: (feature columns, purchased labels)."""
    with tempfile.TemporaryDirectory(prefix="test-set-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=TEST_SET_ARTIFACT, dst_path=tmp
            )
        except (MlflowException, OSError) as err:
            raise PromotionError(
                f"run {run_id} has no {TEST_SET_ARTIFACT} (the gate's frozen test set): "
                f"{_one_line(err)}"
            ) from err
        frame = pd.read_parquet(path)
    where = f"run {run_id} {TEST_SET_ARTIFACT}"
    if LABEL_COLUMN not in frame.columns:
        raise PromotionError(f"{where} has no {LABEL_COLUMN!r} column")
    if frame.empty:
        raise PromotionError(f"{where} has no rows")
    labels = frame[LABEL_COLUMN]
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise PromotionError(f"{where}: {LABEL_COLUMN!r} must hold only 0 and 1")
    return frame.drop(columns=[LABEL_COLUMN]), labels.astype(int)


def _existing_version(client: MlflowClient, model_name: str, run_id: str) -> str | None:
    versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return str(min(int(v.version) for v in versions)) if versions else None


def _candidate_source(
    client: MlflowClient,
    model_name: str,
    args: argparse.Namespace,
    training_run: dict[str, Any],
) -> tuple[str, str, str | None]:
    """(run id, URI to register from, already-registered version when the input names one)."""
    if args.run_id:
        return args.run_id, f"runs:/{args.run_id}/{MODEL_ARTIFACT}", None
    uri = args.model_uri or training_run.get("model_uri") or ""
    if not uri:
        run_id = training_run["run_id"]
        version = training_run.get("model_version")
        return run_id, f"runs:/{run_id}/{MODEL_ARTIFACT}", str(version) if version else None
    if uri.startswith("runs:/"):
        run_id, _, path = uri.removeprefix("runs:/").partition("/")
        if not run_id or not path:
            raise PromotionError(f"model URI {uri!r} is not runs:/<run_id>/<path>")
        if training_run.get("run_id") not in (None, run_id):
            raise PromotionError(f"{args.training_run_json}: model_uri and run_id disagree")
        version = training_run.get("model_version")
        return run_id, uri, str(version) if version else None
    if uri.startswith("models:/"):
        return _registry_source(client, model_name, uri)
    raise PromotionError(f"model URI {uri!r} is neither runs:/<run_id>/<path> nor models:/...")


def _registry_source(
    client: MlflowClient, model_name: str, uri: str
) -> tuple[str, str, str | None]:
    """models:/<name>/<version>, models:/<name>@<alias> or models:/<model_id>."""
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, _, alias = ref.partition("@")
        mv = client.get_model_version_by_alias(name, alias)
    elif "/" in ref:
        name, _, number = ref.partition("/")
        mv = client.get_model_version(name, number)
    else:
        run_id = client.get_logged_model(ref).source_run_id
        if not run_id:
            raise PromotionError(f"{uri} has no source run, so no test set for the gate")
        return run_id, uri, None
    if not mv.run_id:
        raise PromotionError(f"{uri} has no source run, so no test set for the gate")
    # A version of our own model is the candidate itself; another model's is registered anew.
    return mv.run_id, f"models:/{mv.name}/{mv.version}", mv.version if name == model_name else None


def _read_training_run(path: str | None, config: ProjectConfig) -> dict[str, Any]:
    """training_run.json written by the training pipeline, validated; {} without --training-run-json."""
    if path is None:
        return {}
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise PromotionError(f"cannot read {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise PromotionError(f"{path} is not JSON: {err}") from None
    if not isinstance(document, dict) or not isinstance(document.get("run_id"), str):
        raise PromotionError(f"{path} has no string 'run_id'")
    registered = document.get("registered_model_name")
    if registered not in (None, config.model_name):
        raise PromotionError(
            f"{path}: registered_model_name {registered!r} is not the configured model_name "
            f"{config.model_name!r} ({config.path})"
        )
    return document


def _lineage(
    args: argparse.Namespace, training_run: dict[str, Any], run_tags: dict[str, str], run_id: str
) -> Lineage:
    """Flags first, then training_run.json, the run's tags, then the GitHub variables."""
    env = os.environ
    run_url = ""
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        run_url = f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return Lineage(
        training_run_id=run_id,
        git_commit=_first(
            args.git_sha,
            training_run.get("git_commit"),
            run_tags.get(TAG_GIT_COMMIT),
            env.get("GITHUB_SHA"),
        ),
        git_branch=_first(args.branch, run_tags.get(TAG_GIT_BRANCH), env.get("GITHUB_REF_NAME")),
        workflow_run_url=_first(args.run_url, run_url),
        data_fingerprint=_first(
            args.data_fingerprint,
            training_run.get("data_fingerprint"),
            run_tags.get(TAG_DATA_FINGERPRINT),
        ),
    )


def _target(
    config: ProjectConfig, args: argparse.Namespace, lineage: Lineage
) -> tuple[str | None, str]:
    """(environment name or None, alias) from --environment / --alias / the lineage branch."""
    if args.environment:
        env = config.environment(args.environment)
        return env.name, args.alias or env.alias
    if args.alias:
        env = config.environment_for_alias(args.alias)
        return (env.name if env else None), args.alias
    env = (lineage.git_branch and config.environment_for_branch(lineage.git_branch)) or None
    env = env or config.environment(config.fallback_environment)
    return env.name, env.alias


def _record_gate(
    client: MlflowClient, *, model_name: str, version: str, alias: str, outcome: GateOutcome
) -> None:
    """The gate's verdict on the version, per alias, written before the alias moves."""
    record = {
        "decision": outcome.decision,
        "candidate_f1": f"{outcome.candidate.f1:.6f}",
        "champion_version": outcome.holder or "none",
        "champion_f1": f"{outcome.champion.f1:.6f}" if outcome.champion else "none",
    }
    for key, value in record.items():
        client.set_model_version_tag(model_name, version, f"gate.{alias}.{key}", value)


def _explain(p: Promotion) -> str:
    gate, alias = p.gate, f"`@{p.alias}`"
    if gate.decision == "unchanged":
        return f"version {p.version} already holds {alias}."
    if gate.decision == "first":
        return f"nothing held {alias}; the first model for an alias always passes."
    if gate.champion is None:
        return f"version {gate.holder} could not be scored; promoted with --force."
    comparison = (
        f"candidate F1 {gate.candidate.f1:.4f} {'>=' if gate.decision == 'passed' else '<'} "
        f"previous F1 {gate.champion.f1:.4f} - tolerance {p.tolerance:g}"
    )
    outcome = {
        "passed": f"{alias} moves to version {p.version}.",
        "forced": "promoted with --force.",
        "refused": f"{alias} stays on version {gate.holder}.",
    }[gate.decision]
    return f"{comparison}; {outcome}"


def _row(label: str, e: Evaluation) -> str:
    auc = f"{e.roc_auc:.4f}" if e.roc_auc is not None else "n/a"
    return (
        f"| {label} | {e.version} | `{e.run_id}` | {e.threshold:g} | {e.f1:.4f} | "
        f"{e.precision:.4f} | {e.recall:.4f} | {auc} |"
    )


def _lineage_text(lineage: Lineage) -> str:
    parts = [
        f"git commit `{lineage.git_commit or 'unknown'}`",
        f"branch `{lineage.git_branch or 'unknown'}`",
        f"data fingerprint `{lineage.data_fingerprint or 'unknown'}`",
    ]
    if lineage.workflow_run_url:
        parts.append(f"[workflow run]({lineage.workflow_run_url})")
    return ", ".join(parts) + "."


def _threshold(metadata: dict[str, Any] | None, uri: str) -> float:
    value = (metadata or {}).get("decision_threshold", DEFAULT_THRESHOLD)
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = math.nan
    if not 0 <= threshold <= 1:
        raise PromotionError(f"{uri} metadata decision_threshold {value!r} is not in [0, 1]")
    return threshold


def _first(*values: Any) -> str | None:
    return next((str(v) for v in values if v), None)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "register_model.py",
        (
            "Register a training run's model as a version of the configured model, tag its "
            "lineage, and move an environment's MLflow alias to it when it passes the F1 "
            "quality gate against the alias's current holder."
        ),
        EPILOG,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run-id", help="training run id (its model is at 'model')")
    source.add_argument("--model-uri", help="runs:/<run_id>/<path> or models:/... URI")
    source.add_argument(
        "--training-run-json", metavar="PATH", help="training_run.json written by the pipeline"
    )
    parser.add_argument("--environment", metavar="NAME", help="environment whose alias to move")
    parser.add_argument("--alias", help="move this alias instead of the environment's")
    parser.add_argument(
        "--tolerance",
        type=float,
        help="largest F1 drop allowed (default: gate_f1_tolerance from the config)",
    )
    parser.add_argument("--force", action="store_true", help="promote even when the gate refuses")
    lineage = parser.add_argument_group("lineage (defaults: see below)")
    lineage.add_argument("--git-sha", help="git commit the model was trained from")
    lineage.add_argument("--branch", help="git branch the model was trained from")
    lineage.add_argument("--run-url", help="URL of the workflow run promoting the model")
    lineage.add_argument("--data-fingerprint", help="sha256 of the primary table")
    return parser


if __name__ == "__main__":
    sys.exit(main())
