"""The real-photo corpus: a manifest with provenance and labels, the photos fetched from their sources,
splits by car, and the train / calibration / test folders that ``processor train`` reads.

The manifest (``data/real-photos/manifest.csv``) has one row per photo: where it comes from
(repository, commit, path, the licence the repository states, SHA-256 of the original bytes), the
car it shows (``car_id``), its labels as the labelling app's consensus decided them, and its split.
Photo bytes are not in the project: ``fetch`` downloads each photo from its repository at its
commit, checks the SHA-256, and stores a copy of at most ``STORE_PX`` on its longest side.
Splits are by car (a hash of ``car_id``), never by photo, so no car is in two splits.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import random
import re
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from urllib.parse import quote

import aiohttp
import numpy as np
from PIL import Image, ImageOps
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

MANIFEST = Path(__file__).resolve().parents[2] / "data" / "real-photos" / "manifest.csv"
PHOTOS_DIR = MANIFEST.parent / "photos"  # where fetch puts them by default (ignored by git)
RAW_GITHUB = "https://raw.githubusercontent.com"
STORE_PX = 1024
STORE_QUALITY = 90
SPLITS = (("train", 0.70), ("calibration", 0.80), ("test", 1.0))  # cumulative shares of cars


@dataclass(frozen=True, slots=True)
class Photo:
    """One manifest row."""

    image_id: str
    car_id: str
    split: str
    position: str  # empty until labelled
    banner: str  # "1", "0", or empty until labelled
    labellers: str  # labellers who answered with a label, and who decided: "2 consensus", "1 admin"
    repo: str
    commit: str
    path: str
    licence: str
    sha256: str
    width: int
    height: int

    @property
    def labelled(self) -> bool:
        return bool(self.position) and self.banner in ("0", "1")


FIELDS = tuple(f.name for f in fields(Photo))


def read_manifest(path: Path = MANIFEST) -> list[Photo]:
    with path.open(newline="") as fh:
        return [
            Photo(**{**row, "width": int(row["width"]), "height": int(row["height"])})  # type: ignore[arg-type]
            for row in csv.DictReader(fh)
        ]


def write_manifest(photos: Iterable[Photo], path: Path = MANIFEST) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(asdict(p) for p in sorted(photos, key=lambda p: (p.car_id, p.image_id)))


MIXED = "mixed:"  # a car_id prefix: a source folder of many cars that cannot be told apart


def split_of(car_id: str) -> str:
    """The split a car belongs to: fixed by a hash of its id, whatever else is in the corpus.

    A ``mixed:`` group (one folder of many cars) goes to train: calibration and test photos must each
    belong to one known car, so that no car is in two splits and a test listing is one car.
    """
    if car_id.startswith(MIXED):
        return "train"
    bucket = int.from_bytes(hashlib.sha256(car_id.encode()).digest()[:8], "big") / 2**64
    return next(name for name, upper in SPLITS if bucket < upper)


def store_photo(data: bytes, out: Path) -> tuple[int, int]:
    """Write ``data`` as a JPEG of at most STORE_PX (EXIF orientation applied); return the original size."""
    with Image.open(io.BytesIO(data)) as img:
        size = img.size
        rgb = ImageOps.exif_transpose(img).convert("RGB")
    rgb.thumbnail((STORE_PX, STORE_PX))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    rgb.save(tmp, "JPEG", quality=STORE_QUALITY)
    tmp.replace(out)
    return size


def photo_file(photos_dir: Path, photo: Photo) -> Path:
    return photos_dir / f"{photo.image_id}.jpg"


ARCHIVE_SEPARATOR = "!/"  # "data/set.zip!/img/1.jpg": a member of a zip file the repository holds


def source_url(photo: Photo, base_url: str = RAW_GITHUB) -> str:
    """Where the original bytes are: the repository's file (or the zip file holding it) at the recorded commit."""
    path = photo.path.split(ARCHIVE_SEPARATOR, 1)[0]
    return f"{base_url.rstrip('/')}/{photo.repo}/{photo.commit}/{quote(path)}"


def zip_member(archive: bytes, member: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        return zf.read(member)


class SourceChanged(ValueError):
    """The bytes at the source are not the ones the manifest recorded (SHA-256 differs)."""


@dataclass
class FetchReport:
    """What ``fetch`` did."""

    fetched: int = 0
    present: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # image_id -> why


async def fetch(
    photos: list[Photo],
    out: Path,
    base_url: str = RAW_GITHUB,
    concurrency: int = 16,
    progress: Callable[[], object] | None = None,
) -> FetchReport:
    """Download every photo not in ``out`` yet, check its SHA-256, and store it; failures are reported."""
    report = FetchReport()
    semaphore = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=60, sock_connect=10)

    archives: dict[str, asyncio.Task[bytes]] = {}  # one download per zip file, shared by its members

    async def original(session: aiohttp.ClientSession, photo: Photo) -> bytes:
        url = source_url(photo, base_url)
        if ARCHIVE_SEPARATOR not in photo.path:
            return await _download(session, url)
        if url not in archives:
            archives[url] = asyncio.ensure_future(_download(session, url))
        member = photo.path.split(ARCHIVE_SEPARATOR, 1)[1]
        try:
            return await asyncio.to_thread(zip_member, await asyncio.shield(archives[url]), member)
        except (zipfile.BadZipFile, KeyError) as exc:
            raise SourceChanged(f"{photo.repo}:{photo.path}: {exc}") from None

    async def one(session: aiohttp.ClientSession, photo: Photo) -> None:
        target = photo_file(out, photo)
        if await asyncio.to_thread(target.exists):
            report.present += 1
            return
        async with semaphore:
            try:
                data = await original(session, photo)
                if hashlib.sha256(data).hexdigest() != photo.sha256:
                    raise SourceChanged(f"SHA-256 of {photo.repo}:{photo.path} differs from the manifest")
                await asyncio.to_thread(store_photo, data, target)
                report.fetched += 1
            except (aiohttp.ClientError, TimeoutError, SourceChanged, OSError) as exc:
                report.failed[photo.image_id] = f"{type(exc).__name__}: {exc}"
            finally:
                if progress is not None:
                    progress()

    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(one(session, p) for p in photos))
    return report


async def _download(session: aiohttp.ClientSession, url: str) -> bytes:
    retrying = AsyncRetrying(
        stop=stop_after_attempt(4),
        wait=wait_exponential(multiplier=0.5, max=8),
        retry=retry_if_exception_type((aiohttp.ClientConnectionError, aiohttp.ServerTimeoutError, TimeoutError)),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            async with session.get(url) as resp:
                resp.raise_for_status()
                return await resp.read()
    raise AssertionError("unreachable")


def apply_labels(
    photos: list[Photo], labels: dict[str, tuple[str, str, str]], keep_unlisted: bool = False
) -> list[Photo]:
    """Photos with their labels from an export (image_id -> banner, position, labellers) and their split.

    Photos the export does not list get an empty label (the admin discarded them, or they are not labelled
    yet), or keep theirs with ``keep_unlisted`` (the export of a later batch).
    """
    return [
        replace(p, banner=labels[p.image_id][0], position=labels[p.image_id][1], labellers=labels[p.image_id][2])
        if p.image_id in labels
        else p
        if keep_unlisted
        else replace(p, banner="", position="", labellers="")
        for p in (replace(q, split=split_of(q.car_id)) for q in photos)
    ]


def read_export(export_dir: Path) -> dict[str, tuple[str, str, str]]:
    """image_id -> (banner, position, decided by) from ``processor label export`` folders."""
    labels: dict[str, tuple[str, str, str]] = {}
    for part in ("train", "holdout"):
        path = export_dir / part / "labels.csv"
        if path.exists():
            with path.open(newline="") as fh:
                for row in csv.DictReader(fh):
                    decided = f"{row.get('labellers', '?')} {row['source']}"
                    labels[row["image_id"]] = (row["banner"], row["position"], decided)
    return labels


OTHER_SOURCES = "other-sources"  # the split folder of held-out repositories' photos


def write_split_folders(
    photos: list[Photo], photos_dir: Path, out: Path, held_out: frozenset[str] = frozenset()
) -> dict[str, Counter[str]]:
    """``out/<split>/labels.csv`` (absolute file paths) for every labelled photo that is on disk; the photos
    of the ``held_out`` repositories leave every split for ``out/other-sources``: a test of sources never seen."""
    counts: dict[str, Counter[str]] = {}
    ready = [p for p in photos if p.labelled and photo_file(photos_dir, p).exists()]
    by_split = {split: [p for p in ready if p.split == split and p.repo not in held_out] for split, _ in SPLITS}
    if held_out:
        by_split[OTHER_SOURCES] = [p for p in ready if p.repo in held_out]
    for split, rows in by_split.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / "labels.csv").open("w", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(("file", "banner", "position", "image_id", "car_id"))
            for p in rows:
                writer.writerow((str(photo_file(photos_dir, p).resolve()), p.banner, p.position, p.image_id, p.car_id))
        counts[split] = Counter(p.position for p in rows)
    return counts


def read_sources(path: Path) -> list[str]:
    """Repository names (owner/name), one a line; blank lines and ``#`` comments are skipped."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def check_splits(photos: list[Photo]) -> list[str]:
    """Cars found in more than one split (empty when the corpus is sound)."""
    seen: dict[str, set[str]] = {}
    for p in photos:
        seen.setdefault(p.car_id, set()).add(p.split)
    return sorted(car for car, splits in seen.items() if len(splits) > 1)


def dhash(path: Path) -> int:
    """A 64-bit difference hash: near-identical photos (re-encoded, resized) differ in a few bits."""
    with Image.open(path) as img:
        small = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = 0
    for brighter in (small[:, :-1] > small[:, 1:]).reshape(-1):
        bits = (bits << 1) | int(brighter)
    return bits


@dataclass(frozen=True, slots=True)
class Candidate:
    """A photo extracted from a source repository, before it joins the manifest."""

    repo: str
    commit: str
    path: str
    licence: str
    file: Path


def car_of(path: str, car_per: str, pattern: str | None = None) -> str:
    """The car a source's file shows: the first group of ``pattern`` that matched the path, else its folder
    (``car_per`` folder: dealer sites keep one gallery per car) or the file (``photo``: one photo per car)."""
    found = re.search(pattern, path) if pattern else None
    if found and any(found.groups()):
        return next(g for g in found.groups() if g)
    return path if car_per == "photo" else str(Path(path).parent)


def add_photos(
    photos: list[Photo],
    candidates: list[Candidate],
    photos_dir: Path,
    car_per: str,
    pattern: str | None = None,
    near_bits: int = 4,
    mixed: bool = False,
) -> tuple[list[Photo], Counter[str]]:
    """The manifest with the new candidates stored in ``photos_dir``; duplicates (exact or near) are dropped."""
    hashes = [dhash(photo_file(photos_dir, p)) for p in photos if photo_file(photos_dir, p).exists()]
    known = {p.sha256 for p in photos}
    outcome: Counter[str] = Counter()
    added = list(photos)
    for c in candidates:
        data = c.file.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if sha in known:
            outcome["duplicate"] += 1
            continue
        image_id = sha[:16]
        target = photos_dir / f"{image_id}.jpg"
        try:
            width, height = store_photo(data, target)
        except (OSError, ValueError, Image.DecompressionBombError):
            outcome["unreadable"] += 1
            continue
        h = dhash(target)
        if any((h ^ other).bit_count() <= near_bits for other in hashes):
            target.unlink()
            outcome["near_duplicate"] += 1
            continue
        car_id = f"{MIXED if mixed else ''}{c.repo}:{car_of(c.path, car_per, pattern)}"
        known.add(sha)
        hashes.append(h)
        added.append(
            Photo(
                image_id, car_id, split_of(car_id), "", "", "", c.repo, c.commit, c.path, c.licence, sha, width, height
            )
        )
        outcome["added"] += 1
    return added, outcome


def demo_selection(photos: list[Photo], images: int, min_photos: int = 4) -> dict[str, list[Photo]]:
    """Whole listings (cars with ``min_photos``+ labelled photos) of about ``images`` photos: test split first."""
    by_car: dict[str, list[Photo]] = {}
    for p in photos:
        if p.labelled:
            by_car.setdefault(p.car_id, []).append(p)
    order = {"test": 0, "calibration": 1, "train": 2}
    chosen: dict[str, list[Photo]] = {}
    total = 0
    for car, rows in sorted(by_car.items(), key=lambda kv: (order.get(kv[1][0].split, 3), kv[0])):
        if len(rows) >= min_photos and total < images:
            chosen[car] = sorted(rows, key=lambda p: p.path)[: max(min_photos, images - total)]
            total += len(chosen[car])
    return chosen


def spread(candidates: list[Candidate], most: int, car: Callable[[Candidate], str]) -> list[Candidate]:
    """At most ``most`` candidates, taken in turn from each car (many cars rather than a few whole ones), each
    car's in a fixed shuffled order (galleries put the exteriors first)."""
    by_car: dict[str, list[Candidate]] = {}
    for c in sorted(candidates, key=lambda c: c.path):
        by_car.setdefault(car(c), []).append(c)
    queues = list(by_car.values())
    for queue in queues:
        random.Random(0).shuffle(queue)
    chosen: list[Candidate] = []
    while len(chosen) < most and any(queues):
        for queue in queues:
            if queue and len(chosen) < most:
                chosen.append(queue.pop(0))
    return chosen


def write_stamped(split_dir: Path, out: Path, unseen: bool, seed: int = 1, subtle_share: float = 0.0) -> int:
    """Copies of a split's banner-free photos with a drawn banner (labels.csv; position kept, banner 1).

    Training takes the generator's styles (``stamp``); a test set takes styles it never draws
    (``stamp_unseen``), so "stamped banners found" measures more than memory of the styles. A
    ``subtle_share`` of the copies gets a site's small or faint overlay instead (``stamp_subtle``).
    """
    from .synth import banners

    rng = random.Random(seed)
    with (split_dir / "labels.csv").open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["banner"] == "0"]
    (out / "images").mkdir(parents=True, exist_ok=True)
    with (out / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(("file", "banner", "position", "image_id", "car_id"))
        for r in rows:
            with Image.open(r["file"]) as src:
                img = src.convert("RGB")
            if rng.random() < subtle_share:
                banners.stamp_subtle(rng, img)
            else:
                (banners.stamp_unseen if unseen else banners.stamp)(rng, img)
            name = f"images/{r['image_id']}.jpg"
            img.save(out / name, "JPEG", quality=rng.randint(75, 92))
            writer.writerow((name, "1", r["position"], r["image_id"], r["car_id"]))
    return len(rows)
