"""The report's renderers: each section's table and targets, from a run's results."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from purchase_bench import benchmark, report

SERVING = [
    {"server": "purchase-predict-api (baked)", "connections": 16, "errors": 0, "rps": 4000.0,
     "p50_ms": 3.2, "p99_ms": 8.1},
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
        " our p99 8.1 ms (target <= 10 ms: met)"
    )


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
