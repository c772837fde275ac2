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
    _assert_features(report)
    assert (tmp_path / "plots" / "latency_cdf.png").stat().st_size > 1000


def _assert_features(report: dict) -> None:
    listing = report["listing_actor"]
    assert len(listing["images_per_s_on"]) == len(listing["images_per_s_off"]) == listing["runs_each"] >= 1
    assert listing["ratio_on_off"] > 0 and listing["listings_settled_after_last_image_s"][0] >= 0
    backfill = report["backfill"]  # the idle worker's shape on top, both shapes side by side under shapes
    assert backfill["shape"] == "idle_worker" and set(backfill["shapes"]) == {"in_process", "idle_worker"}
    assert backfill["shapes"]["in_process"]["with_backlog"]["backfill_done_meanwhile"] > 0
    for shape in backfill["shapes"].values():  # an idle-priority worker may get no CPU on a busy host: >= 0
        assert shape["backfill_share_of_spare"] >= 0 and shape["spare_images_per_s"] > 0
        assert all(shape[k]["daily_latency_ms"]["p95"] > 0 for k in ("without_backlog", "with_backlog"))
    assert len(backfill["shapes"]["idle_worker"]["with_backlog"]["cpu_cores_by_worker"]) == 2
    reval = report["revalidation"]
    etags, plain = reval["etags"]["second_pass"], reval["no_etags"]["second_pass"]
    assert etags["not_modified"] == etags["cache"]["revalidated"] == reval["urls"] and etags["bytes_downloaded"] == 0
    assert plain["not_modified"] == 0 and plain["cache"] == {"hash": reval["urls"]} and plain["bytes_downloaded"] > 0


def test_model_speed_benchmark_compares_runtimes_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "models.json"
    spec = "processor/models/default"
    models = ["--model", f"{spec}:keras", "--model", f"{spec}:auto"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.models", *models, "--rounds", "2", "--seconds", "0.3", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    first, second = report["models"][f"{spec}:keras"], report["models"][f"{spec}:auto"]
    assert first["runtime"] == "keras" and first["ratio_to_first"] == 1.0 and len(first["rounds"]) == 2
    assert second["runtime"] in {"keras", "onnx", "openvino"} and second["images_per_s"] > 0
