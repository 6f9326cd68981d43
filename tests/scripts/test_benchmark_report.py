"""scripts/benchmark.py keeps the hand-measured part of docs/benchmarks.md when it rewrites it."""

from __future__ import annotations

from pathlib import Path

from purchase_bench import benchmark

ROOT = Path(__file__).resolve().parents[2]


def test_the_report_keeps_its_hand_measured_part(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text(f"# Benchmarks\n\nold figures\n\n{benchmark.HAND_MEASURED}\n\n## By hand\n")
    assert benchmark.kept_by_hand(report) == f"\n{benchmark.HAND_MEASURED}\n\n## By hand\n"
    assert benchmark.kept_by_hand(tmp_path / "missing.md") == ""


def test_the_committed_report_marks_its_hand_measured_part() -> None:
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert text.count(benchmark.HAND_MEASURED) == 1
    assert text.index(benchmark.HAND_MEASURED) < text.index("## Local pipeline: cold, warm")
