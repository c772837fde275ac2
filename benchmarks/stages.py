"""Each stage alone, on the same photos and model: the limits the pipeline is measured against."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import numpy as np
import psutil

from processor.decode import decode_image
from processor.model import Classifier


def decode_rate(photos: list[bytes], size: tuple[int, int], threads: int, min_s: float) -> float:
    """Images/s decoding and resizing with ``threads`` threads (the pipeline's decode pool)."""
    done = 0
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        while time.perf_counter() - start < min_s:
            list(pool.map(lambda data: decode_image(data, size, 10**9), photos))
            done += len(photos)
    return done / (time.perf_counter() - start)


def inference_rate(classifier: Classifier, batch_size: int, min_s: float) -> float:
    """Images/s of the compiled model at one batch size."""
    w, h = classifier.input_size
    batch = list(np.random.default_rng(0).integers(0, 255, (batch_size, h, w, 3), dtype=np.uint8))
    classifier.predict(batch)
    done = 0
    start = time.perf_counter()
    while time.perf_counter() - start < min_s:
        classifier.predict(batch)
        done += batch_size
    return done / (time.perf_counter() - start)


async def fetch_rate(urls: list[str], concurrency: int) -> dict[str, float]:
    """Images/s downloading with one session and bounded concurrency, and client CPU ms per image."""
    proc = psutil.Process(os.getpid())
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(url: str) -> int:
            async with sem, session.get(url) as resp:
                return len(await resp.read())

        cpu0, start = proc.cpu_times(), time.perf_counter()
        sizes = await asyncio.gather(*(one(u) for u in urls))
        elapsed, cpu1 = time.perf_counter() - start, proc.cpu_times()
    cpu_s = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {
        "images_per_s": len(urls) / elapsed,
        "cpu_ms_per_image": 1000 * cpu_s / len(urls),
        "mean_bytes": float(np.mean(sizes)),
    }
