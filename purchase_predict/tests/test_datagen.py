"""The event generator: determinism, REES46 schema, dirt, funnel shape and label signal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import duckdb
import ibis
import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from purchase_contract.decision import is_purchase
from purchase_predict import datagen
from purchase_predict.datagen import (
    DEFAULT_SESSIONS,
    RAW_EVENT_COLUMNS,
    RAW_EVENT_SCHEMA,
    ensure_dataset,
    generate_events,
    main,
)
from purchase_predict.pipelines.data_processing.nodes import build_primary_table


@pytest.fixture(scope="module")
def default_events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default data set (default size and seed), generated once for the module."""
    return generate_events(tmp_path_factory.mktemp("raw") / "events.parquet").path


@pytest.fixture(scope="module")
def default_primary(default_events: Path) -> pd.DataFrame:
    """The default data set through the data_processing nodes."""
    return build_primary_table(ibis.duckdb.connect().read_parquet(default_events)).to_pandas()


def _one(sql: str) -> tuple:
    return duckdb.sql(sql).fetchall()[0]


# --- determinism ----------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_same_seed_gives_identical_bytes_and_another_seed_does_not(
    tmp_path: Path, suffix: str
) -> None:
    first = generate_events(tmp_path / f"a{suffix}", sessions=3_000, seed=1).path
    again = generate_events(tmp_path / f"b{suffix}", sessions=3_000, seed=1).path
    other = generate_events(tmp_path / f"c{suffix}", sessions=3_000, seed=2).path

    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()


def test_exact_session_count_across_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datagen, "_USERS_PER_BLOCK", 50)  # many small blocks

    summary = generate_events(tmp_path / "events.parquet", sessions=1_234, seed=4)

    sessions, users, session_users = _one(
        f"""SELECT count(DISTINCT user_session), count(DISTINCT user_id),
                   max(n) FROM (SELECT user_session, user_id, count(DISTINCT user_id)
                   OVER (PARTITION BY user_session) AS n FROM '{summary.path}')"""
    )
    assert summary.sessions == sessions == 1_234
    assert summary.users == users
    assert session_users == 1  # a session belongs to one user, also across blocks
    assert summary.events == pq.read_metadata(summary.path).num_rows
    assert list(tmp_path.iterdir()) == [summary.path]  # no partial file left behind


# --- schema -----------------------------------------------------------------------------


def test_schema_and_formats_are_rees46(default_events: Path) -> None:
    assert pq.read_schema(default_events).remove_metadata() == RAW_EVENT_SCHEMA
    assert tuple(RAW_EVENT_SCHEMA.names) == RAW_EVENT_COLUMNS
    bad = _one(
        rf"""SELECT
            count(*) FILTER (WHERE NOT regexp_full_match(event_time,
                '2019-10-\d\d \d\d:\d\d:\d\d UTC')),
            count(*) FILTER (WHERE event_type NOT IN ('view', 'cart', 'purchase')),
            count(*) FILTER (WHERE NOT regexp_full_match(category_code,
                '[a-z_]+\.[a-z_]+(\.[a-z_]+)?')),
            count(*) FILTER (WHERE NOT regexp_full_match(user_session,
                '[0-9a-f]{{8}}-[0-9a-f]{{4}}-4[0-9a-f]{{3}}-[89ab][0-9a-f]{{3}}-[0-9a-f]{{12}}')),
            count(*) FILTER (WHERE price <= 0 OR product_id <= 0 OR category_id <= 0
                OR user_id <= 0),
            count(*) FILTER (WHERE event_time IS NULL OR event_type IS NULL OR price IS NULL
                OR product_id IS NULL OR category_id IS NULL OR user_id IS NULL
                OR user_session IS NULL)
        FROM '{default_events}'"""
    )
    assert bad == (0, 0, 0, 0, 0, 0)


def test_products_have_one_category_and_brand(default_events: Path) -> None:
    worst = _one(
        f"""SELECT max(ids), max(codes), max(brands) FROM (
            SELECT count(DISTINCT category_id) AS ids, count(DISTINCT category_code) AS codes,
                   count(DISTINCT brand) AS brands
            FROM '{default_events}' GROUP BY product_id)"""
    )
    assert worst == (1, 1, 1)


def test_csv_output_reads_back_as_the_same_events(tmp_path: Path) -> None:
    parquet = generate_events(tmp_path / "e.parquet", sessions=500, seed=9).path
    csv = generate_events(tmp_path / "e.csv", sessions=500, seed=9).path

    first_line = csv.read_text().splitlines()[0]
    assert first_line == ",".join(RAW_EVENT_COLUMNS)
    options = pacsv.ConvertOptions(
        column_types=RAW_EVENT_SCHEMA, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    assert pacsv.read_csv(csv, convert_options=options).equals(pq.read_table(parquet))


# --- dirt and funnel --------------------------------------------------------------------


def test_realistic_dirt_is_present(default_events: Path) -> None:
    missing_brand, missing_code, duplicate_share = _one(
        f"""SELECT avg((brand IS NULL)::INT), avg((category_code IS NULL)::INT),
                   1 - (SELECT count(*) FROM (SELECT DISTINCT * FROM '{default_events}'))
                       / count(*)
            FROM '{default_events}'"""
    )
    assert 0.05 <= missing_brand <= 0.10
    assert 0.01 <= missing_code <= 0.10
    assert 0.005 <= duplicate_share <= 0.015


def test_funnel_shape(default_events: Path) -> None:
    views, carts, purchases, sessions, multi_session_users, products_per_session = _one(
        f"""SELECT
            count(*) FILTER (WHERE event_type = 'view'),
            count(*) FILTER (WHERE event_type = 'cart'),
            count(*) FILTER (WHERE event_type = 'purchase'),
            count(DISTINCT user_session),
            (SELECT avg((n > 1)::INT) FROM (SELECT count(DISTINCT user_session) AS n
                FROM '{default_events}' GROUP BY user_id)),
            (SELECT avg(n) FROM (SELECT count(DISTINCT product_id) AS n
                FROM '{default_events}' GROUP BY user_session))
        FROM '{default_events}'"""
    )
    assert sessions == DEFAULT_SESSIONS
    assert views > 8 * carts
    assert carts > purchases > 0
    assert multi_session_users > 0.4
    assert products_per_session > 2.5
    days = _one(f"SELECT count(DISTINCT event_time[:10]) FROM '{default_events}'")[0]
    assert days >= 30  # about a month of activity


def test_default_size_gives_a_few_thousand_carted_pairs(default_primary: pd.DataFrame) -> None:
    assert 4_000 <= len(default_primary) <= 10_000
    assert 0.30 <= default_primary["purchased"].mean() <= 0.45


# --- the label depends on the features --------------------------------------------------


def _rate(primary: pd.DataFrame, mask: pd.Series) -> float:
    assert mask.sum() > 200, "too few rows to compare purchase rates"
    return float(primary.loc[mask, "purchased"].mean())


def test_cheaper_than_category_median_converts_more(default_primary: pd.DataFrame) -> None:
    category_median = default_primary.groupby("sub_category", dropna=False)["price"].transform(
        "median"
    )
    cheap = default_primary["price"] < category_median

    assert _rate(default_primary, cheap) > _rate(default_primary, ~cheap) + 0.15


def test_evening_converts_more_than_morning(default_primary: pd.DataFrame) -> None:
    hour = default_primary["hour"]

    assert (
        _rate(default_primary, hour.between(18, 22))
        > _rate(default_primary, hour.between(7, 11)) + 0.15
    )


def test_views_and_history_raise_conversion(default_primary: pd.DataFrame) -> None:
    views = default_primary["num_views_product"]
    prev_views = default_primary["num_prev_product_views"]
    prev_sessions = default_primary["num_prev_sessions"]

    assert _rate(default_primary, views >= 3) > _rate(default_primary, views == 1) + 0.1
    assert _rate(default_primary, prev_views > 0) > _rate(default_primary, prev_views == 0) + 0.1
    assert _rate(default_primary, prev_sessions >= 2) > _rate(default_primary, prev_sessions == 0)


def test_some_brands_convert_better(default_primary: pd.DataFrame) -> None:
    brand = default_primary["brand"]

    assert _rate(default_primary, brand == "apple") > _rate(default_primary, brand == "huawei")
    assert _rate(default_primary, brand == "apple") > _rate(default_primary, brand.isna())


def test_a_plain_lightgbm_beats_the_all_positive_baseline(default_primary: pd.DataFrame) -> None:
    features = default_primary.drop(columns=["purchased", "user_id", "user_session", "product_id"])
    for column in ("brand", "category", "sub_category"):
        features[column] = features[column].astype("category")
    x_train, x_test, y_train, y_test = train_test_split(
        features,
        default_primary["purchased"],
        test_size=0.25,
        random_state=0,
        stratify=default_primary["purchased"],
    )
    model = lgb.LGBMClassifier(
        n_estimators=200,
        learning_rate=0.05,
        num_leaves=15,
        min_child_samples=40,
        n_jobs=1,
        verbose=-1,
    ).fit(x_train, y_train)
    probability = model.predict_proba(x_test)[:, 1]
    # Best threshold on the training data, as a tuned pipeline would pick it.
    train_probability = model.predict_proba(x_train)[:, 1]
    thresholds = np.linspace(0.1, 0.6, 26)
    threshold = max(thresholds, key=lambda t: f1_score(y_train, is_purchase(train_probability, t)))

    rate = y_test.mean()
    baseline_f1 = 2 * rate / (1 + rate)
    assert f1_score(y_test, is_purchase(probability, threshold)) > baseline_f1 + 0.08


# --- command line and ensure_dataset ----------------------------------------------------


def test_cli_writes_the_requested_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "raw" / "events.csv"

    assert main(["--out", str(out), "--sessions", "200", "--seed", "3"]) == 0

    assert out.is_file()
    assert "200 sessions" in capsys.readouterr().err


def test_cli_reports_progress_for_big_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datagen, "_USERS_PER_BLOCK", 100)
    monkeypatch.setattr(datagen, "_PROGRESS_SESSIONS", 10)

    assert main(["--out", str(tmp_path / "events.parquet"), "--sessions", "500"]) == 0

    progress = [line for line in capsys.readouterr().err.splitlines() if "/500 sessions" in line]
    assert len(progress) >= 2
    assert progress[-1].startswith("  500/500 sessions")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--sessions", "0"], "--sessions: must be at least 1, got 0"),
        (["--sessions", "many"], "--sessions: not an integer: 'many'"),
        (["--seed", "-1"], "--seed: must be non-negative, got -1"),
        (["--out", "events.txt"], "unsupported extension '.txt'"),
    ],
)
def test_cli_refuses_bad_arguments(
    tmp_path: Path, capsys: pytest.CaptureFixture, arguments: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--out", str(tmp_path / "e.parquet"), *arguments])

    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_reports_an_unwritable_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")

    assert main(["--out", str(blocker / "events.parquet"), "--sessions", "10"]) == 1
    assert f"cannot write {blocker / 'events.parquet'}" in capsys.readouterr().err


def test_cli_if_missing_keeps_an_existing_file(tmp_path: Path) -> None:
    out = generate_events(tmp_path / "events.parquet", sessions=100, seed=1).path
    before = out.read_bytes()

    assert main(["--out", str(out), "--seed", "2", "--if-missing"]) == 0

    assert out.read_bytes() == before


def test_console_script_exits_non_zero_with_usage(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "purchase_predict.datagen", "--out", str(tmp_path / "e.parquet"),
         "--sessions", "-5"],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip

    assert done.returncode == 2
    assert done.stderr.startswith("usage: purchase-predict-generate")
    assert "must be at least 1" in done.stderr


def test_help_describes_every_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--help"])

    assert exited.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # undo argparse's line wrapping
    for option in ("--out", "--sessions", "--seed", "--if-missing", ".parquet or .csv"):
        assert option in text


def test_ensure_dataset_generates_only_when_missing_or_empty(tmp_path: Path) -> None:
    path = tmp_path / "01_raw" / "events.parquet"

    assert ensure_dataset(path, sessions=100, seed=1) == path
    first = path.read_bytes()
    ensure_dataset(path, sessions=300, seed=2)
    assert path.read_bytes() == first

    path.write_bytes(b"")
    ensure_dataset(path, sessions=100, seed=1)
    assert path.read_bytes() == first
