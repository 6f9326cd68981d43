"""The one reader of ``[tool.purchase-predict]``: names, environments, the embedded MLflow store.

Standard library only: the workflows' resolve steps import it under a bare ``python3`` before
anything is installed. The pyproject read is ``$PURCHASE_PREDICT_CONFIG`` when set, else the
first ``pyproject.toml`` holding the table in the working directory or above it, else in this
package's directory or above it (an editable install inside the repository).
"""

from __future__ import annotations

import itertools
import math
import os
import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from purchase_contract.command_line import read_document

CONFIG_ENV_VAR = "PURCHASE_PREDICT_CONFIG"
TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
# The embedded MLflow store, relative to the pyproject, when the table names none.
DEFAULT_LOCAL_MLFLOW_STORE = "purchase_predict/mlruns/mlflow.db"

_TABLE = "purchase-predict"
_TOP_LEVEL_KEYS = frozenset(
    {"model_name", "experiment_name", "image_name", "fallback_environment", "gate_f1_tolerance"}
)
_ENV_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
# Values end up in $GITHUB_OUTPUT lines and shell variables: keep them to one safe token.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


class ConfigError(ValueError):
    """The configuration is missing, malformed, or does not know a requested name."""


@dataclass(frozen=True)
class Environment:
    """One deployment environment: where its code comes from and where its model is served."""

    name: str
    branch: str
    alias: str
    service: str
    region: str
    artifact_repository: str
    min_instances: int
    max_instances: int
    memory: str
    cpu: str
    concurrency: int
    # The rollout (docs/workflows.md, "Progressive rollout"): traffic percentages in order,
    # comma-separated ("10,50,100"), how long each step is observed, how long Cloud Monitoring
    # takes to show a step's requests, and whether the API's INJECT_FAULTS may be deployed.
    traffic_steps: str = "100"
    observe_seconds: int = 60
    metrics_delay_seconds: int = 180
    allow_faults: bool = False


def rollout_steps_problem(steps: list[int]) -> str:
    """Why ``steps`` is not a rollout (increasing percentages 1-100 ending at 100), or ""."""
    if not steps or steps[-1] != 100:
        return "must end at 100"
    if any(not 1 <= s <= 100 for s in steps) or any(a >= b for a, b in itertools.pairwise(steps)):
        return "must increase strictly between 1 and 100"
    return ""


@dataclass(frozen=True)
class ProjectConfig:
    """The ``[tool.purchase-predict]`` table, validated."""

    path: Path
    model_name: str
    experiment_name: str
    image_name: str
    fallback_environment: str
    gate_f1_tolerance: float
    environments: dict[str, Environment]
    # The embedded MLflow store (SQLite file) used when MLFLOW_TRACKING_URI is unset.
    local_mlflow_store: Path

    @property
    def root(self) -> Path:
        """The directory of the pyproject: relative paths of the table start here."""
        return self.path.parent

    def tracking_uri(self) -> str:
        """``$MLFLOW_TRACKING_URI``, else the embedded SQLite store (absolute path)."""
        return os.environ.get(TRACKING_URI_ENV_VAR) or f"sqlite:///{self.local_mlflow_store}"

    def setting(self, key: str) -> Any:
        """One top-level value of the table by name (Kedro's ``${project:<key>}`` resolver)."""
        if key not in _TOP_LEVEL_KEYS:
            raise ConfigError(f"{self.path} [tool.{_TABLE}] has no key {key!r}")
        return getattr(self, key)

    def environment(self, name: str) -> Environment:
        """The environment called ``name``; an unknown name is an error."""
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments))
            raise ConfigError(
                f"unknown environment {name!r} (known: {known}) in {self.path}"
            ) from None

    def environment_for_branch(self, branch: str) -> Environment | None:
        """The environment deployed from ``branch``, or None for an unmapped branch."""
        return next((env for env in self.environments.values() if env.branch == branch), None)

    def environment_for_alias(self, alias: str) -> Environment | None:
        """The environment whose MLflow alias is ``alias``, or None."""
        return next((env for env in self.environments.values() if env.alias == alias), None)


def config_path() -> Path:
    """The pyproject to read: ``$PURCHASE_PREDICT_CONFIG``, else the nearest one with the table."""
    if override := os.environ.get(CONFIG_ENV_VAR):
        return Path(override)
    starts = (Path.cwd(), Path(__file__).resolve().parent)
    for start in starts:
        for directory in (start, *start.parents):
            if _has_table(directory / "pyproject.toml"):
                return directory / "pyproject.toml"
    raise ConfigError(
        f"no pyproject.toml with a [tool.{_TABLE}] table in {Path.cwd()} or above it; "
        f"set {CONFIG_ENV_VAR} to its path"
    )


@cache
def _has_table(path: Path) -> bool:
    try:
        return _TABLE in tomllib.loads(path.read_text(encoding="utf-8")).get("tool", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False


def load_config(path: Path | None = None) -> ProjectConfig:
    """Read and validate ``[tool.purchase-predict]``; any problem is a one-line ConfigError."""
    path = path or config_path()
    document = read_document(path, "", ConfigError, tomllib.loads, "valid TOML")
    table = document.get("tool", {}).get(_TABLE)
    if not isinstance(table, dict):
        raise ConfigError(f"{path} has no [tool.{_TABLE}] table")
    where = f"{path} [tool.{_TABLE}]"

    raw_environments = table.get("environments")
    if not isinstance(raw_environments, dict) or not raw_environments:
        raise ConfigError(f"{where} has no [tool.{_TABLE}.environments.<name>] tables")
    environments = {
        name: _environment(name, raw, f"{path} [tool.{_TABLE}.environments.{name}]")
        for name, raw in raw_environments.items()
    }
    for field in ("branch", "alias", "service"):
        _require_unique(environments, field, where)

    config = ProjectConfig(
        path=path,
        model_name=_string(table, "model_name", where),
        experiment_name=_string(table, "experiment_name", where),
        image_name=_string(table, "image_name", where),
        fallback_environment=_string(table, "fallback_environment", where),
        gate_f1_tolerance=_tolerance(table, where),
        environments=environments,
        local_mlflow_store=(
            path.parent / _string(_local_store(table), "local_mlflow_store", where)
        ).resolve(),
    )
    if config.fallback_environment not in environments:
        raise ConfigError(
            f"{where} fallback_environment {config.fallback_environment!r} is not one of "
            f"the environments ({', '.join(sorted(environments))})"
        )
    return config


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else the embedded store of the configuration found."""
    if uri := os.environ.get(TRACKING_URI_ENV_VAR):
        return uri
    return load_config().tracking_uri()


def _local_store(table: dict[str, Any]) -> dict[str, Any]:
    """The table with the embedded store's default path filled in when it names none."""
    return {"local_mlflow_store": DEFAULT_LOCAL_MLFLOW_STORE, **table}


def _environment(name: str, raw: Any, where: str) -> Environment:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table")
    if not _ENV_NAME.match(name):
        raise ConfigError(f"{where}: environment names use letters, digits, '-' and '_'")
    min_instances = _integer(raw, "min_instances", where, minimum=0)
    max_instances = _integer(raw, "max_instances", where, minimum=1)
    if min_instances > max_instances:
        raise ConfigError(f"{where}: min_instances {min_instances} > max_instances {max_instances}")
    return Environment(
        name=name,
        branch=_string(raw, "branch", where),
        alias=_string(raw, "alias", where),
        service=_string(raw, "service", where),
        region=_string(raw, "region", where),
        artifact_repository=_string(raw, "artifact_repository", where),
        min_instances=min_instances,
        max_instances=max_instances,
        memory=_string(raw, "memory", where),
        cpu=_string(raw, "cpu", where, allow_number=True),
        concurrency=_integer(raw, "concurrency", where, minimum=1),
        traffic_steps=_traffic_steps(raw, where),
        observe_seconds=_integer(
            {"observe_seconds": 60, **raw}, "observe_seconds", where, minimum=0
        ),
        metrics_delay_seconds=_integer(
            {"metrics_delay_seconds": 180, **raw}, "metrics_delay_seconds", where, minimum=0
        ),
        allow_faults=_boolean(raw, "allow_faults", where),
    )


def _traffic_steps(raw: dict[str, Any], where: str) -> str:
    value = raw.get("traffic_steps", [100])
    if not isinstance(value, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in value
    ):
        raise ConfigError(f"{where}: traffic_steps must be a list of percentages, got {value!r}")
    if problem := rollout_steps_problem(value):
        raise ConfigError(f"{where}: traffic_steps {value!r} {problem}")
    return ",".join(str(s) for s in value)


def _boolean(raw: dict[str, Any], key: str, where: str) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _string(raw: dict[str, Any], key: str, where: str, *, allow_number: bool = False) -> str:
    value = raw.get(key)
    if allow_number and isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string, got {value!r}")
    if not _SAFE_VALUE.match(value):
        raise ConfigError(f"{where}: {key} {value!r} has characters outside [A-Za-z0-9._/:@-]")
    return value


def _integer(raw: dict[str, Any], key: str, where: str, *, minimum: int) -> int:
    value = raw.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{where}: {key} must be an integer >= {minimum}, got {value!r}")
    return value


def _tolerance(raw: dict[str, Any], where: str) -> float:
    value = raw.get("gate_f1_tolerance")
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ConfigError(f"{where}: gate_f1_tolerance must be a number in [0, 1], got {value!r}")
    return float(value)


def _require_unique(environments: dict[str, Environment], field: str, where: str) -> None:
    seen: dict[str, str] = {}
    for env in environments.values():
        value = getattr(env, field)
        if value in seen:
            raise ConfigError(
                f"{where}: environments {seen[value]!r} and {env.name!r} share {field} {value!r}"
            )
        seen[value] = env.name
