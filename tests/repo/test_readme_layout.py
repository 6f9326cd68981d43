"""The README's layout table walks the pipeline in order and names every top-level folder."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("events", "features", "model", "registry", "image", "revision")


def _layout_rows() -> list[tuple[str, str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| ([^|]+?) \| `([^`]+)` \|", section, flags=re.M)
    return [(stage.strip(), folder) for stage, folder in rows]


def test_the_stages_come_in_pipeline_order_one_folder_each() -> None:
    rows = _layout_rows()
    staged = [stage for stage, _ in rows if stage in STAGES]
    assert tuple(staged) == STAGES
    for _, folder in rows:
        assert (ROOT / folder).is_dir(), f"README layout names {folder}, which is not a folder"


def test_every_top_level_folder_is_in_the_table() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {name.split("/", 1)[0] for name in tracked if "/" in name}
    top -= {".ci", "purchase_predict"}  # .ci/run is the CI entry; the Kedro project has 3 rows
    named = {folder.rstrip("/").split("/", 1)[0] for _, folder in _layout_rows()}
    named |= {folder.rstrip("/") for _, folder in _layout_rows()}
    assert top <= named, f"folders missing from the README layout: {sorted(top - named)}"
