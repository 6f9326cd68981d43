"""The report's renderers: each section's table and targets, from a run's results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from purchase_bench import benchmark, report

SERVING = [
    {"server": "purchase-predict-api (baked)", "connections": 16, "errors": 0, "rps": 4000.0,
     "p50_ms": 3.2, "p99_ms": 8.1},
    {"server": "minimal FastAPI route", "connections": 16, "errors": 0, "rps": 5000.0,
     "p50_ms": 2.2, "p99_ms": 6.0},
    {"server": "mlflow models serve", "connections": 16, "errors": 0, "rps": 500.0,
     "p50_ms": 30.2, "p99_ms": None},
]  # fmt: skip


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "_machine", lambda: "MACHINE")
    monkeypatch.setattr(report, "_versions", lambda: {"python": "3.11"})


def test_serving_section_gives_the_ratio_and_the_targets() -> None:
    bench = SimpleNamespace(duration=10.0, connections=[16])
    lines = report._serving_section(bench, SERVING)
    assert "| mlflow models serve | 16 | 500 | 30.2 | - | 0 |" in lines
    assert lines[-2] == (
        "- 16 connections: ours/MLflow throughput **8.0x** (target >= 6x: met);"
        " ours/minimal route **80%** (target >= 70%: met); our p99 8.1 ms (target <= 10 ms: met)"
    )
    assert "| minimal FastAPI route | 16 | 5000 | 2.2 | 6.0 | 0 |" in lines


def test_cold_section_adds_the_image_row_and_misses_a_slow_start() -> None:
    results = {
        "cold": [{"what": "ours, baked model", "median_s": 2.0, "runs": [2.0, 2.1]}],
        "image": {"cold_start_median_s": 3.0, "cold_start_runs": [3.0]},
    }
    lines = report._cold_section(results)
    assert "| ours, image (`docker run`, baked model) | 3.00 | 3.00 |" in lines
    assert "Target <= 1.5 s for ours (baked): **missed**." in lines


def test_image_section_says_why_it_was_skipped() -> None:
    assert report._image_section({"skipped": "no dockerd"}) == [
        "## Image",
        "",
        "Not measured: no dockerd.",
        "",
    ]


def test_feature_section_checks_the_target_only_at_ten_million() -> None:
    row = {"events": 1_000_000, "raw_mb": 20.0, "primary_rows": 1500, "wall_s": 4.0,
           "peak_rss_mb": 900.0, "generate_s": 3.0}  # fmt: skip
    assert not any("Target" in line for line in report._feature_section([row]))
    big = {**row, "events": 10_000_000, "wall_s": 31.0}
    assert "Target 10 M in <= 30 s with <= 4 GB: **missed**." in report._feature_section([big])


def test_report_renders_only_the_sections_that_ran(fixed: None) -> None:
    bench = SimpleNamespace(
        results={"pipeline": {"cold": {"total_s": 300.0, "stages": "a 1 s"}}},
        duration=10.0,
        connections=[16],
    )
    text = report.report(bench, "nox -s bench -- --only pipeline")
    assert text.startswith("# Benchmarks\n")
    assert "    nox -s bench -- --only pipeline" in text
    assert "- Machine: MACHINE" in text
    assert "| cold | 300 | a 1 s |" in text
    assert "## Serving" not in text
    assert "## Image" not in text


def test_the_entry_module_keeps_the_names_it_had(tmp_path: Path) -> None:
    assert benchmark.HAND_MEASURED is report.HAND_MEASURED
    assert benchmark.kept_by_hand(tmp_path / "missing.md") == ""
    assert callable(benchmark.main)


def _arm(ms: float) -> dict:
    return {"server_ms_median": ms, "server_ms_min": ms - 1, "server_ms_max": ms + 1,
            "round_trip_ms_median": ms + 2}  # fmt: skip


def test_batch_section_gives_the_speed_ups_against_the_code_before_the_issue() -> None:
    batch = {
        "body_mb": 2.8, "requests": 16, "rounds": 2, "warm_up_requests": 3,
        "baseline_ref": "8a2aef312c8f7af2d44017feb95efd11931b6dbd", "baseline_missing": "",
        "arms": {
            "all cores": {"before issue 16": _arm(80.0), "ours": _arm(35.0)},
            "one core": {"before issue 16": _arm(90.0), "ours": _arm(60.0)},
        },
        "breakdown_ms": {"reading (parse and validate)": 20.0,
                         "lightgbm.Booster.predict, one thread": 50.0,
                         "compiled trees, one thread": 10.0,
                         "lightgbm.Booster.predict, all threads": 30.0,
                         "compiled trees, all threads": 10.0},
    }  # fmt: skip
    lines = report._batch_section(batch)
    assert "| all cores | ours | 35.0 ms | 34.0 ms | 36.0 ms | 37.0 ms | 2.29x |" in lines
    assert "| one core | before issue 16 | 90.0 ms | 89.0 ms | 91.0 ms | 92.0 ms | 1.00x |" in lines
    assert (
        "- Ours against before issue 16, all cores: **2.29x** faster (target >= 2x: met)." in lines
    )
    assert any("one thread: 10.0 against 50.0 ms, **5.0x** (target >= 4x: met)" in x for x in lines)
    assert any("all threads: 10.0 against 30.0 ms, **3.0x** (target >= 4x: **missed**)" in x
               for x in lines)  # fmt: skip
    assert any(x.startswith("Where ours spends it") and "reading (parse and validate) 20.0 ms" in x
               and "Booster" not in x for x in lines)  # fmt: skip


def test_batch_section_says_when_the_anchor_could_not_be_measured() -> None:
    batch = {
        "body_mb": 2.8, "requests": 16, "rounds": 2, "baseline_ref": "8a2aef3" + "0" * 33,
        "baseline_missing": "git archive failed", "arms": {"all cores": {"ours": _arm(35.0)}},
    }  # fmt: skip
    lines = report._batch_section(batch)
    assert "| all cores | ours | 35.0 ms | 34.0 ms | 36.0 ms | 37.0 ms | - |" in lines
    assert "The anchor was not measured: git archive failed." in lines
    assert not any("Ours against" in line for line in lines)


def test_cold_section_gives_the_fetch_ratio_and_what_fetch_mode_imported() -> None:
    results = {
        "cold": [{"what": "ours, baked model", "median_s": 0.5, "runs": [0.5]}],
        "startup_breakdown": {"interpreter_s": 0.02, "imports_s": 0.4, "model_load_s": 0.01,
                              "fetch_imports_s": 0.41, "fetch_fetch_s": 0.07,
                              "fetch_model_load_s": 0.015, "fetch_imported": []},
        "cold_fetch_over_baked": 1.18,
    }  # fmt: skip
    lines = report._cold_section(results)
    assert "Fetch mode against the baked start, same run: **1.18x** (target <= 2x: met)." in lines
    assert any("download over MLflow's REST API 70 ms" in x and "imported none" in x for x in lines)
