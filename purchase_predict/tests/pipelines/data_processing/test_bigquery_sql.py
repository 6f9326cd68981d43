"""The data step's Ibis expressions compiled to BigQuery SQL (``ibis.to_sql(dialect="bigquery")``),
checked offline: no BigQuery is reached. The SQL parses in sqlglot's BigQuery dialect, reads
the one raw table, returns the contract's columns, calls only BigQuery functions with the
argument types BigQuery's signatures take, and, transpiled back to DuckDB, computes the
hand-made rows.
"""

from __future__ import annotations

import re
from typing import Any

import duckdb
import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pytest
import sqlglot
import sqlglot.expressions as exp

from purchase_contract.features import PRIMARY_COLUMNS
from purchase_predict.datagen import RAW_EVENT_SCHEMA
from purchase_predict.pipelines.data_processing.nodes import build_primary_table, value_stats_query

# The raw events as conf/cloud names them: a table in the project's dataset.
RAW_TABLE = ("my-project", "purchase_predict", "events")
# Every function the compiled SQL may call, each checked in BigQuery's function reference: a
# new one in the compiled SQL fails the test until it is checked there and added.
BIGQUERY_FUNCTIONS = {
    *("CAST", "SAFE_CAST", "IF", "NULLIF", "CONCAT", "REPLACE", "TRIM", "LOWER"),
    *("REGEXP_CONTAINS", "REGEXP_REPLACE", "EXTRACT", "MOD", "TRUNC", "UNIX_SECONDS"),
    *("COUNT", "COUNTIF", "MIN", "MAX", "MIN_BY", "SUM", "RANK"),
}
# DuckDB spellings BigQuery lacks (it says SAFE_CAST, SPLIT, MIN_BY, REGEXP_CONTAINS...).
DUCKDB_ONLY = {"TRY_CAST", "LIST_EXTRACT", "STRING_SPLIT", "STR_SPLIT", "EPOCH", "ARG_MIN"}
DUCKDB_ONLY |= {"REGEXP_MATCHES", "STRPTIME", "STRFTIME", "COUNT_STAR"}
# Words a parenthesis may follow that are no function.
SQL_KEYWORDS = {"SELECT", "FROM", "JOIN", "ON", "WHERE", "OVER", "AS", "IN", "AND", "OR", "NOT"}


def _raw_events() -> ir.Table:
    catalog, database, name = RAW_TABLE
    schema = ibis.Schema.from_pyarrow(RAW_EVENT_SCHEMA)
    return ibis.table(schema, name=name, catalog=catalog, database=database)


@pytest.fixture(scope="module", params=["primary table", "validation"])
def compiled(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(which query, its BigQuery SQL): the primary table and the validation aggregate."""
    query = {"primary table": build_primary_table, "validation": value_stats_query}
    return request.param, ibis.to_sql(query[request.param](_raw_events()), dialect="bigquery")


def _called_functions(sql: str) -> set[str]:
    """Names called in the SQL text (``NAME(``), upper-cased; string literals left out."""
    code = re.sub(r"'(?:[^'\\]|\\.)*'", "''", sql)
    return {name.upper() for name in re.findall(r"\b([A-Za-z_]+)\s*\(", code)}


def test_sql_parses_as_bigquery_and_reads_only_the_raw_table(compiled: tuple[str, str]) -> None:
    _, sql = compiled

    tree = sqlglot.parse_one(sql, read="bigquery")  # raises ParseError on anything else

    ctes = {cte.alias for cte in tree.find_all(exp.CTE)}
    tables = {(table.catalog, table.db, table.name) for table in tree.find_all(exp.Table)} - {
        ("", "", name) for name in ctes
    }
    assert tables == {RAW_TABLE}
    # Every function is one sqlglot's BigQuery dialect knows: no unknown name passed through.
    assert [f.sql("bigquery") for f in tree.find_all(exp.Anonymous)] == []


def test_sql_calls_bigquery_functions_only(compiled: tuple[str, str]) -> None:
    _, sql = compiled

    called = _called_functions(sql) - SQL_KEYWORDS

    assert called <= BIGQUERY_FUNCTIONS, called - BIGQUERY_FUNCTIONS
    assert not called & DUCKDB_ONLY


def test_primary_sql_returns_the_contract_columns_in_order() -> None:
    sql = ibis.to_sql(build_primary_table(_raw_events()), dialect="bigquery")

    tree = sqlglot.parse_one(sql, read="bigquery")

    assert tuple(tree.named_selects) == PRIMARY_COLUMNS
    order = [key.this.name for key in tree.args["order"].expressions]
    assert order == ["user_session", "product_id"]


def test_unix_seconds_only_ever_sees_a_timestamp() -> None:
    # BigQuery's UNIX_SECONDS takes a TIMESTAMP; the data step's times are DATETIMEs there.
    sql = ibis.to_sql(build_primary_table(_raw_events()), dialect="bigquery")

    calls = list(sqlglot.parse_one(sql, read="bigquery").find_all(exp.UnixSeconds))

    assert len(calls) == 2  # the session's end and start, for its duration
    for call in calls:
        assert isinstance(call.this, exp.Cast)
        assert call.this.to.sql("bigquery") == "TIMESTAMP"


def test_bigquery_sql_transpiled_to_duckdb_computes_the_hand_made_rows(
    handmade_events: pa.Table, expected_primary_rows: list[dict[str, Any]]
) -> None:
    sql = ibis.to_sql(build_primary_table(_raw_events()), dialect="bigquery")
    as_duckdb = sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]
    con = duckdb.connect()
    con.execute("ATTACH ':memory:' AS \"my-project\"")
    con.execute('CREATE SCHEMA "my-project".purchase_predict')
    con.register("handmade", handmade_events)
    con.execute('CREATE TABLE "my-project".purchase_predict.events AS SELECT * FROM handmade')

    rows = con.sql(as_duckdb).to_arrow_table().to_pylist()

    # weekday is normalised: BigQuery's DAYOFWEEK counts 1 = Sunday and the SQL maps it to
    # Monday = 0 with MOD(DAYOFWEEK + 5, 7); sqlglot hands it to DuckDB's dayofweek, which
    # counts 0 = Sunday, so the transpiled query says one day less than BigQuery would.
    for row in rows:
        row["weekday"] = (row["weekday"] + 1) % 7
    assert rows == expected_primary_rows
