"""Step outputs and job summaries of the command lines the workflows run.

Outputs are ``key=value`` lines on stdout, appended to ``$GITHUB_OUTPUT`` when it is set (keys are
kebab-case, GitHub's convention for inputs and outputs); a summary is Markdown appended to
``$GITHUB_STEP_SUMMARY``. Outside GitHub Actions (and under act without those files) only stdout
is written.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

_KEY = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def format_outputs(outputs: Mapping[str, str]) -> str:
    """``key=value`` lines; a key that is not kebab-case or a value with a newline is a bug."""
    for key, value in outputs.items():
        if not _KEY.match(key):
            raise ValueError(f"step output {key!r} is not kebab-case")
        if "\n" in value or "\r" in value:
            raise ValueError(f"step output {key} holds a line break")
    return "".join(f"{key}={value}\n" for key, value in outputs.items())


def write_outputs(outputs: Mapping[str, str]) -> None:
    """Print the outputs and append them to ``$GITHUB_OUTPUT`` when it is set."""
    lines = format_outputs(outputs)
    sys.stdout.write(lines)
    append_to("GITHUB_OUTPUT", lines)


def append_summary(markdown: str) -> None:
    """Append Markdown to the job summary (``$GITHUB_STEP_SUMMARY``) when there is one."""
    append_to("GITHUB_STEP_SUMMARY", markdown if markdown.endswith("\n") else markdown + "\n")


def append_to(variable: str, text: str) -> None:
    """Append ``text`` to the file named by the environment variable, if it is set."""
    if path := os.environ.get(variable):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(text)
