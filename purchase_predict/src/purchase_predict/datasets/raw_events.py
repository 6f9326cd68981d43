"""The raw events dataset: an Ibis ``FileDataset`` that checks the file before use.

Missing, empty or unreadable files and files without the nine REES46 columns fail at load
time with one line naming the file, instead of a backend stack trace deep inside a node.
A CSV header naming a column twice fails with the contract's ``EventValidationError``.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import ibis.expr.datatypes as dt
import ibis.expr.types as ir
from kedro.io import DatasetError
from kedro_datasets.ibis import FileDataset

from purchase_contract.events import RAW_COLUMNS, EventValidationError
from purchase_predict.datagen import RAW_EVENT_COLUMNS

if TYPE_CHECKING:
    from ibis import BaseBackend


class RawEventsError(DatasetError):
    """The raw events file is missing, empty, unreadable or lacks REES46 columns."""


class RawEventsContractError(RawEventsError, EventValidationError):
    """The file breaks a rule of the data contract seen on load (a CSV header naming a
    column twice): the contract's error, and a ``DatasetError`` so Kedro reports it as is."""


class RawEventsDataset(FileDataset):
    """REES46-style events (Parquet or CSV, local or remote) as a lazy Ibis table.

    Loading registers the file with the configured backend and returns exactly the nine
    raw columns (extra columns are dropped); nothing is read beyond the schema (and, for a
    CSV, its header line).
    """

    _contract_types: dict[str, str] | None = None  # load_args.types this class set

    def __init__(self, filepath: str, file_format: str | None = None, **kwargs: Any) -> None:
        """As ``FileDataset``; without ``file_format``, ``.csv`` files are CSV, others Parquet
        (so ``kedro run --params raw_events_path=my.csv`` needs nothing else)."""
        inferred = "csv" if PurePosixPath(filepath).suffix.lower() == ".csv" else "parquet"
        super().__init__(filepath, file_format or inferred, **kwargs)

    def load(self) -> ir.Table:
        """The events table, or ``RawEventsError`` naming the file and what is wrong."""
        path = self._fs_prefix + str(self._get_load_path())
        self._check_present(path)
        if self._file_format == "csv":
            self._use_contract_csv_types(self._csv_header(path))
        try:
            table = super().load()
        except Exception as error:
            # FileDataset wraps backend errors; the backend's own first line is the useful one.
            cause = error.__cause__ or error
            detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
            raise RawEventsError(
                f"raw events file {path} cannot be read as {self._file_format}: {detail}"
            ) from error
        missing = [column for column in RAW_EVENT_COLUMNS if column not in table.columns]
        if missing:
            raise RawEventsError(
                f"raw events file {path} lacks column(s) {', '.join(missing)}; "
                f"the REES46 columns are {', '.join(RAW_EVENT_COLUMNS)}"
            )
        table = table.select(*RAW_EVENT_COLUMNS)
        if self._file_format == "csv":
            table = _with_contract_types(table)
        return table

    def _connect(self) -> BaseBackend:
        spill_directory = self._connection_config.get("temp_directory")
        if self._connection_config.get("backend") == "duckdb" and spill_directory:
            # DuckDB creates only the last level of its spill directory, Ibis none since 10.
            Path(spill_directory).mkdir(parents=True, exist_ok=True)
        return super()._connect()

    def _csv_header(self, path: str) -> list[str]:
        """The names on the first line of the CSV; refused when one is there twice."""
        if self._fs_prefix:
            file = self._filesystem().open(str(self._get_load_path()), "rb")
        else:
            file = Path(path).open("rb")  # noqa: SIM115 - closed by the with below
        with file:
            first_line = file.readline().decode("utf-8-sig", errors="replace").rstrip("\r\n")
        delimiter = next(
            (
                self._load_args[key]
                for key in ("delim", "sep", "delimiter")
                if key in self._load_args
            ),
            ",",
        )
        names = [name.strip().strip('"') for name in first_line.split(delimiter)]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            # DuckDB would rename the second one (price_1), which would then be dropped silently.
            raise RawEventsContractError(
                [
                    (name, "named once in the header", f"{path} line 1 names it {count} times")
                    for name in repeated
                    if (count := names.count(name))
                ]
            )
        return names

    def _use_contract_csv_types(self, header: list[str]) -> None:
        """On DuckDB, read the raw columns with the contract's types instead of sniffed ones:
        the sniffer samples the first 20 480 lines, so a bad value after them would fail
        differently from the same value before. Other backends cast after reading."""
        types = self._load_args.get("types")
        if self._connection_config.get("backend") != "duckdb":
            return
        if types is not None and types is not self._contract_types:
            return  # the catalog's own load_args.types win
        self._contract_types = {
            column.name: _DUCKDB_TYPES[column.kind]
            for column in RAW_COLUMNS
            if column.name in header
        }
        self._load_args["types"] = self._contract_types

    def _check_present(self, path: str) -> None:
        if self._fs_prefix:
            filesystem, bare_path = self._filesystem(), str(self._get_load_path())
            exists = filesystem.exists(bare_path)
            empty = exists and filesystem.isfile(bare_path) and filesystem.size(bare_path) == 0
        else:
            local = Path(path)
            exists = local.exists()
            empty = local.is_file() and local.stat().st_size == 0
        if not exists:
            raise RawEventsError(
                f"raw events file {path} does not exist; generate one with "
                f"`purchase-predict-generate --out {path}` or point the catalog at real data"
            )
        if empty:
            raise RawEventsError(f"raw events file {path} is empty (0 bytes)")


# The DuckDB type each kind of raw column is read with from a CSV.
_DUCKDB_TYPES = {
    "timestamp": "TIMESTAMP",
    "text": "VARCHAR",
    "integer": "BIGINT",
    "number": "DOUBLE",
}

# CSV types as the data contract says; DuckDB's sniffer guesses VARCHAR for empty columns.
_CSV_COLUMN_TYPES = {
    "event_type": dt.string,
    "product_id": dt.int64,
    "category_id": dt.int64,
    "category_code": dt.string,
    "brand": dt.string,
    "price": dt.float64,
    "user_id": dt.int64,
    "user_session": dt.string,
}


def _with_contract_types(table: ir.Table) -> ir.Table:
    """Cast the CSV columns whose guessed type differs from the contract (``event_time``
    stays as read: string or timestamp are both accepted)."""
    casts = {c: t for c, t in _CSV_COLUMN_TYPES.items() if table[c].type() != t}
    return table.cast(casts) if casts else table
