"""What a workflow step's command line has in common: read the step's environment, write its
outputs and summary, turn a refusal into one GitHub error annotation.

A step is a function from the step's ``env:`` mapping to a :class:`StepResult`; it raises
:class:`StepRefused` with a message that says what to set or change. Standard library only:
the steps run with a bare ``python3`` before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from purchase_contract.step_outputs import append_summary, append_to, format_outputs


class StepRefused(ValueError):
    """The step's inputs cannot be used; the message is the annotation."""


@dataclass(frozen=True)
class StepResult:
    """Outputs (kebab-case), log lines, and a Markdown summary (empty: none)."""

    outputs: dict[str, str]
    log: list[str] = field(default_factory=list)
    summary: str = ""


Step = Callable[[Mapping[str, str]], StepResult]


def is_true(value: str | None) -> bool:
    """A workflow boolean as an environment variable: ``true`` (any case) or not."""
    return (value or "").strip().lower() == "true"


def run_steps(
    prog: str, title: str, steps: Mapping[str, Step], argv: list[str] | None = None
) -> int:
    """Run the step named on the command line with ``os.environ``; returns the exit status.

    0 done; 1 refused (``::error title=<title>::<reason>`` on stdout, where the runner turns it
    into an annotation); 2 bad invocation (argparse).
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=f"The {title} workflow's steps; each reads its inputs from the environment.",
        epilog="Outputs are key=value lines on stdout, appended to $GITHUB_OUTPUT when it is set; "
        "a summary is appended to $GITHUB_STEP_SUMMARY. Exit status: 0 done, 1 refused, 2 usage.",
    )
    parser.add_argument("step", choices=sorted(steps), help="the step to run")
    args = parser.parse_args(argv)
    try:
        result = steps[args.step](os.environ)
    except StepRefused as err:
        print(f"::error title={title}::{err}", flush=True)
        return 1
    lines = format_outputs(result.outputs)
    append_to("GITHUB_OUTPUT", lines)
    if result.summary:
        append_summary(result.summary)
    for line in result.log:
        print(line)
    if not os.environ.get("GITHUB_OUTPUT"):
        sys.stdout.write(lines)
    return 0
