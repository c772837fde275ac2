"""Model rollout without restarts (issue #15): a running worker loads the model promoted in Postgres
within seconds, loses no event, every result names the model that made it, and ``processor
reclassify`` moves chosen images to the new version."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

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

    promoted = processor_command(settings, "model", "promote", str(new_version_of_the_shipped_model(tmp_path)))
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    for _ in range(60):  # within seconds, without a restart
        if f"now classifying with {SHIPPED_MODEL_NAME} {NEW_VERSION}" in worker.log():
            break
        await asyncio.sleep(0.5)
    else:
        raise AssertionError(f"the worker did not switch models:\n{worker.log()[-3000:]}")

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
    await wait_for_zero_lag(settings)
    assert worker.proc.poll() is None
