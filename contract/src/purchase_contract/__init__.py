"""What the Kedro project, the API, the scripts and the workflows agree on (stdlib only)."""

__version__ = "0.1.0"
