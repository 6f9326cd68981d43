"""Read the repository-wide names from ``[tool.purchase-predict]`` in the root pyproject.

The root ``pyproject.toml`` is the single source of truth for the model name and the
experiment name; Kedro reads it through the ``project:`` config resolver.
"""

from __future__ import annotations

import os
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

_TABLE = "purchase-predict"


def _candidates() -> list[Path]:
    starts = [Path.cwd(), Path(__file__).resolve().parent]
    if env := os.environ.get("PURCHASE_PREDICT_CONFIG"):
        return [Path(env)]
    return [p / "pyproject.toml" for start in starts for p in (start, *start.parents)]


@cache
def project_settings() -> dict[str, Any]:
    """The ``[tool.purchase-predict]`` table of the first pyproject that has one."""
    for path in _candidates():
        if path.is_file():
            table = tomllib.loads(path.read_text()).get("tool", {}).get(_TABLE)
            if table is not None:
                return table
    raise LookupError(
        "no pyproject.toml with a [tool.purchase-predict] table above "
        f"{Path.cwd()}; set PURCHASE_PREDICT_CONFIG to its path"
    )


def project_setting(key: str) -> Any:
    """One value of the table, for the ``${project:<key>}`` config resolver."""
    settings = project_settings()
    if key not in settings:
        raise KeyError(f"[tool.{_TABLE}] has no key {key!r}")
    return settings[key]
