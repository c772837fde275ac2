"""The full pipeline on the embedded stack: worker subprocesses, a backlog or a paced stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import orjson
import psutil
from aiokafka import AIOKafkaProducer

from processor.dev.harness import WorkerProcess, isolated_settings, wait_ready
from processor.dev.stack import StackUrls, free_port, stop_processes
from processor.settings import Settings
from processor.store import PostgresStore
from processor.topics import bootstrap, ensure_topics, event_key, produce_lines, read_topic

DONE_TIMEOUT_S = 900  # longest wait for a run's events (or listing states) to be stored


@dataclass
class RunConfig:
    """One end-to-end run."""

    events: int
    workers: int = 1
    batch_size: int = 32
    fetch_concurrency: int = 64
    max_in_flight: int = 256
    rate_per_s: float | None = None  # None: the whole backlog at once (throughput); else paced (latency)
    wait_listings: bool = False  # also wait until the listing actor has caught up, and say when it did
    overrides: dict[str, Any] = field(default_factory=dict)
    per_worker: tuple[dict[str, Any], ...] = ()  # settings of each worker on top (one worker per entry)
    producer_per_send: bool = False  # paced: a new producer for each send, as before issue 23's third round


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


@dataclass
class Workers:
    """Running ``processor worker`` subprocesses and a store on their table."""

    settings: Settings
    store: PostgresStore
    procs: list[Any]
    ports: list[int]

    def fresh(self, image_urls: list[str]) -> list[str]:
        """URL variants no earlier run (or Redis entry) has seen: a run of its own."""
        return [u.replace("?v=", f"?v={self.settings.consumer_group}-") for u in image_urls]


@contextlib.asynccontextmanager
async def running_workers(urls: StackUrls, config: RunConfig, workdir: Path) -> AsyncIterator[Workers]:
    """``config.workers`` ready workers (or one per ``config.per_worker``) on topics and a table of their own;
    stopped on exit."""
    settings = run_settings(urls, config)
    await ensure_topics(settings.broker_url, settings.topics, settings.topic_partitions)
    each = config.per_worker or ({},) * config.workers
    ports = [free_port() for _ in each]
    logs = [workdir / f"{settings.consumer_group}-{i}.log" for i in range(len(each))]
    workers = [
        WorkerProcess(settings.with_overrides(metrics_port=p, log_level="INFO", **extra), log)
        for p, log, extra in zip(ports, logs, each, strict=True)
    ]
    procs = [w.proc for w in workers]
    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    try:
        await wait_ready(workers, 120)
        await store.start()
        yield Workers(settings, store, procs, ports)
    finally:
        stop_processes(procs, 20)
        await store.close()


async def run_pipeline(urls: StackUrls, image_urls: list[str], config: RunConfig, workdir: Path) -> dict[str, Any]:
    """Stream ``config.events`` events through ``config.workers`` workers and measure everything."""
    async with running_workers(urls, config, workdir) as w:
        cpu0 = cpu_seconds(w.procs)
        started = time.time()
        rss = _RssSampler(w.procs)
        sampler = asyncio.create_task(rss.run())
        await produce_events(
            w.settings, w.fresh(image_urls[: config.events]), config.rate_per_s, per_send=config.producer_per_send
        )
        await wait_done(w, config.events)
        sampler.cancel()
        cpu_s = cpu_seconds(w.procs) - cpu0
        batches = await _scrape(w.ports)
        listings = await _wait_listings(w, config.events, started) if config.wait_listings else {}
        measured = await _measure(w.settings, w.store, config, started, cpu_s, batches)
        return measured | listings | {"worker_rss_mb": rss.summary()}


async def produce_events(
    settings: Settings,
    urls: list[str],
    rate_per_s: float | None = None,
    prefix: str = "img-",
    topic: str = "",
    per_send: bool = False,
) -> None:
    """One event per URL onto ``topic`` (default: the input topic), image ids ``{prefix}{i}``, twelve
    images a listing; all at once, or paced at ``rate_per_s`` through one running producer (as a feed's
    would be; ``per_send``: a new one for each send), each event stamped just before it is sent."""

    def line(i: int, url: str) -> bytes:
        return orjson.dumps(
            {
                "image_id": f"{prefix}{i}",
                "listing_id": f"{prefix}listing-{i // 12}",
                "url": url,
                "position_index": i % 12,
                "event_time": datetime.now(UTC).isoformat(),
            }
        )

    topic = topic or settings.input_topic
    if rate_per_s is None:
        await produce_lines(settings.broker_url, topic, [line(i, u) for i, u in enumerate(urls)])
        return
    chunk = max(1, int(rate_per_s / 20))  # 20 sends a second
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap(settings.broker_url), acks="all", linger_ms=5)
    await producer.start()
    try:
        start = time.monotonic()
        for k in range(0, len(urls), chunk):
            await asyncio.sleep(max(0.0, start + k / rate_per_s - time.monotonic()))
            lines = [line(i, urls[i]) for i in range(k, min(k + chunk, len(urls)))]
            if per_send:  # the stamp then includes starting a producer (connect, metadata) for each send
                await produce_lines(settings.broker_url, topic, lines)
                continue
            await asyncio.gather(*[await producer.send(topic, v, key=event_key(v)) for v in lines])
    finally:
        await producer.stop()


async def wait_done(w: Workers, expected: int, prefix: str = "") -> None:
    """Until ``expected`` events whose image id starts with ``prefix`` are rows or dead letters of this run."""
    query = f"""SELECT (SELECT count(*) FROM "{w.store.table}" WHERE starts_with(image_id, $1))
        + (SELECT count(*) FROM image_dead_letters WHERE source_topic = ANY($2) AND starts_with(image_id, $1))"""
    topics = [w.settings.input_topic, w.settings.backfill_topic]
    await _poll(w, w.store.table, lambda row: row[0] >= expected, query, prefix, topics)


async def _wait_listings(w: Workers, images: int, started: float) -> dict[str, Any]:
    """Until the listing actor has stored and published states that count every image; say when it did."""
    query = f"""SELECT coalesce(sum(image_count), 0) AS images, max(updated_at) AS last,
        count(*) FILTER (WHERE published_revision < revision) AS unpublished FROM "{w.settings.listings_table}"
    """
    row = await _poll(w, w.settings.listings_table, lambda r: r["images"] >= images and not r["unpublished"], query)
    last_image = await w.store.pool.fetchval(f'SELECT max(classified_at) FROM "{w.store.table}"')
    return {
        "listings_settled_after_last_image_s": round((row["last"] - last_image).total_seconds(), 2),
        "images_per_s_incl_listings": round(images / (row["last"].timestamp() - started), 1),
    }


async def _poll(w: Workers, table: str, done: Callable[[Any], bool], query: str, *args: Any) -> Any:
    """The first row of ``query`` that ``done`` accepts, once ``table`` exists (the workers create it)."""
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while time.monotonic() < deadline:
        if await w.store.pool.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            row = await w.store.pool.fetchrow(query, *args)
            if row is not None and done(row):
                return row
        await asyncio.sleep(0.1)
    raise TimeoutError(f"not done in {DONE_TIMEOUT_S} s: {query} {args}")


def percentiles_ms(latencies_ms: Any) -> dict[str, float]:
    return {f"p{p}": round(float(np.percentile(latencies_ms, p)), 1) for p in (50, 95, 99)}


def latencies_ms(rows: list[Any]) -> Any:
    """Event time to ``classified_at`` of each row, in milliseconds."""
    return np.array([(r["classified_at"] - r["event_time"]).total_seconds() * 1000 for r in rows])


class _RssSampler:
    """Resident memory of the workers, once a second."""

    def __init__(self, procs: list[Any]) -> None:
        self.procs = procs
        self.samples: list[float] = []
        self.times: list[float] = []  # seconds since the first sample, one per sample

    async def run(self) -> None:
        start = time.monotonic()
        while True:
            total = 0
            for proc in self.procs:
                with contextlib.suppress(psutil.NoSuchProcess):
                    total += psutil.Process(proc.pid).memory_info().rss
            self.samples.append(total / 2**20)
            self.times.append(time.monotonic() - start)
            await asyncio.sleep(1.0)

    def summary(self) -> dict[str, Any]:
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
        } | self._minutes()

    def _minutes(self) -> dict[str, Any]:
        """RSS at each full minute (by the clock), and, for runs over 20 minutes, the slope over the last 20."""
        times, samples = np.array(self.times), np.array(self.samples)
        per_minute = [round(float(samples[np.argmax(times >= 60 * m)])) for m in range(int(times[-1] // 60) + 1)]
        out: dict[str, Any] = {"per_minute": per_minute}
        if times[-1] > 20 * 60:
            last = times >= times[-1] - 20 * 60
            out["mb_per_min_last_20_min"] = round(float(np.polyfit(times[last], samples[last], 1)[0]) * 60, 2)
        return out


def cpu_seconds(procs: list[Any]) -> float:
    """CPU time the processes used so far (with their children), in seconds."""
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
    latencies = latencies_ms(rows)
    stage_ms: dict[str, list[float]] = {}
    for o in outputs:
        for stage, ms in o["timings_ms"].items():  # type: ignore[union-attr]
            stage_ms.setdefault(stage, []).append(ms)
    cache = Counter(str(o["cache"]) for o in outputs)
    wall = finished - started
    return {
        "config": {k: v for k, v in config.__dict__.items() if k not in ("overrides", "wait_listings", "per_worker")}
        | config.overrides,
        "events": config.events,
        "classified": len(rows),
        "images_per_s": round(config.events / wall, 1),
        "latency_ms": percentiles_ms(latencies),
        "latency_cdf_ms": [round(float(v), 1) for v in np.percentile(latencies, np.arange(0, 101, 2))],
        "stage_ms_mean": {k: round(float(np.mean(v)), 2) for k, v in stage_ms.items()},
        "stage_ms_p95": {k: round(float(np.percentile(v, 95)), 2) for k, v in stage_ms.items()},
        "cache_hit_rate": round((cache["url"] + cache["hash"]) / max(1, len(outputs)), 3),
        "cpu_cores_used_by_workers": round(cpu_s / wall, 2),
        **batches,
    }
