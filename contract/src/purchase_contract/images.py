"""Where images live: the Artifact Registry host and an image's path and reference."""

from __future__ import annotations


def registry_host(region: str, override: str = "") -> str:
    """``override`` when given (a mirror, a local registry), else ``<region>-docker.pkg.dev``."""
    return override or f"{region}-docker.pkg.dev"


def image_path(host: str, project: str, repository: str, image: str) -> str:
    """``<host>/<project>/<repository>/<image>`` (Artifact Registry's Docker layout)."""
    return f"{host}/{project}/{repository}/{image}"


def image_reference(path: str, tag: str) -> str:
    """``<path>:<tag>``."""
    return f"{path}:{tag}"
