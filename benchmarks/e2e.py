"""The full pipeline on the embedded stack: worker subprocesses, a backlog or a paced stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import psutil

from processor.dev.demo import count_outcomes
from processor.dev.harness import WorkerProcess, isolated_settings, wait_ready
from processor.dev.stack import StackUrls, free_port, stop_processes
from processor.settings import Settings
from processor.store import PostgresStore
from processor.topics import ensure_topics, produce_lines, read_topic


@dataclass
class RunConfig:
    """One end-to-end run."""

    events: int
    workers: int = 1
    batch_size: int = 32
    fetch_concurrency: int = 64
    max_in_flight: int = 256
    rate_per_s: float | None = None  # None: the whole backlog at once (throughput); else paced (latency)
    overrides: dict[str, Any] = field(default_factory=dict)


def run_settings(urls: StackUrls, config: RunConfig) -> Settings:
    return isolated_settings(
        urls,
        "bench",
        topic_partitions=8,
        batch_size=config.batch_size,
        fetch_concurrency=config.fetch_concurrency,
        fetch_per_host=config.fetch_concurrency,  # the local CDN is one host
        max_in_flight=config.max_in_flight,
        log_level="WARNING",
        **config.overrides,
    )


async def run_pipeline(urls: StackUrls, image_urls: list[str], config: RunConfig, workdir: Path) -> dict[str, Any]:
    """Stream ``config.events`` events through ``config.workers`` workers and measure everything."""
    settings = run_settings(urls, config)
    await ensure_topics(settings.broker_url, settings.topics, settings.topic_partitions)
    ports = [free_port() for _ in range(config.workers)]
    logs = [workdir / f"{settings.consumer_group}-{i}.log" for i in range(config.workers)]
    workers = [
        WorkerProcess(settings.with_overrides(metrics_port=p, log_level="INFO"), log)
        for p, log in zip(ports, logs, strict=True)
    ]
    procs = [w.proc for w in workers]
    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    try:
        await wait_ready(workers, 120)
        await store.start()
        cpu0 = _cpu_seconds(procs)
        started = time.time()
        rss = _RssSampler(procs)
        sampler = asyncio.create_task(rss.run())
        # A run of its own: URL variants no earlier run (or Redis entry) has seen.
        fresh = [u.replace("?v=", f"?v={settings.consumer_group}-") for u in image_urls[: config.events]]
        await _produce(settings, fresh, config.rate_per_s)
        await _wait_done(store, config.events, timeout_s=900)
        sampler.cancel()
        cpu_s = _cpu_seconds(procs) - cpu0
        batches = await _scrape(ports)
        return await _measure(settings, store, config, started, cpu_s, batches) | {"worker_rss_mb": rss.summary()}
    finally:
        stop_processes(procs, 20)
        await store.close()


async def _produce(settings: Settings, urls: list[str], rate_per_s: float | None) -> None:
    def line(i: int, url: str) -> bytes:
        return orjson.dumps(
            {
                "image_id": f"img-{i}",
                "listing_id": f"listing-{i // 12}",
                "url": url,
                "position_index": i % 12,
                "event_time": datetime.now(UTC).isoformat(),
            }
        )

    if rate_per_s is None:
        await produce_lines(settings.broker_url, settings.input_topic, [line(i, u) for i, u in enumerate(urls)])
        return
    chunk = max(1, int(rate_per_s / 20))  # 20 sends a second, each stamped when it is sent
    start = time.monotonic()
    for k in range(0, len(urls), chunk):
        await asyncio.sleep(max(0.0, start + k / rate_per_s - time.monotonic()))
        await produce_lines(
            settings.broker_url, settings.input_topic, [line(i, urls[i]) for i in range(k, min(k + chunk, len(urls)))]
        )


async def _wait_done(store: PostgresStore, expected: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await store.pool.fetchval("SELECT to_regclass($1) IS NOT NULL", store.table):
            classified, dead = await count_outcomes(store)
            if classified + dead >= expected:
                return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"pipeline did not finish {expected} events in {timeout_s} s")


class _RssSampler:
    """Resident memory of the workers, once a second."""

    def __init__(self, procs: list[Any]) -> None:
        self.procs = procs
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            total = 0
            for proc in self.procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += psutil.Process(proc.pid).memory_info().rss
            self.samples.append(total / 2**20)
            await asyncio.sleep(1.0)

    def summary(self) -> dict[str, float]:
        if not self.samples:
            return {}
        late = self.samples[len(self.samples) // 2 :]  # after warm-up: the trend that matters
        slope = float(np.polyfit(np.arange(len(late)), late, 1)[0]) * 60 if len(late) > 2 else 0.0
        return {
            "first": round(self.samples[0]),
            "last": round(self.samples[-1]),
            "max": round(max(self.samples)),
            "samples": len(self.samples),
            "mb_per_min_second_half": round(slope, 2),
        }


def _cpu_seconds(procs: list[Any]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = psutil.Process(proc.pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


async def _scrape(ports: list[int]) -> dict[str, Any]:
    """Inference batch sizes and why batches closed, from the workers' Prometheus endpoints."""
    sizes: Counter[str] = Counter()
    closed: Counter[str] = Counter()
    async with aiohttp.ClientSession() as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            previous = 0.0
            for line in text.splitlines():
                if line.startswith("processor_batch_size_bucket"):
                    le, value = line.split('le="')[1].split('"')[0], float(line.split()[-1])
                    sizes[le] += int(value - previous) if le != "+Inf" else 0
                    previous = value
                elif line.startswith("processor_batches_total{"):
                    closed[line.split('reason="')[1].split('"')[0]] += int(float(line.split()[-1]))
    return {"batch_size_histogram": {f"<={k}": v for k, v in sizes.items() if v}, "batches_closed": dict(closed)}


async def _measure(
    settings: Settings, store: PostgresStore, config: RunConfig, started: float, cpu_s: float, batches: dict[str, Any]
) -> dict[str, Any]:
    rows = await store.fetch_all()
    outputs = await read_topic(settings.broker_url, settings.output_topic, expected=len(rows), timeout_s=5)
    finished = max(r["classified_at"] for r in rows).timestamp()
    latencies = np.array([(r["classified_at"] - r["event_time"]).total_seconds() * 1000 for r in rows])
    stage_ms: dict[str, list[float]] = {}
    for o in outputs:
        for stage, ms in o["timings_ms"].items():  # type: ignore[union-attr]
            stage_ms.setdefault(stage, []).append(ms)
    cache = Counter(str(o["cache"]) for o in outputs)
    wall = finished - started
    return {
        "config": {k: v for k, v in config.__dict__.items() if k != "overrides"} | config.overrides,
        "events": config.events,
        "classified": len(rows),
        "images_per_s": round(config.events / wall, 1),
        "latency_ms": {f"p{p}": round(float(np.percentile(latencies, p)), 1) for p in (50, 95, 99)},
        "latency_cdf_ms": [round(float(v), 1) for v in np.percentile(latencies, np.arange(0, 101, 2))],
        "stage_ms_mean": {k: round(float(np.mean(v)), 2) for k, v in stage_ms.items()},
        "stage_ms_p95": {k: round(float(np.percentile(v, 95)), 2) for k, v in stage_ms.items()},
        "cache_hit_rate": round((cache["url"] + cache["hash"]) / max(1, len(outputs)), 3),
        "cpu_cores_used_by_workers": round(cpu_s / wall, 2),
        **batches,
    }
