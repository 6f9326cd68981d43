"""Benchmarks of the API, the feature step and the local pipeline, as ratios against an anchor."""

__version__ = "0.1.0"

from pathlib import Path

# The checkout being measured: the benchmark is installed editable from bench/ of it.
REPO_ROOT = Path(__file__).resolve().parents[3]
