"""``kedro run --env cloud`` (conf/cloud/): its configuration loads with the project's config
loader and names BigQuery and gs:// datasets, without credentials and without connecting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kedro.io import DataCatalog
from kedro_datasets._utils import ConnectionMixin

from purchase_predict.config_loader import ProjectConfigLoader
from purchase_predict.settings import CONFIG_LOADER_ARGS

PROJECT_DIR = Path(__file__).resolve().parents[1]
ROOT_PYPROJECT = PROJECT_DIR.parent / "pyproject.toml"
DATA_STEP = ("raw_events", "primary@ibis", "primary@pandas")


def _cloud_catalog(monkeypatch: pytest.MonkeyPatch, **runtime_params: str) -> dict[str, Any]:
    monkeypatch.setenv("PURCHASE_PREDICT_CONFIG", str(ROOT_PYPROJECT))
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    loader = ProjectConfigLoader(
        conf_source=str(PROJECT_DIR / "conf"),
        env="cloud",
        runtime_params=runtime_params,
        **CONFIG_LOADER_ARGS,
    )
    return loader["catalog"]


def test_cloud_catalog_resolves_to_bigquery_and_cloud_storage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = _cloud_catalog(monkeypatch)

    raw, primary, training_input = (catalog[name] for name in DATA_STEP)
    assert "${" not in repr({name: catalog[name] for name in DATA_STEP})  # all interpolated
    assert raw["filepath"] == "gs://my-training-data/events/events.parquet"
    assert raw["connection"] == primary["connection"]  # one connection: one BigQuery session
    assert raw["connection"]["backend"] == "bigquery"
    assert raw["connection"]["project_id"] == "my-project"
    assert raw["connection"]["dataset_id"] == training_input["dataset"] == "purchase_predict"
    assert (primary["table_name"], training_input["table_name"]) == ("primary", "primary")
    assert "ORDER BY user_session, product_id" in training_input["load_args"]["query_or_table"]
    # Everything else (the model, the metrics, the plots) is the base catalog's.
    assert catalog["purchase_model"]["type"] == "pickle.PickleDataset"


def test_cloud_catalog_takes_another_raw_file_as_a_parameter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = _cloud_catalog(monkeypatch, raw_events_path="gs://elsewhere/events.csv")

    assert catalog["raw_events"]["filepath"] == "gs://elsewhere/events.csv"


def test_cloud_datasets_are_built_without_credentials_or_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    catalog = DataCatalog.from_config(_cloud_catalog(monkeypatch))
    connections_before = set(ConnectionMixin._connections)

    datasets = {name: catalog.get(name) for name in DATA_STEP}

    raw = datasets["raw_events"]
    assert type(raw).__name__ == "RawEventsDataset"
    assert (raw._fs_prefix, raw._file_format) == ("gs://", "parquet")
    assert type(datasets["primary@ibis"]).__name__ == "TableDataset"
    assert type(datasets["primary@pandas"]).__name__ == "GBQTableDataset"
    # Connections are made on first use only: building the datasets opened none.
    assert raw._fs is None
    assert set(ConnectionMixin._connections) == connections_before
