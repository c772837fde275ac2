"""``processor demo``: the whole system on the embedded stack, with a summary checked against storage."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from ..settings import Settings
from ..store import PostgresStore
from ..topics import ensure_topics, produce_lines, read_topic, topic_configs
from .harness import WorkerProcess, wait_ready
from .imageserver import ImageServer, Listing, generate_listings
from .stack import EmbeddedStack, stop_processes

BROKEN_EVERY = 50  # one event in 50 points at a missing image: it must end in the DLQ


def run_demo(
    images: int, listings: int, workers: int, timeout_s: float, progress: bool, photos: Path | None = None
) -> dict[str, Any]:
    """Start everything, stream ``images`` events through ``workers`` workers, summarise, stop.

    With ``photos`` (a folder of the real-photo corpus) the listings are real cars, fetched from their
    sources first where missing; without it, or when they cannot be had, generated photos.
    """
    with EmbeddedStack() as stack:
        assert stack.urls is not None
        settings = Settings(
            broker_url=stack.urls.broker_url,
            postgres_dsn=stack.urls.postgres_dsn,
            redis_url=stack.urls.redis_url,
            allow_networks="127.0.0.1/32",
            consumer_group=f"demo-{uuid.uuid4().hex[:8]}",
        )
        return asyncio.run(_run(settings, stack.root, images, listings, workers, timeout_s, progress, photos))


async def _catalogue(
    images: int, listings: int, photos: Path | None, say: Any
) -> tuple[list[Listing], dict[str, bytes], str]:
    """The demo's listings and photo bytes, and where their labels come from."""
    if photos is not None:
        real = await real_listings(photos, images, say)
        if real is not None:
            return (*real, "labellers")
    say(f"generating {images} listing photos over {listings} listings ...")
    catalogue, blobs = await asyncio.to_thread(generate_listings, images, listings)
    return catalogue, blobs, "generator"


async def real_listings(
    photos: Path, images: int, say: Any, manifest: Path | None = None
) -> tuple[list[Listing], dict[str, bytes]] | None:
    """Whole listings of real cars from the corpus (fetched where missing), or None when they cannot be had."""
    from ..ml.corpus import MANIFEST, RAW_GITHUB, demo_selection, fetch, photo_file, read_manifest

    chosen = demo_selection(await asyncio.to_thread(read_manifest, manifest or MANIFEST), images)
    if not chosen:
        return None
    wanted = [p for rows in chosen.values() for p in rows]
    missing = [p for p in wanted if not photo_file(photos, p).exists()]
    if missing:
        say(f"fetching {len(missing)} real listing photos from their repositories into {photos} ...")
        first = await fetch(missing[:1], photos, RAW_GITHUB)  # offline: give up after one photo, not all
        report = await fetch(missing[1:], photos, RAW_GITHUB) if not first.failed else first
        if report.failed:
            say(f"could not fetch {len(report.failed)} photos (offline?): the demo streams generated photos instead")
            return None
    catalogue, blobs = [], {}
    for n, rows in enumerate(chosen.values()):
        listing = Listing(f"listing-{n:04d}", [])
        for p in rows:
            name = f"{p.image_id}.jpg"
            blobs[name] = await asyncio.to_thread(photo_file(photos, p).read_bytes)
            listing.photos.append((name, p.position, p.banner == "1"))
        catalogue.append(listing)
    say(f"streaming {len(blobs)} real photos of {len(catalogue)} cars (labels from the labelling team) ...")
    return catalogue, blobs


async def _run(
    settings: Settings,
    root: Path,
    images: int,
    listings: int,
    workers: int,
    timeout_s: float,
    progress: bool,
    photos: Path | None,
) -> dict[str, Any]:
    say = _printer(progress)
    catalogue, blobs, truth_from = await _catalogue(images, listings, photos, say)
    workers_run: list[WorkerProcess] = []
    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    async with ImageServer(images=blobs) as server:
        try:
            await ensure_topics(
                settings.broker_url,
                settings.topics,
                settings.topic_partitions,
                configs=topic_configs(settings),
            )
            say(f"starting {workers} worker(s) ...")
            workers_run = [WorkerProcess(settings, root / f"worker-{i}.log") for i in range(workers)]
            await wait_ready(workers_run, 120.0)
            await store.start()
            await store.migrate()
            events = build_events(catalogue, server)
            started = time.time()
            await produce_lines(settings.broker_url, settings.input_topic, [orjson.dumps(e) for e in events])
            done = await wait_for_outcomes(store, len(events), timeout_s, progress)
            elapsed = time.time() - started
            return {**await summarise(settings, store, events, catalogue, done, elapsed), "labels_from": truth_from}
        finally:
            stop_processes([w.proc for w in workers_run], settings.shutdown_grace_s + 10)
            await store.close()


def _printer(enabled: bool) -> Any:
    return (lambda msg: print(msg, file=sys.stderr, flush=True)) if enabled else (lambda msg: None)


def build_events(catalogue: list[Any], server: ImageServer) -> list[dict[str, Any]]:
    events, n = [], 0
    for listing in catalogue:
        for index, (name, _position, _banner) in enumerate(listing.photos):
            n += 1
            url = server.url(name) if n % BROKEN_EVERY else server.url(f"missing-{name}")
            events.append(
                {
                    "image_id": f"{listing.listing_id}-{index:02d}",
                    "listing_id": listing.listing_id,
                    "url": url,
                    "position_index": index,
                    "event_time": datetime.now(UTC).isoformat(),
                }
            )
    return events


async def count_outcomes(store: PostgresStore) -> tuple[int, int]:
    row = await store.pool.fetchrow(
        f'SELECT (SELECT count(*) FROM "{store.table}") AS c, (SELECT count(*) FROM image_dead_letters) AS d'
    )
    assert row is not None
    return int(row["c"]), int(row["d"])


async def wait_for_outcomes(store: PostgresStore, expected: int, timeout_s: float, progress: bool) -> int:
    """Poll Postgres until every event is a row or a dead letter; return how many are."""
    deadline = time.monotonic() + timeout_s
    with tqdm(total=expected, unit="img", disable=not progress, file=sys.stderr) as bar:
        done = 0
        while time.monotonic() < deadline:
            classified, dead = await count_outcomes(store)
            bar.update(classified + dead - done)
            done = classified + dead
            if done >= expected:
                break
            await asyncio.sleep(0.25)
    return done


async def summarise(
    settings: Settings,
    store: PostgresStore,
    events: list[dict[str, Any]],
    catalogue: list[Any],
    done: int,
    elapsed_s: float,
) -> dict[str, Any]:
    rows = await store.fetch_all()
    dead = await store.fetch_dead_letters()
    outputs = await read_topic(settings.broker_url, settings.output_topic, expected=len(rows))
    dlq = await read_topic(settings.broker_url, settings.dlq_topic, expected=len(dead))
    ids = {e["image_id"] for e in events}
    stored = {r["image_id"] for r in rows} | {d["image_id"] for d in dead}
    latencies = sorted((r["classified_at"] - r["event_time"]).total_seconds() * 1000 for r in rows)
    states = await wait_for_listings(settings, store, Counter(r["listing_id"] for r in rows))
    updates = await read_topic(settings.broker_url, settings.listing_updates_topic, timeout_s=2)
    truth = {f"{lst.listing_id}-{i:02d}": (p, b) for lst in catalogue for i, (_, p, b) in enumerate(lst.photos)}
    agree = sum(1 for r in rows if r["has_banner"] == truth.get(r["image_id"], (None, None))[1])
    agree_position = sum(1 for r in rows if r["position"] == truth.get(r["image_id"], (None, None))[0])
    return {
        "events": len(events),
        "classified": len(rows),
        "dead_letters": len(dead),
        "dead_letter_kinds": dict(Counter(d["error_kind"] for d in dead)),
        "banners": sum(1 for r in rows if r["has_banner"]),
        "banner_agreement_with_labels": round(agree / len(rows), 4) if rows else None,
        "position_agreement_with_labels": round(agree_position / len(rows), 4) if rows else None,
        "positions": dict(Counter(r["position"] for r in rows)),
        "listings": len(catalogue),
        "listing_states": {
            k: {f: v[f] for f in ("hero", "coverage", "banner_share", "counts", "feed")} for k, v in states.items()
        },
        "listing_updates_topic_records": len(updates),
        "images_per_s": round(done / elapsed_s, 1) if elapsed_s > 0 else None,
        "latency_ms": {"p50": _pct(latencies, 50), "p95": _pct(latencies, 95)},
        "model": {"name": rows[0]["model_name"], "version": rows[0]["model_version"]} if rows else None,
        "output_topic_records": len(outputs),
        "dlq_topic_records": len(dlq),
        "accounted": ids == stored
        and len(rows) + len(dead) == len(events)
        and {o["image_id"] for o in outputs} == {r["image_id"] for r in rows}
        and len(dlq) >= len(dead),
    }


async def wait_for_listings(
    settings: Settings, store: PostgresStore, images: Counter[str], timeout_s: float = 60
) -> dict[str, dict[str, Any]]:
    """The listing actor's stored states, once each listing's state counts all its classified images."""
    states: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = await store.pool.fetch(f'SELECT listing_id, state FROM "{settings.listings_table}"')
        states = {r["listing_id"]: orjson.loads(r["state"]) for r in found}
        if all(states.get(k, {}).get("counts", {}).get("images") == n for k, n in images.items()):
            break
        await asyncio.sleep(0.25)
    return dict(sorted(states.items()))


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * pct / 100))], 1)


def print_summary(s: dict[str, Any]) -> None:
    states = s["listing_states"]
    print(f"\nevents in:        {s['events']}")
    print(f"classified:       {s['classified']}  (output topic: {s['output_topic_records']} records)")
    print(f"dead letters:     {s['dead_letters']}  {s['dead_letter_kinds']}  (DLQ topic: {s['dlq_topic_records']})")
    if s["labels_from"] == "labellers":
        print("photos:           real listing photos (labels: the labelling team's)")
    else:
        print("photos:           generated drawings (the model learnt real photos: it calls most drawings other)")
    print(
        f"banners found:    {s['banners']}  (agreement with the {s['labels_from']}' labels: "
        f"{s['banner_agreement_with_labels']})"
    )
    print(f"positions:        {s['positions']}  (agreement: {s['position_agreement_with_labels']})")
    print(f"throughput:       {s['images_per_s']} images/s")
    print(f"latency:          p50 {s['latency_ms']['p50']} ms, p95 {s['latency_ms']['p95']} ms (event to stored)")
    print(f"model:            {s['model']}")
    heroes = sum(1 for v in states.values() if v["hero"]["image_id"])
    print(f"hero images:      {heroes} of {len(states)} listings have one (listing actor: table listings, ")
    print(f"                  {s['listing_updates_topic_records']} records on listing-updates)")
    for listing, v in list(states.items())[:10]:
        cov = v["coverage"]
        print(
            f"  {listing}: hero {v['hero']['image_id'] or '-'} ({v['hero']['reason']}), "
            f"coverage {cov['score']:.2f}, missing {', '.join(cov['missing']) or 'none'}"
        )
    if len(states) > 10:
        print(f"  ... and {len(states) - 10} more (--json shows all)")
    print("every event accounted for: " + ("yes" if s["accounted"] else "NO"))
