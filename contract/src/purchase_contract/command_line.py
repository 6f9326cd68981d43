"""What the project's command lines share: a parser whose help keeps the layout of its epilog,
and one-line errors for a file that cannot be read or parsed."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def command_parser(
    prog: str | None, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """An ``ArgumentParser`` that prints ``epilog`` as written (tables, examples)."""
    return argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def read_document(
    path: Path,
    what: str,
    error: type[Exception],
    parse: Callable[[str], Any] = json.loads,
    kind: str = "JSON",
) -> Any:
    """The parsed document at ``path``, else ``error`` with one line naming ``what`` and the path:
    ``cannot read <what> <path>: <reason>`` or ``<what> <path> is not <kind>: <reason>``."""
    name = f"{what} {path}" if what else str(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise error(f"cannot read {name}: {err.strerror or err}") from None
    try:
        return parse(data.decode("utf-8"))
    except ValueError as err:  # undecodable bytes, json.JSONDecodeError, tomllib.TOMLDecodeError
        raise error(f"{name} is not {kind}: {err}") from None
