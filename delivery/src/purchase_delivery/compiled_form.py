"""The compiled form of a newly registered version, logged with it for the API's fetch mode.

A version registered with its compiled form (``serving_compiled.json`` and its record, see the
API's ``app/model/publish.py``) is fetched over MLflow's REST API and served without MLflow's
client nor scikit-learn: a fetch-mode start in about the time of a baked one. The format and
the code that writes it are the API's; this step runs them when the API package is installed
beside the gate (``purchase_predict_api[model]``) and otherwise says, in the summary, that the
version goes without (fetch mode then reads its MLflow format, as before).
"""

from __future__ import annotations

import importlib


def log_compiled_form(model_name: str, version: str, tracking_uri: str) -> str:
    """Log version ``version``'s compiled form with it; a one-line note for the summary."""
    try:
        publish = importlib.import_module("app.model.publish")
    except ImportError as err:
        return (
            f"No compiled form logged with version {version}: the API package is not installed "
            f"here ({err}); fetch mode reads its MLflow format."
        )
    try:
        files = publish.publish_compiled_form(model_name, version, tracking_uri=tracking_uri)
    except Exception as err:  # the version stays usable: fetch mode reads its MLflow format
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:300]
        return f"No compiled form logged with version {version}: {reason}."
    if not files:
        return f"No compiled form logged with version {version}: not the training pipeline."
    return f"Compiled form ({', '.join(f'`{f}`' for f in files)}) logged with version {version}."
