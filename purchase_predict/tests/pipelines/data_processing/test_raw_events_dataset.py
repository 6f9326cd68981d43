"""RawEventsDataset: real files in tmp_path, read by a real DuckDB connection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from kedro.io import DatasetError

from purchase_predict.datagen import RAW_EVENT_COLUMNS, generate_events
from purchase_predict.datasets import RawEventsDataset, RawEventsError
from purchase_predict.pipelines.data_processing.nodes import EventValidationError, validate_events


def _load_error(path: Path, connection: dict[str, Any], file_format: str = "parquet") -> str:
    dataset = RawEventsDataset(filepath=str(path), file_format=file_format, connection=connection)
    with pytest.raises(RawEventsError) as caught:
        dataset.load()
    assert isinstance(caught.value, DatasetError)  # Kedro reports it like any dataset error
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_file_is_named(tmp_path: Path, duckdb_connection: dict[str, Any]) -> None:
    path = tmp_path / "01_raw" / "events.parquet"

    message = _load_error(path, duckdb_connection)

    assert message.startswith(f"raw events file {path} does not exist;")
    assert f"purchase-predict-generate --out {path}" in message


def test_empty_file_is_named(tmp_path: Path, duckdb_connection: dict[str, Any]) -> None:
    path = tmp_path / "events.parquet"
    path.touch()

    assert _load_error(path, duckdb_connection) == f"raw events file {path} is empty (0 bytes)"


def test_missing_columns_are_named(
    tmp_path: Path,
    duckdb_connection: dict[str, Any],
    handmade_events: pa.Table,
    write_parquet: Callable,
) -> None:
    path = write_parquet(handmade_events.drop_columns(["brand", "price"]), tmp_path / "e.parquet")

    message = _load_error(path, duckdb_connection)

    assert message.startswith(f"raw events file {path} lacks column(s) brand, price;")


def test_unreadable_file_is_named(tmp_path: Path, duckdb_connection: dict[str, Any]) -> None:
    path = tmp_path / "events.parquet"
    path.write_text("event_time,event_type\nnot,parquet\n")

    message = _load_error(path, duckdb_connection)

    assert message.startswith(f"raw events file {path} cannot be read as parquet: ")


def test_load_returns_exactly_the_raw_columns_lazily(
    tmp_path: Path,
    duckdb_connection: dict[str, Any],
    handmade_events: pa.Table,
    write_parquet: Callable,
) -> None:
    extra = handmade_events.append_column("user_agent", pa.array(["x"] * len(handmade_events)))
    path = write_parquet(extra, tmp_path / "events.parquet")

    events = RawEventsDataset(filepath=str(path), connection=duckdb_connection).load()

    assert tuple(events.columns) == RAW_EVENT_COLUMNS
    assert events.count().execute() == len(handmade_events)


def test_csv_from_the_generator_loads(tmp_path: Path, duckdb_connection: dict[str, Any]) -> None:
    path = generate_events(tmp_path / "events.csv", sessions=50, seed=3).path

    events = RawEventsDataset(
        filepath=str(path), file_format="csv", connection=duckdb_connection
    ).load()

    assert tuple(events.columns) == RAW_EVENT_COLUMNS
    assert events.count().execute() == pacsv.read_csv(path).num_rows


@pytest.mark.parametrize(("name", "file_format"), [("e.csv", "csv"), ("e.parquet", "parquet")])
def test_format_follows_the_extension_unless_given(name: str, file_format: str) -> None:
    assert RawEventsDataset(filepath=f"data/{name}")._file_format == file_format
    assert RawEventsDataset(filepath=f"data/{name}", file_format="csv")._file_format == "csv"


def test_loading_creates_the_duckdb_spill_directory(
    tmp_path: Path, handmade_events: pa.Table, write_parquet: Callable
) -> None:
    spill = tmp_path / "data" / "02_intermediate" / "duckdb_spill"
    path = write_parquet(handmade_events, tmp_path / "events.parquet")
    connection = {"backend": "duckdb", "temp_directory": str(spill)}

    RawEventsDataset(filepath=str(path), connection=connection).load()

    assert spill.is_dir()


def test_header_only_csv_loads_with_contract_types(
    tmp_path: Path, duckdb_connection: dict[str, Any]
) -> None:
    path = tmp_path / "events.csv"
    path.write_text(",".join(RAW_EVENT_COLUMNS) + "\n")

    events = RawEventsDataset(
        filepath=str(path), file_format="csv", connection=duckdb_connection
    ).load()

    assert events.schema()["price"].is_floating()
    assert events.schema()["user_id"].is_integer()
    with pytest.raises(EventValidationError, match=r"events \[not empty\]: zero rows"):
        validate_events(events)


# A valid REES46 line, repeated: past DuckDB's type-sniffing sample (20 480 lines) by far.
_GOOD_LINE = (
    "2019-10-01 00:00:07 UTC,view,100,2053013555631882655,electronics.smartphone,samsung,"
    "200.0,10,5ab90da7-73ae-4558-a40f-226a97d32baa"
)
_CSV_LINES = 130_200
LATE_LINE = 130_189  # 1-based, the header being line 1
_BAD_LINES = {
    "event_time": _GOOD_LINE.replace("2019-10-01 00:00:07 UTC", "yesterday"),
    "price": _GOOD_LINE.replace(",200.0,", ",abc,"),
    "user_id": _GOOD_LINE.replace(",200.0,10,", ",200.0,ten,"),
    "header": ",".join(RAW_EVENT_COLUMNS),
}


def _csv_with_bad_line(directory: Path, bad: str, line: int) -> Path:
    """A CSV of ``_CSV_LINES`` lines whose ``line`` is ``_BAD_LINES[bad]``."""
    lines = [",".join(RAW_EVENT_COLUMNS), *[_GOOD_LINE] * (_CSV_LINES - 1)]
    lines[line - 1] = _BAD_LINES[bad]
    path = directory / f"{bad}_at_{line}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _validation_error_of(path: Path, connection: dict[str, Any]) -> EventValidationError:
    """Load the CSV and validate it as the pipeline does: the contract's error, wherever."""
    with pytest.raises(EventValidationError) as caught:
        events = RawEventsDataset(
            filepath=str(path), file_format="csv", connection=connection
        ).load()
        validate_events(events)
    return caught.value


# (bad line, column, rule, part of the detail): the contract's names for each kind of bad line.
_BAD_LINE_ERRORS = [
    ("event_time", "event_time", "parseable timestamp", "'yesterday'"),
    ("price", "price", "type number", "'abc' is not a number"),
    ("header", "events", "header once", "repeats the header"),
    ("user_id", "user_id", "type integer", "'ten' is not an integer"),
]


@pytest.mark.parametrize("line", [4, LATE_LINE])
@pytest.mark.parametrize("expected", _BAD_LINE_ERRORS, ids=lambda case: case[0])
def test_bad_csv_value_is_the_contracts_error_with_file_and_line(
    tmp_path: Path,
    duckdb_connection: dict[str, Any],
    expected: tuple[str, str, str, str],
    line: int,
) -> None:
    bad, column, rule, detail = expected
    path = _csv_with_bad_line(tmp_path, bad, line)

    error = _validation_error_of(path, duckdb_connection)

    assert [(c, r) for c, r, _ in error.failures] == [(column, rule)]
    message = str(error)
    assert "\n" not in message
    assert f"{path} line {line}" in message
    assert detail in message


def test_csv_naming_a_column_twice_is_refused(
    tmp_path: Path, duckdb_connection: dict[str, Any]
) -> None:
    path = tmp_path / "events.csv"
    header = [*RAW_EVENT_COLUMNS, "price"]
    path.write_text(",".join(header) + "\n" + _GOOD_LINE + ",12.0\n")

    error = _validation_error_of(path, duckdb_connection)

    assert isinstance(error, DatasetError)  # raised on load: Kedro reports it as it is
    assert error.failures == [
        ("price", "named once in the header", f"{path} line 1 names it 2 times")
    ]
