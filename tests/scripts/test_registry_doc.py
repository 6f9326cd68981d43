"""The ``[tool.purchase-predict]`` example in docs/registry.md is one a reader can copy.

It must parse with the project's own reader (``purchase_contract.config.load_config``), which is what the
workflows and scripts, and a caller's ``config``, go through, and list every key the root
pyproject has: a template missing a required key (it once lacked ``experiment_name``) sends a
reader to a ``ConfigError``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from purchase_contract.config import load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "registry.md"


def _template() -> str:
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    templates = [block for block in blocks if "[tool.purchase-predict]" in block]
    assert len(templates) == 1, "docs/registry.md should hold one [tool.purchase-predict] example"
    return templates[0]


def test_the_documented_template_parses_with_the_projects_reader(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text(_template(), encoding="utf-8")
    config = load_config(path)
    assert config.experiment_name and len(config.environments) >= 1


def test_the_documented_template_has_every_key_of_the_root_pyproject() -> None:
    documented = tomllib.loads(_template())["tool"]["purchase-predict"]
    actual = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "purchase-predict"
    ]
    assert set(documented) == set(actual)
    (documented_env,) = documented["environments"].values()
    for name, environment in actual["environments"].items():
        assert set(documented_env) == set(environment), name
