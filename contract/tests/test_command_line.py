"""purchase_contract.command_line: the shared parser and the one-line file errors."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from purchase_contract.command_line import command_parser, read_document


class Refused(ValueError):
    pass


def test_a_document_is_parsed(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"a": 1}')
    (tmp_path / "a.toml").write_text("a = 1\n")
    assert read_document(tmp_path / "a.json", "payload", Refused) == {"a": 1}
    assert read_document(tmp_path / "a.toml", "", Refused, tomllib.loads, "TOML") == {"a": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read payload {path}: No such file or directory"),
        (b"{not json", "payload {path} is not JSON: Expecting property name"),
        (b"\xff\xfe", "payload {path} is not JSON: 'utf-8' codec can't decode"),
    ],
    ids=["missing", "not-json", "not-utf-8"],
)
def test_a_bad_document_is_one_line_naming_what_and_where(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "event.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(Refused) as refused:
        read_document(path, "payload", Refused)
    assert str(refused.value).startswith(message.format(path=path))
    assert "\n" not in str(refused.value)


def test_bad_toml_says_which_file(tmp_path: Path) -> None:
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool\n")
    with pytest.raises(Refused, match=f"^{path} is not valid TOML: "):
        read_document(path, "", Refused, tomllib.loads, "valid TOML")


def test_the_parser_keeps_the_epilog_as_written() -> None:
    epilog = "outputs:\n  a   one\n  b   two\n"
    parser = command_parser("tool.py", "Does a thing.", epilog)
    help_text = parser.format_help()
    assert help_text.startswith("usage: tool.py")
    assert epilog in help_text
