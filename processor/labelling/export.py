"""Final labels to training data: ``train/`` and ``holdout/`` folders that ``processor train --data`` reads.

Each folder has ``labels.csv`` (file, banner, position, plus image_id, listing_id, source and
reason) and ``images/``. Whether an image is held out depends only on a hash of its id, so it
stays held out in every later export. ``holdout-random/labels.csv`` lists the held-out images
that were queued at random (not for being uncertain): evaluating on it estimates accuracy
without the bias of uncertainty sampling.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

from ..errors import ProcessorError
from ..settings import Settings
from .images import ImageProxy, image_format

CSV_FIELDS = ("file", "banner", "position", "image_id", "listing_id", "source", "reason", "labellers")
SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}
CONCURRENCY = 8


def held_out(image_id: str, percent: int) -> bool:
    """Whether an image belongs to the hold-out: deterministic, by a hash of its id."""
    bucket = int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big") % 100
    return bucket < percent


def file_stem(image_id: str) -> str:
    """A file name for an untrusted image id: a hash, never the id itself."""
    return hashlib.sha256(image_id.encode()).hexdigest()[:24]


@dataclass
class ExportSummary:
    """What an export wrote."""

    train: int = 0
    holdout: int = 0
    holdout_random: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # image_id -> why


async def final_labels(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await pool.fetch(
        "SELECT image_id, listing_id, url, banner, position, reason, status, (SELECT count(*) FROM label_answers a "
        "WHERE a.image_id = t.image_id AND a.verdict = 'label') AS labellers FROM label_tasks t "
        "WHERE status IN ('final', 'resolved') ORDER BY image_id"
    )
    return rows


async def export(
    pool: asyncpg.Pool,
    settings: Settings,
    out: Path,
    holdout_percent: int,
    progress: Callable[[], object] | None = None,
) -> ExportSummary:
    """Download every finally labelled image and write the folders; return the counts."""
    rows = await final_labels(pool)
    proxy = ImageProxy(settings, cache_items=0, longest_px=1, pool=pool)
    written: dict[str, list[dict[str, str]]] = {"train": [], "holdout": []}
    summary = ExportSummary()
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(row: asyncpg.Record) -> None:
        part = "holdout" if held_out(row["image_id"], holdout_percent) else "train"
        async with semaphore:
            try:
                name = await _download(proxy, settings, row, out / part / "images")
            except ProcessorError as exc:
                summary.failed[row["image_id"]] = f"{exc.kind}: {exc}"
                return
            finally:
                if progress is not None:
                    progress()
        written[part].append(_csv_row(row, f"images/{name}"))

    await proxy.start()
    try:
        await asyncio.gather(*(one(r) for r in rows))
    finally:
        await proxy.close()
    await asyncio.to_thread(_write_csvs, out, written, holdout_percent, summary)
    return summary


async def _download(proxy: ImageProxy, settings: Settings, row: asyncpg.Record, folder: Path) -> str:
    data = await proxy.fetch_original(row["url"])
    kind = await asyncio.to_thread(image_format, data, settings.max_image_pixels)
    name = file_stem(row["image_id"]) + SUFFIX[kind]
    await asyncio.to_thread(_write_file, folder / name, data)
    return name


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: str) -> str:
    """A cell a spreadsheet shows as text: ids come from third parties, and ``=HYPERLINK(...)`` must not run."""
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _csv_row(row: asyncpg.Record, file: str) -> dict[str, str]:
    return {
        "file": file,
        "banner": "1" if row["banner"] else "0",
        "position": row["position"],
        "image_id": spreadsheet_safe(row["image_id"]),
        "listing_id": spreadsheet_safe(row["listing_id"]),
        "source": "consensus" if row["status"] == "final" else "admin",
        "reason": row["reason"],
        "labellers": str(row["labellers"]),
    }


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(sorted(rows, key=lambda r: r["image_id"]))


def _write_csvs(out: Path, written: dict[str, list[dict[str, str]]], percent: int, summary: ExportSummary) -> None:
    for part, rows in written.items():
        _write_csv(out / part / "labels.csv", rows)
    randoms = [{**r, "file": f"../holdout/{r['file']}"} for r in written["holdout"] if r["reason"] == "random"]
    _write_csv(out / "holdout-random" / "labels.csv", randoms)
    summary.train, summary.holdout, summary.holdout_random = (
        len(written["train"]),
        len(written["holdout"]),
        len(randoms),
    )
    manifest = {"holdout_percent": percent, **asdict(summary)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def zip_export(out: Path, target: Path, with_images: bool) -> None:
    """An export folder as one zip (what the admin page offers as a download): every ``labels.csv`` and
    ``manifest.json``, and the images when asked (stored as they are: JPEGs do not compress)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            name = path.relative_to(out)
            image = name.parts[1:2] == ("images",)
            if image and not with_images:
                continue
            archive.write(path, name.as_posix(), compress_type=zipfile.ZIP_STORED if image else None)
