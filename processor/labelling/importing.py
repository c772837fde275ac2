"""Photos into the labelling queue: a folder of images, or a manifest (CSV) of them.

A folder import registers the folder, so the app may read files under it and nowhere else on
disk; an image's id is a hash of its bytes (a photo copied twice is one task) and its listing is
the sub-folder it sits in. A manifest has ``image_id``, ``listing_id`` (or ``car_id``) and either
``url`` (http/https, fetched like any queued image) or ``file`` (relative to ``root``, which is
registered like a folder). An import may ask for one labeller per image and two who must agree
on a share of them, so that a small team covers many photos and still measures its agreement.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"})

MAX_ID_CHARS = 200


class ManifestError(ValueError):
    """A manifest or folder that cannot be imported; the message says which row and why."""


@dataclass(frozen=True, slots=True)
class ImportRow:
    """One image to queue."""

    image_id: str
    listing_id: str
    url: str


@dataclass(frozen=True, slots=True)
class Overlap:
    """How many labellers each imported image needs: ``labellers`` agreeing, ``second_share`` of them two."""

    labellers: int | None = None  # None: the app's K and N
    second_share: float = 0.0


@dataclass(frozen=True, slots=True)
class Imported:
    """What an import did."""

    added: int
    already_queued: int
    double: int  # added images that need two agreeing labellers


def _bucket(image_id: str) -> float:
    return int.from_bytes(hashlib.sha256(image_id.encode()).digest()[:8], "big") / 2**64


def rows_from_folder(folder: Path) -> list[ImportRow]:
    """Every image under ``folder``: id from its bytes, listing from its sub-folder (or the folder's name)."""
    root = folder.resolve()
    rows = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        image_id = hashlib.sha256(path.read_bytes()).hexdigest()[:20]
        listing = path.parent.relative_to(root).as_posix() if path.parent != root else root.name
        rows.append(ImportRow(image_id, listing, path.as_uri()))
    return _unique(rows)


def rows_from_manifest(manifest: Path, root: Path | None) -> list[ImportRow]:
    """The manifest's rows; ``file`` entries resolve under ``root`` and must stay inside it."""
    rows = []
    with manifest.open(newline="") as fh:
        for line, record in enumerate(csv.DictReader(fh), start=2):
            image_id = (record.get("image_id") or "").strip()
            listing_id = (record.get("listing_id") or record.get("car_id") or "").strip()
            if not 0 < len(image_id) <= MAX_ID_CHARS or not 0 < len(listing_id) <= MAX_ID_CHARS:
                raise ManifestError(f"{manifest}:{line}: image_id and listing_id (or car_id) are required")
            rows.append(ImportRow(image_id, listing_id, _source(record, root, f"{manifest}:{line}")))
    return _unique(rows)


def _source(record: dict[str, str], root: Path | None, where: str) -> str:
    url = (record.get("url") or "").strip()
    if url:
        if not url.startswith(("http://", "https://")):
            raise ManifestError(f"{where}: url must be http or https")
        return url
    file = (record.get("file") or "").strip()
    if not file or root is None:
        raise ManifestError(f"{where}: give a url, or a file and --root")
    path = (root / file).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        raise ManifestError(f"{where}: {file} is not a file under {root}")
    return path.as_uri()


def _unique(rows: Iterable[ImportRow]) -> list[ImportRow]:
    seen: dict[str, ImportRow] = {}
    for row in rows:
        seen.setdefault(row.image_id, row)
    return list(seen.values())


async def register_dir(pool: asyncpg.Pool, folder: Path) -> None:
    """Let the app read image files under ``folder`` (absolute and resolved: the app compares resolved paths)."""
    await pool.execute("INSERT INTO label_image_dirs (path) VALUES ($1) ON CONFLICT DO NOTHING", str(folder))


async def image_dirs(pool: asyncpg.Pool) -> list[Path]:
    return [Path(r["path"]) for r in await pool.fetch("SELECT path FROM label_image_dirs")]


async def import_rows(pool: asyncpg.Pool, rows: list[ImportRow], overlap: Overlap) -> Imported:
    """Queue the rows not queued yet (reason ``import``); an image already queued keeps its state."""
    added = double = 0
    async with pool.acquire() as conn, conn.transaction():
        for row in rows:
            agree = most = overlap.labellers
            if overlap.labellers is not None and _bucket(row.image_id) < overlap.second_share:
                agree = most = max(2, overlap.labellers)
            done = await conn.execute(
                "INSERT INTO label_tasks (image_id, listing_id, url, reason, uncertainty, model_version, "
                "agree, max_labellers) VALUES ($1, $2, $3, 'import', 0, '', $4, $5) ON CONFLICT DO NOTHING",
                row.image_id,
                row.listing_id,
                row.url,
                agree,
                most,
            )
            if done.endswith(" 1"):
                added += 1
                double += agree is not None and agree >= 2
    return Imported(added, len(rows) - added, double)
