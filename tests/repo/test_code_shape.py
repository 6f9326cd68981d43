"""The shape rules of the code outside tests: no function over 60 lines, no class over 250,
no ``sys.path`` edits (every suite runs from its package install)."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION_LINES = 60
MAX_CLASS_LINES = 250


def _source_files() -> list[Path]:
    listed = subprocess.check_output(
        ["git", "ls-files", "-co", "--exclude-standard", "*.py"], cwd=ROOT, text=True
    ).split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _is_test(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return "tests" in parts or path.name.startswith("test_") or path.name == "conftest.py"


def _too_long(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        limit = {
            ast.FunctionDef: MAX_FUNCTION_LINES,
            ast.AsyncFunctionDef: MAX_FUNCTION_LINES,
            ast.ClassDef: MAX_CLASS_LINES,
        }.get(type(node))
        if limit is None:
            continue
        length = node.end_lineno - node.lineno + 1
        where = path.relative_to(ROOT)
        if length > limit:
            found.append(f"{where}:{node.lineno} {node.name} is {length} lines (limit {limit})")
    return found


def test_no_function_or_class_is_too_long() -> None:
    offenders = [line for path in _source_files() if not _is_test(path) for line in _too_long(path)]
    assert not offenders, "\n".join(offenders)


def test_nothing_edits_sys_path() -> None:
    edits = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _source_files()
        if path != Path(__file__).resolve()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if "sys.path.insert" in line or "sys.path.append" in line
    ]
    assert not edits, edits


if __name__ == "__main__":
    for path in _source_files():
        if not _is_test(path):
            for line in _too_long(path):
                print(line)  # noqa: T201
    raise SystemExit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))


def _nox_sessions() -> dict[str, str]:
    """Session function name -> docstring, read from the noxfile (nox itself is not needed)."""
    tree = ast.parse((ROOT / "noxfile.py").read_text(encoding="utf-8"))
    return {
        node.name: ast.get_docstring(node) or ""
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any("session" in ast.unparse(decorator) for decorator in node.decorator_list)
    }


def test_nox_list_reads_as_a_menu() -> None:
    # `nox -l` shows the first line of each docstring: it must say it all, in one sentence.
    sessions = _nox_sessions()
    assert {"lint", "tests", "e2e", "bench", "train", "pipeline", "serve"} <= set(sessions)
    for name, doc in sessions.items():
        first = doc.split("\n", 1)[0]
        assert first and first.endswith("."), f"nox session {name}: {first!r}"
        assert len(first) <= 100, f"nox session {name}: its first line is {len(first)} long"
        assert doc == first or doc.split("\n")[1] == "", f"nox session {name}: no blank line"
