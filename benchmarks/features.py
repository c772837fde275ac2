"""Three features, each measured side by side with a run without it, in one benchmark run:

- ``listing_actor``: end-to-end images/s with the listing actor (the second agent) on and off;
- ``backfill``: latency of paced daily events with and without a large backlog on the backfill topic, and the
  backfill's rate meanwhile, with backfill in the daily worker's process and in an idle-priority worker beside it;
- ``revalidation``: a second pass over the same URLs, answered 304 (ETags) or downloaded again (no ETags).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from statistics import mean
from typing import Any

from processor.dev.imageserver import ImageServer
from processor.dev.stack import StackUrls
from processor.topics import read_topic

from .cdn import event_urls
from .e2e import (
    RunConfig,
    Workers,
    cpu_seconds,
    latencies_ms,
    percentiles_ms,
    produce_events,
    run_pipeline,
    running_workers,
    wait_done,
)


async def listing_actor(
    urls: StackUrls, image_urls: list[str], config: RunConfig, workdir: Path, reps: int
) -> dict[str, Any]:
    """The same events with the listing actor on and off, ``reps`` runs each, alternated (on off, off on, ...)
    so that a machine slowing down during the benchmark weighs on both sides alike."""
    runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for rep in range(reps):
        for enabled in (True, False) if rep % 2 == 0 else (False, True):
            overrides = config.overrides | {"listings_enabled": enabled}
            run_config = replace(config, wait_listings=enabled, overrides=overrides)
            runs[enabled].append(await run_pipeline(urls, image_urls, run_config, workdir))
    on, off = (mean(r["images_per_s"] for r in runs[k]) for k in (True, False))
    cpu_ms = {k: mean(1000 * r["cpu_cores_used_by_workers"] / r["images_per_s"] for r in runs[k]) for k in runs}
    return {
        "events": config.events,
        "runs_each": reps,
        "images_per_s_on": [r["images_per_s"] for r in runs[True]],
        "images_per_s_off": [r["images_per_s"] for r in runs[False]],
        "ratio_on_off": round(on / off, 3),
        "cost_percent": round(100 * (1 - on / off), 1),
        # the actor runs in the worker's process: CPU per image is the steadier figure on a busy machine
        "worker_cpu_ms_per_image_on": round(cpu_ms[True], 2),
        "worker_cpu_ms_per_image_off": round(cpu_ms[False], 2),
        "listings_settled_after_last_image_s": [r["listings_settled_after_last_image_s"] for r in runs[True]],
        "images_per_s_on_incl_listings": [r["images_per_s_incl_listings"] for r in runs[True]],
    }


# How backfill shares a machine with the daily events: in the daily worker's process after them (one worker,
# role all), or in a worker of its own at idle CPU priority beside a daily worker (the deployment of
# docs/operations/backfill.md: role daily and role backfill, which runs at SCHED_IDLE).
BACKFILL_SHAPES: dict[str, tuple[dict[str, Any], ...]] = {
    "in_process": ({"worker_role": "all"},),
    "idle_worker": ({"worker_role": "daily"}, {"worker_role": "backfill"}),
}


async def backfill_shapes(
    urls: StackUrls,
    server: ImageServer,
    names: list[str],
    config: RunConfig,
    workdir: Path,
    rates: tuple[float, float],
    daily_s: float,
    backlog: int,
) -> dict[str, Any]:
    """``backfill`` in each shape, side by side (``rates``: the daily rate and one worker's maximum); the
    figures of the idle worker's shape at the top, both shapes under ``shapes``."""
    shapes = {
        shape: await backfill(urls, server, names, replace(config, per_worker=each), workdir, rates, daily_s, backlog)
        for shape, each in BACKFILL_SHAPES.items()
    }
    return shapes["idle_worker"] | {"shape": "idle_worker", "shapes": shapes}


async def backfill(
    urls: StackUrls,
    server: ImageServer,
    names: list[str],
    config: RunConfig,
    workdir: Path,
    rates: tuple[float, float],
    daily_s: float,
    backlog: int,
) -> dict[str, Any]:
    """Daily events paced at ``rates[0]`` on the input topic, first alone (ids ``calm-``), then again (ids
    ``busy-``) just after ``backlog`` events (ids ``bf-``) were produced onto the backfill topic. The workers
    of ``config`` (warmed up first, so neither side pays the cold start) take both; latencies are read from
    Postgres. The spare capacity is one worker's maximum (``rates[1]``) less the daily rate."""
    daily_rate, max_rate = rates
    daily = event_urls(server, names, max(1, int(daily_rate * daily_s)), 0.0, seed=17)
    out: dict[str, Any] = {"daily_events": len(daily), "daily_rate_per_s": round(daily_rate, 1), "backlog": backlog}
    async with running_workers(urls, config, workdir) as w:
        await _warm_up(w, daily)
        calm = await _paced(w, _variants(daily, "calm"), daily_rate, "calm-")
        backfill_urls = _variants(event_urls(server, names, backlog, 0.0, seed=19), "bf")
        await produce_events(w.settings, w.fresh(backfill_urls), prefix="bf-", topic=w.settings.backfill_topic)
        cpu0 = [cpu_seconds([p]) for p in w.procs]
        busy = await _paced(w, _variants(daily, "busy"), daily_rate, "busy-")
        cpu_s = [cpu_seconds([p]) - c for p, c in zip(w.procs, cpu0, strict=True)]
        done = await w.store.pool.fetchval(
            f'SELECT count(*) FROM "{w.store.table}" WHERE starts_with(image_id, $1) AND classified_at <= $2',
            "bf-",
            busy["finished"],
        )
    wall_s = busy["finished"].timestamp() - busy["started"]
    for label, run in (("without_backlog", calm), ("with_backlog", busy)):
        out[label] = {"daily_latency_ms": run["latency_ms"]}
    spare = max(1.0, max_rate - daily_rate)
    out["with_backlog"] |= {"backfill_done_meanwhile": done, "backfill_images_per_s": round(done / wall_s, 1)}
    out["workers"] = list(config.per_worker) or [{}] * config.workers
    out["with_backlog"]["cpu_cores_by_worker"] = [round(c / wall_s, 2) for c in cpu_s]
    out["spare_images_per_s"] = round(spare, 1)
    out["backfill_share_of_spare"] = round(done / wall_s / spare, 3)
    out["p95_ratio_with_without"] = round(busy["latency_ms"]["p95"] / calm["latency_ms"]["p95"], 2)
    out["p50_ratio_with_without"] = round(busy["latency_ms"]["p50"] / calm["latency_ms"]["p50"], 2)
    return out


async def _paced(w: Workers, image_urls: list[str], rate_per_s: float | None, prefix: str) -> dict[str, Any]:
    """Events on the input topic (paced, or all at once) until all are stored; their latencies and timing."""
    started = time.time()
    await produce_events(w.settings, w.fresh(image_urls), rate_per_s, prefix)
    await wait_done(w, len(image_urls), prefix)
    rows = await w.store.pool.fetch(
        f'SELECT event_time, classified_at FROM "{w.store.table}" WHERE starts_with(image_id, $1)', prefix
    )
    return {
        "latency_ms": percentiles_ms(latencies_ms(rows)),
        "started": started,
        "finished": max(r["classified_at"] for r in rows),
    }


async def revalidation(
    urls: StackUrls, server: ImageServer, names: list[str], config: RunConfig, workdir: Path
) -> dict[str, Any]:
    """Two passes over ``config.events`` URLs from a CDN that sends ETags (the second pass is revalidated: 304),
    and two over as many other variants of the same photos from one that sends none (the second pass downloads
    every image again; equal bytes still skip decode and inference through the content-hash cache). One worker,
    ``revalidate_after_s`` 0 (every repeat is checked), the passes interleaved: only the 304s differ."""
    base = event_urls(server, names, config.events, 0.0, seed=23)
    sides = {"etags": (True, _variants(base, "e")), "no_etags": (False, _variants(base, "n"))}
    out: dict[str, Any] = {"urls": config.events}
    try:
        async with running_workers(urls, config, workdir) as w:
            warm = await _warm_up(w, base)
            for pass_, prefix in (("first_pass", "1"), ("second_pass", "2")):
                for side, (etags, image_urls) in sides.items():
                    server.etags = etags
                    out.setdefault(side, {})[pass_] = await _pass(w, server, image_urls, f"{side}{prefix}-")
            outputs = await read_topic(w.settings.broker_url, w.settings.output_topic, warm + 4 * config.events, 5)
    finally:
        server.etags = True
    for side in sides:  # how the worker answered the second pass: revalidated (304) or hash (same bytes)
        ids = f"{side}2-"
        out[side]["second_pass"]["cache"] = dict(
            Counter(o["cache"] for o in outputs if str(o["image_id"]).startswith(ids))
        )
    etags, plain = out["etags"]["second_pass"], out["no_etags"]["second_pass"]
    out["bytes_saved_percent"] = round(100 * (1 - etags["bytes_downloaded"] / max(1, plain["bytes_downloaded"])), 1)
    out["second_pass_speedup"] = round(etags["images_per_s"] / plain["images_per_s"], 2)
    return out


async def _pass(w: Workers, server: ImageServer, image_urls: list[str], prefix: str) -> dict[str, Any]:
    """One pass over ``image_urls`` at once: images/s to the last row stored, image bytes sent and 304s."""
    sent, not_modified = server.bytes_sent, server.not_modified
    run = await _paced(w, image_urls, None, prefix)
    return {
        "images_per_s": round(len(image_urls) / (run["finished"].timestamp() - run["started"]), 1),
        "bytes_downloaded": server.bytes_sent - sent,
        "not_modified": server.not_modified - not_modified,
    }


async def _warm_up(w: Workers, image_urls: list[str]) -> int:
    """A batch through the worker before measuring, so that no side pays the cold start; how many events."""
    warm = _variants(image_urls[: w.settings.batch_size], "warm")
    await _paced(w, warm, None, "warm-")
    return len(warm)


def _variants(image_urls: list[str], tag: str) -> list[str]:
    """Other variants (``?v=``) of the same photos: the same work, URLs and bytes of their own."""
    return [u.replace("?v=", f"?v={tag}") for u in image_urls]
