"""Hostile and broken input through the real worker: each event ends as a result or a dead letter
with the right kind, the worker keeps running, and nothing is fetched from a blocked address."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import orjson
from PIL import Image

from processor.dev.imageserver import ImageServer
from processor.dev.stack import free_port
from processor.settings import Settings

from .conftest import event
from .helpers import fetch_dead_letters, fetch_rows, wait_for_rows
from .test_end_to_end import produce


def png(mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (300, 200)).save(buf, "PNG")
    return buf.getvalue()


async def test_hostile_events_end_in_the_dlq_with_their_kind(
    settings: Settings, image_server: ImageServer, forbidden_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    settings = settings.with_overrides(max_image_bytes=3_000_000, max_image_pixels=20_000_000)
    name = sorted(jpegs)[0]
    image_server.images["grey16.png"] = png("I;16")
    image_server.images["cmyk.jpg"] = _jpeg("CMYK")
    base = image_server.base_url
    expected_kind = {
        "blocked-file": ("file:///etc/passwd", "blocked_url"),
        "blocked-ftp": ("ftp://example.com/a.jpg", "blocked_url"),
        "blocked-data": ("data:image/png;base64,AAAA", "blocked_url"),
        "blocked-js": ("javascript:alert(1)", "blocked_url"),
        "blocked-metadata": ("http://169.254.169.254/latest/meta-data/", "blocked_url"),
        "blocked-private": ("http://10.0.0.1/a.jpg", "blocked_url"),
        "blocked-decimal": ("http://2130706434/img/x.jpg", "blocked_url"),
        "blocked-ipv6": ("http://[::1]/a.jpg", "blocked_url"),
        "blocked-other-loopback": (forbidden_server.url(name), "blocked_url"),
        "blocked-redirect": (f"{base}/redirect?to={forbidden_server.url(name)}", "blocked_url"),
        "redirect-metadata": (f"{base}/redirect?to=http://169.254.169.254/", "blocked_url"),
        "gone": (f"{base}/status/410", "fetch_failed"),
        "server-error": (f"{base}/status/503", "fetch_failed"),
        "html": (f"{base}/html", "not_an_image"),
        "truncated": (f"{base}/truncated/{name}", "not_an_image"),
        "huge": (f"{base}/huge", "too_large"),
        "grey16": (image_server.url("grey16.png"), "ok"),
        "cmyk": (image_server.url("cmyk.jpg"), "ok"),
        "good": (image_server.url(name), "ok"),
        "good-after-redirect": (f"{base}/redirect?to={image_server.url(name)}", "ok"),
    }
    events: list[dict[str, object] | bytes] = [event(k, url) for k, (url, _) in expected_kind.items()]
    raw_bad = {
        "bad-json": b'{"image_id": "bad-json", "url": ',
        "bad-types": b'{"image_id": "bad-types", "listing_id": "l", "url": 42}',
        "bad-missing": b'{"image_id": "bad-missing"}',
        "bad-nul": orjson.dumps(event("bad-nul", "http://example.com/\u0000.jpg")),
        "bad-time": orjson.dumps({**event("bad-time", image_server.url(name)), "event_time": "yesterday"}),
        "bad-big": orjson.dumps({**event("bad-big", image_server.url(name)), "pad": "x" * 70_000}),
        "bad-array": b'["image_id", "bad-array"]',
    }
    events += list(raw_bad.values())
    worker = start_worker(settings)
    await produce(settings, events)
    await worker.ready()

    ids = set(expected_kind) | (set(raw_bad) - {"bad-json", "bad-array"})
    outcome = await wait_for_rows(settings, ids, timeout_s=90)
    assert {k: outcome[k] for k in expected_kind} == {k: kind for k, (_, kind) in expected_kind.items()}
    assert all(outcome[k] == "invalid_event" for k in ids if k.startswith("bad-"))
    dead = await fetch_dead_letters(settings)
    assert len(dead) == len(events) - sum(1 for _, kind in expected_kind.values() if kind == "ok")
    assert sum(forbidden_server.requests.values()) == 0, "fetched from a blocked address"
    assert image_server.requests["/status/503"] == settings.fetch_attempts  # transient: retried, then DLQ
    assert image_server.requests["/status/410"] == 1  # permanent: not retried
    assert len(await fetch_rows(settings)) == 4
    assert worker.proc.poll() is None, "the worker died"


async def test_worker_keeps_classifying_when_redis_is_down(
    settings: Settings, image_server: ImageServer, jpegs: dict[str, bytes], start_worker
) -> None:
    port = free_port()
    settings = settings.with_overrides(redis_url="redis://127.0.0.1:1/0", metrics_port=port)  # no Redis there
    events = [event(f"nr-{i}", image_server.url(n), index=i) for i, n in enumerate(sorted(jpegs)[:8])]
    worker = start_worker(settings)
    await produce(settings, events)
    await worker.ready()
    outcome = await wait_for_rows(settings, {e["image_id"] for e in events})
    assert set(outcome.values()) == {"ok"}
    assert "redis get failed" in worker.log()
    classified = 'processor_events_total{outcome="classified"} 8.0'
    async with aiohttp.ClientSession() as session:
        for _ in range(50):  # the counter moves just after the row is stored, which is what we waited for
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                text = await resp.text()
            if classified in text:
                break
            await asyncio.sleep(0.2)
    assert classified in text
    errors = next(line for line in text.splitlines() if line.startswith("processor_cache_errors_total "))
    assert float(errors.split()[1]) >= 1


def _jpeg(mode: str) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (320, 240), color=(10, 20, 30, 40) if mode == "CMYK" else None).save(buf, "JPEG")
    return buf.getvalue()
