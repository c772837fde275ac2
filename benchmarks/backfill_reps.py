"""The idle-worker backfill phase of ``python -m benchmarks`` alone, repeated, one-thread settings alternated.

``python -m benchmarks.backfill_reps --max-rate 250 --reps 6 --daily-s 20 --one-thread-upto 4,0 --json PATH``:
daily events at a quarter of ``--max-rate`` (one worker's images/s, from a quick run) beside a backlog, in a
daily worker and an idle-priority backfill worker (docs/operations/backfill.md); one line per run with the
backfill's share of the spare and the daily p95 with / without the backlog. One run is 10-20 s of traffic on a
shared host: read the spread of several.
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

from . import features
from .cdn import make_photos
from .e2e import RunConfig


async def _runs(urls: StackUrls, photos: dict[str, bytes], workdir: Path, opts: dict[str, Any]) -> list[dict[str, Any]]:
    names, max_rate, daily_s = sorted(photos), opts["max_rate"], opts["daily_s"]
    rows = []
    async with ImageServer(images=photos, latency_s=0.02, jitter_s=0.01) as server:
        for rep in range(opts["reps"]):
            upto = opts["upto"][rep % len(opts["upto"])]
            shape = tuple(w | {"inference_one_thread_upto": upto} for w in features.BACKFILL_SHAPES["idle_worker"])
            run = await features.backfill(
                urls,
                server,
                names,
                RunConfig(1000, per_worker=shape),
                workdir,  # each run has topics, group and table of its own (isolated_settings)
                (max_rate / 4, max_rate),
                daily_s,
                int(2 * max_rate * daily_s),  # the whole machine could not drain it in the window
            )
            row = {
                "one_thread_upto": upto,
                "share": run["backfill_share_of_spare"],
                "p95_ratio": run["p95_ratio_with_without"],
                "daily_p95_ms_without_with": [
                    run["without_backlog"]["daily_latency_ms"]["p95"],
                    run["with_backlog"]["daily_latency_ms"]["p95"],
                ],
                "cores_daily_backfill": run["with_backlog"]["cpu_cores_by_worker"],
                "backfill_images_per_s": run["with_backlog"]["backfill_images_per_s"],
            }
            click.echo(json.dumps(row))
            rows.append(row)
    return rows


@click.command()
@click.option("--max-rate", type=float, required=True, help="One worker's images/s (a quick run's end to end).")
@click.option("--reps", default=6, show_default=True)
@click.option("--daily-s", default=20.0, show_default=True, help="Seconds of daily traffic per phase.")
@click.option("--one-thread-upto", "upto", default="0", show_default=True, help="Values to alternate, e.g. 4,0.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
def main(max_rate: float, reps: int, daily_s: float, upto: str, json_out: Path | None) -> None:
    opts = {"max_rate": max_rate, "reps": reps, "daily_s": daily_s, "upto": [int(v) for v in upto.split(",")]}
    photos = make_photos(60, 0.35)
    with EmbeddedStack() as stack, tempfile.TemporaryDirectory(prefix="bench-") as workdir:
        assert stack.urls is not None
        rows = asyncio.run(_runs(stack.urls, photos, Path(workdir), opts))
    if json_out is not None:
        json_out.write_text(json.dumps(opts | {"runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
