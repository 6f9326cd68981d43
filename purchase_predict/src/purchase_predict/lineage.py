"""Where a training run comes from: the git commit and branch, from CI variables or git itself."""

from __future__ import annotations

import os
import subprocess

UNKNOWN_COMMIT = "unknown"
# First set wins. GITHUB_HEAD_REF is the source branch of a pull request (GITHUB_REF_NAME is
# then "<n>/merge").
COMMIT_ENV_VARS = ("GIT_COMMIT", "GITHUB_SHA")
BRANCH_ENV_VARS = ("GIT_BRANCH", "GITHUB_HEAD_REF", "GITHUB_REF_NAME")


def _git(*args: str) -> str:
    """One git value, or "" outside a checkout (or before the first commit)."""
    try:
        result = subprocess.run(
            ["git", *args], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return result.stdout.strip()


def _first_env(names: tuple[str, ...]) -> str:
    return next((value for name in names if (value := os.environ.get(name, "").strip())), "")


def git_commit() -> str:
    """The commit being trained: a CI variable, else ``git rev-parse HEAD``, else "unknown"."""
    return _first_env(COMMIT_ENV_VARS) or _git("rev-parse", "HEAD") or UNKNOWN_COMMIT


def git_branch() -> str:
    """The branch being trained: a CI variable, else git's current branch; "" when detached."""
    return _first_env(BRANCH_ENV_VARS) or _git("branch", "--show-current")


def lineage_tags(data_fingerprint: str) -> dict[str, str]:
    """The run tags ``git_commit``, ``data_fingerprint`` and, when known, ``git_branch``."""
    tags = {"git_commit": git_commit(), "data_fingerprint": data_fingerprint}
    if branch := git_branch():
        tags["git_branch"] = branch
    return tags
