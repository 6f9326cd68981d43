"""The data_processing pipeline on Apache Spark (local mode), through ``kedro run --env spark``'s
catalog: its primary table is DuckDB's, row for row, column for column, types included.

Marked ``spark`` (a JVM and a SparkSession: slow to start): ``nox -s spark`` runs these tests,
``nox -s tests`` leaves them out. One SparkSession serves the whole module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kedro.io import DataCatalog
from kedro.runner import SequentialRunner
from kedro_datasets._utils import ConnectionMixin

from purchase_predict.datagen import generate_events
from purchase_predict.pipelines.data_processing import create_pipeline
from purchase_predict.pipelines.data_processing.nodes import EventValidationError

pytestmark = pytest.mark.spark

RAW_EVENTS = Path("data") / "01_raw" / "events.parquet"
PRIMARY = Path("data") / "03_primary" / "primary.parquet"


@pytest.fixture(scope="module")
def spark_session(module_monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """One local SparkSession: two cores, two shuffle partitions (the data is small), no UI,
    bound to loopback. The catalog's ``backend: pyspark`` connection picks it up."""
    from pyspark.sql import SparkSession  # noqa: PLC0415 - only `nox -s spark` installs pyspark

    module_monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("purchase-predict-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    # Kedro caches Ibis connections by their configuration: none may outlive its session.
    for key in [k for k in ConnectionMixin._connections if ("backend", "pyspark") in k[1]]:
        del ConnectionMixin._connections[key]
    session.stop()


def _run(root: Path, env: str, project_catalog: Callable[..., DataCatalog]) -> DataCatalog:
    """``kedro run --pipeline data_processing --env <env>`` on ``root/data``."""
    catalog = project_catalog(root, env=env)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


def _columns(table: pa.Table) -> list[tuple[str, pa.DataType]]:
    # Names and Arrow types, in order. Not compared: nullability flags (DuckDB writes group
    # keys as required, Spark writes every column optional) and Spark's schema metadata.
    return [(field.name, field.type) for field in table.schema]


def _primary_on_both_engines(
    tmp_path: Path, events: pa.Table, project_catalog: Callable[..., DataCatalog]
) -> dict[str, tuple[pa.Table, pd.DataFrame]]:
    """The same raw events through the base catalog (DuckDB) and conf/spark: per engine, the
    primary table as written (a Parquet file; Spark's directory of part files) and as training
    loads it (``primary@pandas``)."""
    primaries = {}
    for engine, env in (("duckdb", "local"), ("spark", "spark")):
        root = tmp_path / engine
        (root / RAW_EVENTS).parent.mkdir(parents=True)
        pq.write_table(events, root / RAW_EVENTS)
        catalog = _run(root, env, project_catalog)
        primaries[engine] = (pq.read_table(root / PRIMARY), catalog.load("primary@pandas"))
    assert (tmp_path / "spark" / PRIMARY).is_dir()  # written by Spark, not by DuckDB
    return primaries


def _assert_same_primary(primaries: dict[str, tuple[pa.Table, pd.DataFrame]]) -> None:
    (duckdb_table, duckdb_frame), (spark_table, spark_frame) = (
        primaries["duckdb"],
        primaries["spark"],
    )
    assert _columns(spark_table) == _columns(duckdb_table)
    assert spark_table.to_pylist() == duckdb_table.to_pylist()
    pd.testing.assert_frame_equal(spark_frame, duckdb_frame)  # dtypes included


@pytest.mark.usefixtures("spark_session")
def test_spark_writes_duckdbs_primary_table_from_generated_events(
    tmp_path: Path, project_catalog: Callable[..., DataCatalog]
) -> None:
    events = pq.read_table(generate_events(tmp_path / "events.parquet", sessions=2_000).path)

    primaries = _primary_on_both_engines(tmp_path, events, project_catalog)

    _assert_same_primary(primaries)
    assert primaries["spark"][0].num_rows > 500
    assert primaries["spark"][1]["category"].notna().any()


@pytest.fixture
def handmade_events_in_each_time_form(
    handmade_events: pa.Table,
    event_time_as: Callable[[pa.Table, str], pa.Table],
    event_time_form: str,
) -> pa.Table:
    """The hand-made events with ``event_time`` in each accepted physical form in turn."""
    return event_time_as(handmade_events, event_time_form)


@pytest.mark.usefixtures("spark_session")
def test_spark_writes_duckdbs_primary_table_from_hand_made_events(
    tmp_path: Path,
    handmade_events_in_each_time_form: pa.Table,
    expected_primary_rows: list[dict[str, Any]],
    project_catalog: Callable[..., DataCatalog],
) -> None:
    events = handmade_events_in_each_time_form

    primaries = _primary_on_both_engines(tmp_path, events, project_catalog)

    _assert_same_primary(primaries)
    assert primaries["spark"][0].to_pylist() == expected_primary_rows


@pytest.mark.usefixtures("spark_session")
def test_spark_ignores_duplicate_events_as_duckdb_does(
    tmp_path: Path,
    handmade_rows: list[tuple],
    make_events: Callable[[list[tuple]], pa.Table],
    project_catalog: Callable[..., DataCatalog],
) -> None:
    primaries = _primary_on_both_engines(tmp_path, make_events(handmade_rows * 3), project_catalog)

    _assert_same_primary(primaries)


def _no_carts(rows: list[tuple]) -> list[tuple]:
    return [row for row in rows if row[1] != "cart"]


def _bad_time_and_price(rows: list[tuple]) -> list[tuple]:
    rows[3] = ("yesterday", *rows[3][1:])
    rows[0] = (*rows[0][:6], -5.0, *rows[0][7:])
    return rows


def _unknown_event_type(rows: list[tuple]) -> list[tuple]:
    rows[1] = (rows[1][0], "remove_from_cart", *rows[1][2:])
    return rows


@pytest.mark.usefixtures("spark_session")
@pytest.mark.parametrize("breakage", [_no_carts, _bad_time_and_price, _unknown_event_type])
def test_spark_refuses_bad_events_with_duckdbs_error(
    tmp_path: Path,
    handmade_rows: list[tuple],
    make_events: Callable[[list[tuple]], pa.Table],
    project_catalog: Callable[..., DataCatalog],
    breakage: Callable[[list[tuple]], list[tuple]],
) -> None:
    events = make_events(breakage(handmade_rows))
    failures = {}
    for engine, env in (("duckdb", "local"), ("spark", "spark")):
        root = tmp_path / engine
        (root / RAW_EVENTS).parent.mkdir(parents=True)
        pq.write_table(events, root / RAW_EVENTS)
        with pytest.raises(EventValidationError) as caught:
            _run(root, env, project_catalog)
        failures[engine] = caught.value.failures
        assert not (root / PRIMARY).exists()

    assert failures["spark"] == failures["duckdb"]
