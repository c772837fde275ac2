"""Model rollout without restarts (issue #15): a running worker loads the model promoted in Postgres
within seconds, loses no event, every result names the model that made it, and ``processor
reclassify`` moves chosen images to the new version; a rollback (promoting the old directory
again) and ``reclassify --model-version`` bring them back although the withdrawn version is higher."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

from processor.dev.harness import WorkerProcess
from processor.dev.imageserver import ImageServer
from processor.settings import DEFAULT_MODEL_DIR, Settings

from .conftest import event
from .helpers import SHIPPED_MODEL_NAME, fetch_rows, processor_command, wait_for_rows
from .test_end_to_end import produce
from .test_poison import wait_for_zero_lag

NEW_VERSION = "2099.01.01.1"  # newer than any shipped version


def new_version_of_the_shipped_model(tmp_path: Path) -> Path:
    """The shipped model under a new version (the weights do not matter for the rollout)."""
    model = tmp_path / "model-new"
    shutil.copytree(DEFAULT_MODEL_DIR, model, ignore=shutil.ignore_patterns("evaluation.json"))  # not its own
    meta = json.loads((model / "metadata.json").read_text())
    (model / "metadata.json").write_text(json.dumps({**meta, "version": NEW_VERSION}))
    return model


async def test_a_running_worker_switches_to_the_promoted_model_and_reclassify_moves_images(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker, tmp_path: Path
) -> None:
    settings = settings.with_overrides(follow_registry=True, monitor_interval_s=1, broker_commit_interval_s=0.2)
    names = sorted(jpegs)
    worker = start_worker(settings)
    before = [event(f"old-{i}", image_server.url(n), listing="old", index=i) for i, n in enumerate(names[:8])]
    await produce(settings, before)
    await worker.ready()
    await wait_for_rows(settings, {e["image_id"] for e in before})
    shipped = json.loads((DEFAULT_MODEL_DIR / "metadata.json").read_text())["version"]
    assert {r["model_version"] for r in await fetch_rows(settings)} == {shipped}

    new_model = str(new_version_of_the_shipped_model(tmp_path))
    promoted = processor_command(settings, "model", "promote", new_model, "--replace")  # --replace: reruns
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    await switched_to(worker, NEW_VERSION)

    after = [event(f"new-{i}", image_server.url(n) + "?v=2", listing="new", index=i) for i, n in enumerate(names[8:16])]
    await produce(settings, after)
    await wait_for_rows(settings, {e["image_id"] for e in after})
    rows = {r["image_id"]: r for r in await fetch_rows(settings)}
    assert {rows[e["image_id"]]["model_version"] for e in after} == {NEW_VERSION}
    assert {rows[e["image_id"]]["model_version"] for e in before} == {shipped}

    requeued = processor_command(settings, "reclassify", "--listing", "old", "--rate", "50")
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    for _ in range(120):
        rows = {r["image_id"]: r for r in await fetch_rows(settings)}
        if {rows[e["image_id"]]["model_version"] for e in before} == {NEW_VERSION}:
            break
        await asyncio.sleep(0.5)
    assert {rows[e["image_id"]]["model_version"] for e in before} == {NEW_VERSION}, "reclassify did not move them"
    assert len(rows) == len(before) + len(after)
    bad_generation = rows[before[0]["image_id"]]["model_generation"]
    assert bad_generation > 0 and {r["model_generation"] for r in rows.values()} == {bad_generation}

    # the rollback: the old directory again, then its results replace the withdrawn (higher) version's
    rolled_back = processor_command(settings, "model", "promote", str(DEFAULT_MODEL_DIR))
    assert rolled_back.returncode == 0, rolled_back.stderr[-2000:]
    assert f"processor reclassify --model-version {NEW_VERSION}" in rolled_back.stderr
    await switched_to(worker, shipped)
    requeued = processor_command(settings, "reclassify", "--model-version", NEW_VERSION, "--rate", "50")
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    for _ in range(120):
        rows = {r["image_id"]: r for r in await fetch_rows(settings)}
        if {r["model_version"] for r in rows.values()} == {shipped}:
            break
        await asyncio.sleep(0.5)
    assert {r["model_version"] for r in rows.values()} == {shipped}, "the rollback did not bring the rows back"
    assert {r["model_generation"] for r in rows.values()} == {bad_generation + 1}
    await wait_for_zero_lag(settings)
    assert worker.proc.poll() is None


async def switched_to(worker: WorkerProcess, version: str) -> None:
    """Wait until the worker says it classifies with ``version`` (within seconds, without a restart)."""
    for _ in range(60):
        if f"now classifying with {SHIPPED_MODEL_NAME} {version}" in worker.log():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"the worker did not switch to {version}:\n{worker.log()[-3000:]}")
