"""Section ``feature``: raw events to the primary table (``kedro run --pipeline
data_processing``) on generated data: wall time and peak memory of the process."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from purchase_bench.common import EVENTS_PER_SESSION, TRAINING_DIR, say
from purchase_bench.context import Bench


def feature(bench: Bench) -> None:
    rows = []
    for events in bench.events:
        raw = bench.work / f"events-{events}.parquet"
        generate_s = generate(bench, events, raw)
        conf = scratch_conf(bench, events, raw)
        say(f"feature step on {raw.name}")
        wall, peak_rss_mb = run_feature_step(bench, events, conf)
        import pyarrow.parquet as pq  # noqa: PLC0415

        rows.append(
            {
                "events": pq.ParquetFile(raw).metadata.num_rows,
                "raw_mb": raw.stat().st_size / 1e6,
                "primary_rows": pq.ParquetFile(
                    bench.work / f"primary-{events}.parquet"
                ).metadata.num_rows,
                "generate_s": generate_s,
                "wall_s": wall,
                "peak_rss_mb": peak_rss_mb,
            }
        )
        say(f"feature step: {wall:.1f} s, peak {peak_rss_mb:.0f} MB")
        raw.unlink()
    bench.results["feature"] = rows


def generate(bench: Bench, events: int, raw: Path) -> float:
    """About ``events`` generated raw events in ``raw``; seconds it took."""
    sessions = max(1, round(events / EVENTS_PER_SESSION))
    say(f"generating ~{events:,} events")
    started = time.perf_counter()
    bench.run(
        ["purchase-predict-generate", "--out", str(raw), "--sessions", str(sessions)],
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def scratch_conf(bench: Bench, events: int, raw: Path) -> Path:
    """A copy of the training conf whose catalog reads ``raw`` and writes into the scratch dir."""
    import yaml  # noqa: PLC0415 - the training environment has it

    conf = bench.work / f"conf-{events}"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(TRAINING_DIR / "conf", conf)
    catalog_path = conf / "base" / "catalog_data_processing.yml"
    catalog: dict[str, Any] = yaml.safe_load(catalog_path.read_text())
    catalog["raw_events"]["filepath"] = str(raw)
    catalog["primary@ibis"]["filepath"] = str(bench.work / f"primary-{events}.parquet")
    catalog["primary@pandas"]["filepath"] = str(bench.work / f"primary-{events}.parquet")
    for entry in ("raw_events", "primary@ibis"):
        catalog[entry]["connection"]["temp_directory"] = str(bench.work / "spill")
    catalog_path.write_text(yaml.safe_dump(catalog))
    return conf


def run_feature_step(bench: Bench, events: int, conf: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MB of ``kedro run --pipeline data_processing``."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [
            "kedro",
            "run",
            "--pipeline",
            "data_processing",
            "--conf-source",
            str(conf),
        ],
        cwd=TRAINING_DIR,
        env=bench.env,
        stdout=subprocess.DEVNULL,
        stderr=(bench.work / f"feature-{events}.log").open("wb"),
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"feature step failed: see {bench.work}/feature-{events}.log")
    return wall, usage.ru_maxrss / 1024
