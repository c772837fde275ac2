"""The simulated CDN: distinct generated photos from 640x480 to 1600x1200, served with latency."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

from processor.dev.imageserver import ImageServer
from processor.ml import synth

BENCH_SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 960), (1600, 1200))


def make_photos(count: int, banner_share: float, seed: int = 3) -> dict[str, bytes]:
    """``count`` distinct JPEGs, sizes spread evenly over BENCH_SIZES."""

    def one(i: int) -> tuple[str, bytes]:
        rng = random.Random(seed * 100_003 + i)
        banner = rng.random() < banner_share
        img = synth.render(rng, synth.POSITIONS[i % len(synth.POSITIONS)], banner, BENCH_SIZES[i % len(BENCH_SIZES)])
        return f"b{i:04d}{'-banner' if banner else ''}.jpg", synth.to_jpeg(img, rng.randint(75, 92))

    with ThreadPoolExecutor() as pool:
        return dict(pool.map(one, range(count)))


def event_urls(server: ImageServer, names: list[str], count: int, repeat_share: float, seed: int = 5) -> list[str]:
    """URLs for ``count`` events: a ``repeat_share`` of them repeat an earlier URL (cache hits), the rest
    are unique variants (``?v=``) of the distinct photos, so they cost a full download, decode and inference."""
    rng = random.Random(seed)
    urls: list[str] = []
    for i in range(count):
        if urls and rng.random() < repeat_share:
            urls.append(rng.choice(urls))
        else:
            urls.append(f"{server.url(names[i % len(names)])}?v={i}")
    return urls
