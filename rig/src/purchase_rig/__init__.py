"""The offline rig: Docker engine, registry, MLflow server, Cloud Run stand-in, GitHub Actions under act, the local pipeline."""

__version__ = "0.1.0"

from pathlib import Path

# The checkout the rig drives: it is installed editable from rig/ of that checkout.
REPO_ROOT = Path(__file__).resolve().parents[3]
