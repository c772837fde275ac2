"""A smoke-size benchmark run, so the benchmarks cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_benchmark_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--json", str(out), "--plots", str(tmp_path / "plots")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    e2e = report["end_to_end"]
    assert e2e["classified"] == e2e["events"] == 120
    assert e2e["images_per_s"] > 0 and report["naive"]["images_per_s"] > 0
    assert report["speedup_vs_naive"] == round(e2e["images_per_s"] / report["naive"]["images_per_s"], 2)
    assert report["efficiency"] > 0 and report["stages"]["combined_limit_images_per_s"] > 0
    assert set(e2e["stage_ms_mean"]) >= {"fetch", "decode", "inference", "total"}
    assert sum(e2e["batches_closed"].values()) >= 1 and e2e["batch_size_histogram"]
    assert (tmp_path / "plots" / "latency_cdf.png").stat().st_size > 1000
