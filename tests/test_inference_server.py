"""Inference as a service (issue #24), against a real Triton server: the one in the nvidia-pytriton wheel,
on 127.0.0.1. The remote client scores exactly what the worker's own model scores; the server killed and
restarted makes batches wait, none fails; `processor export-triton` writes a repository Triton reads;
and the whole pipeline, two workers sharing one `processor serve-model`, loses nothing when the server
dies mid-stream and follows a promotion. These tests skip only where the Triton binary cannot start
(and fail instead under PROCESSOR_TEST_REQUIRE_TOOLS=1, as in CI)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from processor.decode import Decoder
from processor.dev.harness import settings_env
from processor.dev.imageserver import ImageServer
from processor.inference import RemoteClassifier
from processor.model import Classifier, ModelInfo
from processor.serving.repository import CONFIG_FILE, LABELS_FILE, PYTHON_MODEL, parse_config, read_served
from processor.serving.server import ModelServer
from processor.serving.triton import Endpoints, TritonServer, TritonUnavailable, distribution
from processor.settings import DEFAULT_MODEL_DIR, Settings

from .conftest import event
from .helpers import fetch_dead_letters, fetch_rows, processor_command, wait_for_rows
from .test_end_to_end import produce
from .test_poison import wait_for_zero_lag
from .test_rollout_worker import NEW_VERSION, new_version_of_the_shipped_model

SHIPPED = ModelInfo.read(DEFAULT_MODEL_DIR)
MODEL = "listing-image-classifier"


@pytest.fixture(scope="module")
def triton_starts(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Skip (or fail, under PROCESSOR_TEST_REQUIRE_TOOLS) only when the Triton binary cannot start here."""
    try:
        distribution()
        work = tmp_path_factory.mktemp("triton-probe")
        (work / "empty").mkdir()
        server = TritonServer(work / "empty", work, Endpoints.free(), ())
        server.start()
        try:
            server.wait_ready(60)
        finally:
            server.stop()
    except TritonUnavailable as exc:
        if os.environ.get("PROCESSOR_TEST_REQUIRE_TOOLS"):
            pytest.fail(f"the Triton binary of nvidia-pytriton does not start: {exc}")
        pytest.skip(f"the Triton binary of nvidia-pytriton does not start here: {exc}")


def server_settings(tmp_path: Path, endpoints: Endpoints, **overrides: object) -> Settings:
    return Settings(
        follow_registry=False,
        inference_url=endpoints.http_url,
        model_server_repository=tmp_path / "repository",
        inference_backoff_s=0.05,
        inference_breaker_failures=2,
        inference_breaker_reset_s=0.3,
        inference_timeout_s=5,
    ).with_overrides(**overrides)


@pytest.fixture
async def served(tmp_path: Path, triton_starts: None) -> AsyncIterator[tuple[ModelServer, Settings]]:
    endpoints = Endpoints.free()
    settings = server_settings(tmp_path, endpoints)
    server = ModelServer(settings, endpoints, tmp_path / "work")
    await server.start()
    try:
        yield server, settings
    finally:
        await asyncio.to_thread(server.triton.stop)


def photos(jpegs: dict[str, bytes], n: int) -> list[NDArray[np.uint8]]:
    decoder = Decoder.from_settings(Settings())
    return [decoder.decode(data, SHIPPED.input_size).pixels for data in list(jpegs.values())[:n]]


async def test_remote_scores_are_the_local_models_and_name_the_served_version(
    served: tuple[ModelServer, Settings], jpegs: dict[str, bytes]
) -> None:
    server, settings = served
    images = photos(jpegs, 12)
    local = Classifier(DEFAULT_MODEL_DIR, runtime="onnx").predict(images)
    for url in (settings.inference_url, f"grpc://127.0.0.1:{server.triton.endpoints.grpc_port}"):
        remote = RemoteClassifier(settings.with_overrides(inference_url=url))
        try:
            answers = await asyncio.gather(*(remote.infer(images[i : i + 3]) for i in range(0, 12, 3)))
            assert await remote.refresh()
        finally:
            await remote.close()
        scored = [pair for batch in answers for pair in batch]
        assert len(scored) == len(local)
        for (prediction, model), expected in zip(scored, local, strict=True):
            assert prediction.banner_score == pytest.approx(expected.banner_score, abs=1e-5)
            assert prediction.position_scores == pytest.approx(expected.position_scores, abs=1e-5)
            assert (model.info.name, model.info.version, model.generation) == (SHIPPED.name, SHIPPED.version, 0)
        assert remote.available
    metrics = await asyncio.to_thread(get, server.triton.endpoints.metrics_url)
    assert f'nv_inference_request_success{{model="{MODEL}",version="1"}}' in metrics


async def test_a_killed_server_makes_batches_wait_and_a_restarted_one_answers_them_all(
    served: tuple[ModelServer, Settings], jpegs: dict[str, bytes]
) -> None:
    server, settings = served
    images = photos(jpegs, 8)
    expected = [p.banner_score for p in Classifier(DEFAULT_MODEL_DIR, runtime="onnx").predict(images)]
    remote = RemoteClassifier(settings)
    try:
        await remote.infer(images[:1])
        server.triton.stop(kill=True)
        waiting = [asyncio.create_task(remote.infer(images[i : i + 2])) for i in range(0, 8, 2)]
        for _ in range(100):
            if remote.breaker.state != "closed":
                break
            await asyncio.sleep(0.05)
        assert not remote.available, "the circuit did not open"
        assert not await remote.refresh()
        await asyncio.sleep(1.0)  # several probes come and go: the batches keep waiting, none fails
        assert not any(task.done() for task in waiting)
        server.triton.start()
        await asyncio.to_thread(server.triton.wait_ready, 60)
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 60)
        assert [p.banner_score for batch in answers for p, _ in batch] == pytest.approx(expected, abs=1e-5)
        assert remote.available
    finally:
        await remote.close()


async def test_each_event_keeps_the_served_version_it_started_with_through_a_rollout(
    served: tuple[ModelServer, Settings], jpegs: dict[str, bytes], tmp_path: Path
) -> None:
    """Events started before a promotion are scored by the old version while the server still has it
    (version_policy latest 2), those after by the new one, in the same batch; once the old version is
    unloaded its events go to the newest instead of waiting for it forever."""
    server, settings = served
    images = photos(jpegs, 6)
    remote = RemoteClassifier(settings)
    try:
        assert remote.pinned() == (remote, None)  # before any answer: the newest the server has
        await remote.infer(images[:1])
        old, pin = remote.pinned()
        assert (pin, old.info.version, old.generation) == ("1", SHIPPED.version, 0)

        new_dir = new_version_of_the_shipped_model(tmp_path)
        assert await asyncio.to_thread(server.add, new_dir, 1) == 2
        await asyncio.to_thread(server.triton.load, MODEL)
        assert await remote.refresh()  # the worker takes version 2 up: events starting now keep it
        new, pin = remote.pinned()
        assert (pin, new.info.version, new.generation) == ("2", NEW_VERSION, 1)
        assert old.info.version == SHIPPED.version  # what earlier events hold does not change under them

        served_before = await asyncio.to_thread(get, server.triton.endpoints.metrics_url)
        scored = await remote.infer(images, ["1", "2", None, "1", "2", "1"])
        assert [(m.info.version, m.generation) for _, m in scored] == [
            (SHIPPED.version, 0),
            (NEW_VERSION, 1),
            (NEW_VERSION, 1),
            (SHIPPED.version, 0),
            (NEW_VERSION, 1),
            (SHIPPED.version, 0),
        ]
        local = Classifier(DEFAULT_MODEL_DIR, runtime="onnx").predict(images)  # same weights under both names
        assert [p.banner_score for p, _ in scored] == pytest.approx([p.banner_score for p in local], abs=1e-5)
        served_after = await asyncio.to_thread(get, server.triton.endpoints.metrics_url)
        # One request per pin: "1", and "2" and the unpinned one (which the server gives the newest).
        assert requests_of(served_after, "1") == requests_of(served_before, "1") + 1
        assert requests_of(served_after, "2") == requests_of(served_before, "2") + 2

        # Two versions later version 1 is unloaded: known from the last refresh, its events go to the newest.
        assert await asyncio.to_thread(server.add, new_dir, 2) == 3
        await asyncio.to_thread(server.triton.load, MODEL)
        for _ in range(100):  # strict readiness is false for a moment while version 1 unloads
            if await remote.refresh():
                break
            await asyncio.sleep(0.1)
        assert remote.pinned()[1] == "3"
        scored = await asyncio.wait_for(remote.infer(images[:2], ["1", "1"]), 30)
        assert {(m.info.version, m.generation) for _, m in scored} == {(NEW_VERSION, 2)}
        # A worker that has not refreshed learns it from the failed request, and does not wait for it either.
        fresh = RemoteClassifier(settings)
        try:
            scored = await asyncio.wait_for(fresh.infer(images[:2], ["1", "2"]), 30)
            assert [m.generation for _, m in scored] == [2, 1]
            assert fresh.available
        finally:
            await fresh.close()
    finally:
        await remote.close()


def requests_of(metrics: str, version: str) -> int:
    """Triton's count of successful inference requests of one version of the model."""
    for line in metrics.splitlines():
        if line.startswith(f'nv_inference_request_success{{model="{MODEL}",version="{version}"}}'):
            return int(float(line.rsplit(" ", 1)[1]))
    return 0


def test_export_triton_writes_a_repository_that_tritons_schema_and_server_accept(
    tmp_path: Path, triton_starts: None
) -> None:
    out = tmp_path / "gpu"
    done = processor_command(Settings(), "export-triton", str(out), "--version", "3", "--generation", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    folder = out / MODEL
    assert (folder / "3" / "model.onnx").stat().st_size == (DEFAULT_MODEL_DIR / "model.onnx").stat().st_size
    assert (folder / LABELS_FILE).read_text().split() == list(SHIPPED.positions)
    config = parse_config((folder / CONFIG_FILE).read_text())  # Triton's model_config.proto, text format
    assert (config.backend, config.max_batch_size) == ("onnxruntime", 64)
    assert list(config.input[0].dims) == [*SHIPPED.input_size[::-1], 3] and config.input[0].data_type == 2  # TYPE_UINT8
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert config.instance_group[0].kind == 1  # KIND_GPU
    assert read_served(folder)[3].generation == 2

    # The wheel's Triton has no ONNX Runtime backend: it reads and validates the config, then says just that.
    work = tmp_path / "work"
    server = TritonServer(out, work, Endpoints.free(), (MODEL,))
    server.start()
    with pytest.raises(TritonUnavailable) as refused:
        server.wait_ready(60)
    server.stop()
    assert "unable to find backend library for backend 'onnxruntime'" in str(refused.value)

    # The same config for CPUs, with the backend swapped for the Python one Triton has here: it loads and serves.
    cpu = tmp_path / "cpu"
    done = processor_command(Settings(), "export-triton", str(cpu), "--kind", "cpu")
    assert done.returncode == 0, done.stderr[-2000:]
    text = (cpu / MODEL / CONFIG_FILE).read_text().replace('backend: "onnxruntime"', 'backend: "python"')
    text = text.replace('default_model_filename: "model.onnx"', 'default_model_filename: "model.py"')
    (cpu / MODEL / CONFIG_FILE).write_text(text)
    shutil.copyfile(PYTHON_MODEL, cpu / MODEL / "1" / "model.py")
    server = TritonServer(cpu, work, Endpoints.free(), (MODEL,))
    server.start()
    try:
        server.wait_ready(60)
        request = urllib.request.Request(f"{server.endpoints.http_url}/v2/models/{MODEL}/config")
        assert json.loads(urllib.request.urlopen(request, timeout=5).read())["max_batch_size"] == 64
    finally:
        server.stop()


def serve_model(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "processor", "serve-model"],
            env=settings_env(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def ready(endpoints: Endpoints) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoints.http_url}/v2/health/ready", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def text(path: Path) -> str:
    return path.read_text(errors="replace")


async def wait_served(endpoints: Endpoints, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, text(log_path)[-3000:]
        if await asyncio.to_thread(ready, endpoints):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"serve-model not ready:\n{text(log_path)[-3000:]}")


async def test_two_workers_share_serve_model_through_its_death_and_a_promotion(
    settings: Settings,
    image_server: ImageServer,
    jpegs: dict[str, bytes],
    start_worker,
    tmp_path: Path,
    triton_starts: None,
) -> None:
    endpoints = Endpoints.free()
    settings = settings.with_overrides(
        inference_url=endpoints.http_url,
        model_server_host=endpoints.host,
        model_server_http_port=endpoints.http_port,
        model_server_grpc_port=endpoints.grpc_port,
        model_server_metrics_port=endpoints.metrics_port,
        model_server_repository=str(tmp_path / "repository"),
        inference_backoff_s=0.05,
        inference_breaker_failures=2,
        inference_breaker_reset_s=0.5,
        monitor_interval_s=1,
        broker_commit_interval_s=0.2,
        follow_registry=True,  # the server follows the registry; workers in remote mode follow the server
    )
    log_path = tmp_path / "serve-model.log"
    server = serve_model(settings, log_path)
    try:
        await wait_served(endpoints, server, log_path)
        workers = [start_worker(settings), start_worker(settings)]
        names = sorted(jpegs)
        first = [event(f"a-{i}", image_server.url(n), listing=f"l{i % 5}", index=i) for i, n in enumerate(names)]
        await produce(settings, first)
        await asyncio.gather(*(w.ready(assignments=1) for w in workers))
        await wait_for_rows(settings, {e["image_id"] for e in first}, 120)

        os.killpg(server.pid, signal.SIGKILL)  # the server dies with events on their way
        server.wait()
        second = [
            event(f"b-{i}", image_server.url(n) + "?b", listing=f"l{i % 5}", index=i) for i, n in enumerate(names)
        ]
        await produce(settings, second)
        for _ in range(100):
            if any(w.probe()[1].get("model_server") is False for w in workers):
                break
            await asyncio.sleep(0.1)
        assert any(w.probe()[1].get("model_server") is False for w in workers), "no worker saw the outage"
        server = serve_model(settings, log_path)
        await wait_served(endpoints, server, log_path)
        await wait_for_rows(settings, {e["image_id"] for e in first + second}, 120)

        promoted = processor_command(settings, "model", "promote", str(new_version_of_the_shipped_model(tmp_path)))
        assert promoted.returncode == 0, promoted.stderr[-2000:]
        for _ in range(120):
            if f"{NEW_VERSION} as version" in text(log_path):
                break
            await asyncio.sleep(0.5)
        for _ in range(60):  # each worker takes the new version up within a monitor interval
            if all(f"{NEW_VERSION} (version" in w.log() for w in workers):
                break
            await asyncio.sleep(0.5)
        third = [event(f"c-{i}", image_server.url(n) + "?c", listing="l9", index=i) for i, n in enumerate(names[:8])]
        await produce(settings, third)
        await wait_for_rows(settings, {e["image_id"] for e in third}, 120)
        await wait_for_zero_lag(settings, 60)

        rows = {r["image_id"]: r for r in await fetch_rows(settings)}
        assert len(rows) == len(first) + len(second) + len(third)
        assert await fetch_dead_letters(settings) == []
        assert {rows[e["image_id"]]["model_version"] for e in first + second} == {SHIPPED.version}
        assert {rows[e["image_id"]]["model_version"] for e in third} == {NEW_VERSION}
        generations = {rows[e["image_id"]]["model_generation"] for e in third}
        assert len(generations) == 1 and generations.pop() > 0
        assert all(w.proc.poll() is None for w in workers)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)
        # the registry is shared by every test on the stack: the shipped model is active again
        processor_command(settings, "model", "promote", str(DEFAULT_MODEL_DIR))


def test_the_benchmark_runs_at_smoke_size(tmp_path: Path, triton_starts: None) -> None:
    from benchmarks import model_server

    out = tmp_path / "server.json"
    model_server.main(["--images", "16", "--batch-size", "8", "--concurrency", "1,2", "--json", str(out)])
    results = json.loads(out.read_text())["results"]
    assert {"local", "remote_1", "remote_2", "server"} <= results.keys()
    assert results["remote_2"]["ratio_to_local"] > 0
    model_server.main(
        ["--sweep", "4;-", "--workers", "1,2", "--images", "16", "--worker-batch-size", "4", "--json", str(out)]
    )
    results = json.loads(out.read_text())["results"]
    assert set(results) == {f"preferred {p} / {n} worker(s)" for p in ("4", "-") for n in (1, 2)}
    assert all(r["images_per_s"] > 0 and r["server_mean_batch"] >= 1 for r in results.values())
