"""A long paced run against a slow CDN, watching worker memory: ``python -m benchmarks.soak --minutes 10``.

Memory must stay flat: everything that can grow is capped (in-flight events, connections, bytes,
batches), so after warm-up the worker's RSS should not trend upwards.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import click

from processor.dev.imageserver import ImageServer
from processor.dev.stack import EmbeddedStack, StackUrls

from .cdn import event_urls, make_photos
from .e2e import RunConfig, run_pipeline


@click.command()
@click.option("--minutes", default=5.0, show_default=True, help="How long to stream.")
@click.option("--rate", default=150.0, show_default=True, help="Events per second.")
@click.option("--latency-ms", default=200.0, show_default=True, help="Slow CDN: latency per image.")
@click.option("--jitter-ms", default=150.0, show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the figures here.")
def main(minutes: float, rate: float, latency_ms: float, jitter_ms: float, json_path: Path | None) -> None:
    """Stream at a steady rate for a long time and report the workers' memory trend."""
    photos = make_photos(60, 0.35)
    with EmbeddedStack() as stack, tempfile.TemporaryDirectory(prefix="soak-") as workdir:
        assert stack.urls is not None
        report = asyncio.run(
            _soak(stack.urls, photos, minutes, rate, latency_ms / 1000, jitter_ms / 1000, Path(workdir))
        )
    print(json.dumps(report, indent=2))
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(report, indent=2) + "\n")


async def _soak(
    urls: StackUrls,
    photos: dict[str, bytes],
    minutes: float,
    rate: float,
    latency_s: float,
    jitter_s: float,
    workdir: Path,
) -> dict[str, Any]:
    events = int(rate * minutes * 60)
    async with ImageServer(images=photos, latency_s=latency_s, jitter_s=jitter_s) as server:
        run = await run_pipeline(
            urls, event_urls(server, sorted(photos), events, 0.0, seed=21), RunConfig(events, rate_per_s=rate), workdir
        )
    keys = ("events", "classified", "images_per_s", "latency_ms", "worker_rss_mb", "cpu_cores_used_by_workers")
    return {"minutes": minutes, "rate_per_s": rate, "cdn_latency_ms": latency_s * 1000, **{k: run[k] for k in keys}}


if __name__ == "__main__":
    main()
