"""The data_processing pipeline slice, run by Kedro on real datasets in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kedro.io import DataCatalog, DatasetError
from kedro.runner import SequentialRunner
from kedro_datasets.ibis import FileDataset

from purchase_contract.features import FEATURE_DTYPES, LABEL
from purchase_predict.datagen import generate_events
from purchase_predict.datasets import RawEventsDataset
from purchase_predict.pipelines.data_processing import create_pipeline
from purchase_predict.pipelines.data_processing.nodes import build_primary_table, validate_events

# The contract's pandas dtypes as Parquet (Arrow) types: text columns are strings.
_ARROW_TYPES = {"int64": pa.int64(), "float64": pa.float64(), "object": pa.string()}
PRIMARY_PARQUET_TYPES = {
    **{name: _ARROW_TYPES[dtype] for name, dtype in FEATURE_DTYPES.items()},
    "user_id": pa.int64(),
    "user_session": pa.string(),
    LABEL: pa.int64(),
}


def _table_types(path: Path) -> dict[str, pa.DataType]:
    return {field.name: field.type for field in pq.read_schema(path)}


def test_pipeline_writes_the_hand_computed_primary_table(
    tmp_path: Path,
    project_catalog: Callable[..., DataCatalog],
    handmade_events: pa.Table,
    expected_primary_rows: list[dict[str, Any]],
    write_parquet: Callable,
) -> None:
    catalog = project_catalog(tmp_path)
    write_parquet(handmade_events, tmp_path / "data" / "01_raw" / "events.parquet")

    SequentialRunner().run(create_pipeline(), catalog)

    primary_file = tmp_path / "data" / "03_primary" / "primary.parquet"
    assert _table_types(primary_file) == PRIMARY_PARQUET_TYPES
    primary = catalog.load("primary@pandas")
    rows = primary.astype(object).where(primary.notna(), None).to_dict("records")
    assert rows == expected_primary_rows


def test_both_ibis_datasets_share_one_duckdb_connection(
    tmp_path: Path, project_catalog: Callable[..., DataCatalog]
) -> None:
    catalog = project_catalog(tmp_path)

    raw, primary = catalog.get("raw_events"), catalog.get("primary@ibis")

    assert raw.connection is primary.connection
    assert raw.connection.name == "duckdb"


def test_pipeline_on_generated_events_agrees_with_plain_sql(
    tmp_path: Path, project_catalog: Callable[..., DataCatalog]
) -> None:
    catalog = project_catalog(tmp_path)
    raw_file = tmp_path / "data" / "01_raw" / "events.parquet"
    generate_events(raw_file, sessions=2_000, seed=5)

    SequentialRunner().run(create_pipeline(), catalog)

    primary = catalog.load("primary@pandas")
    # The label straight from the raw file, written independently of the nodes.
    carted, purchased = duckdb.sql(
        f"""
        SELECT count(*), sum(bought::INT) FROM (
            SELECT bool_or(event_type = 'purchase') AS bought
            FROM read_parquet('{raw_file}')
            GROUP BY user_session, product_id
            HAVING bool_or(event_type = 'cart')
        )
        """
    ).fetchall()[0]
    assert len(primary) == carted
    assert int(primary["purchased"].sum()) == purchased
    assert primary.set_index(["user_session", "product_id"]).index.is_unique
    assert primary.equals(primary.sort_values(["user_session", "product_id"], ignore_index=True))


def test_csv_and_parquet_give_the_same_primary_table(
    tmp_path: Path, duckdb_connection: dict[str, Any]
) -> None:
    tables = []
    for suffix in ("parquet", "csv"):
        raw_file = generate_events(tmp_path / f"events.{suffix}", sessions=1_000, seed=8).path
        events = RawEventsDataset(
            filepath=str(raw_file), file_format=suffix, connection=duckdb_connection
        ).load()
        tables.append(build_primary_table(validate_events(events)).to_pyarrow())

    assert tables[0].num_rows > 100
    assert tables[0].equals(tables[1])


def test_runtime_parameter_points_the_pipeline_at_a_csv(
    tmp_path: Path, project_catalog: Callable[..., DataCatalog]
) -> None:
    # `kedro run --params raw_events_path=...`: the format follows the extension.
    generate_events(tmp_path / "data" / "01_raw" / "events.parquet", sessions=300, seed=5)
    generate_events(tmp_path / "mine" / "events.csv", sessions=300, seed=5)
    primary_file = tmp_path / "data" / "03_primary" / "primary.parquet"
    primaries = {}
    for raw_events_path in ("data/01_raw/events.parquet", "mine/events.csv"):
        catalog = project_catalog(tmp_path, raw_events_path=raw_events_path)
        SequentialRunner().run(create_pipeline(), catalog)
        primaries[catalog.get("raw_events")._file_format] = pq.read_table(primary_file)

    assert primaries["parquet"].num_rows > 10
    assert primaries["csv"].schema.types == primaries["parquet"].schema.types
    assert primaries["csv"].to_pylist() == primaries["parquet"].to_pylist()


@pytest.fixture(scope="module")
def events_bigger_than_memory_limit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~300 k events: too many for DuckDB to process within 60 MB without spilling."""
    path = tmp_path_factory.mktemp("raw") / "events.parquet"
    return generate_events(path, sessions=45_000, seed=11).path


def _process(raw_file: Path, primary_file: Path, **duckdb_config: Any) -> None:
    """Load, validate, build and save exactly as the pipeline does, on a given connection."""
    # Fixed threads: DuckDB's minimum memory grows with the thread count.
    connection = {"backend": "duckdb", "database": ":memory:", "threads": 2, **duckdb_config}
    events = RawEventsDataset(filepath=str(raw_file), connection=connection).load()
    primary = build_primary_table(validate_events(events))
    FileDataset(filepath=str(primary_file), connection=connection).save(primary)


def test_processing_streams_through_a_small_memory_limit_by_spilling(
    tmp_path: Path, events_bigger_than_memory_limit: Path
) -> None:
    reference = tmp_path / "reference.parquet"
    _process(events_bigger_than_memory_limit, reference)

    # Without a place to spill, 60 MB is not enough for this data...
    with pytest.raises(DatasetError, match="Out of Memory"):
        _process(
            events_bigger_than_memory_limit,
            tmp_path / "fails.parquet",
            memory_limit="60MB",
            temp_directory="",
        )
    # ...with one, DuckDB streams the same plan through disk and writes the same table.
    spilled = tmp_path / "spilled.parquet"
    _process(
        events_bigger_than_memory_limit,
        spilled,
        memory_limit="60MB",
        temp_directory=str(tmp_path / "spill"),
        preserve_insertion_order=False,
    )

    assert pq.read_table(spilled).equals(pq.read_table(reference))
    assert pq.read_metadata(spilled).num_rows > 10_000
