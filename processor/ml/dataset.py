"""Labelled image sets on disk: ``labels.csv`` (file, banner, position) as ``processor synth`` writes,
or folders ``banner/`` and ``no_banner/`` (banner label only), optionally with position sub-folders."""

from __future__ import annotations

import csv
import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from ..decode import decode_image

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
NO_POSITION = ""
MAX_TRAINING_PIXELS = 100_000_000  # local files of our own: a looser cap than the worker's


@dataclass(frozen=True, slots=True)
class Labelled:
    """One labelled image file."""

    path: Path
    banner: int
    position: str  # NO_POSITION when unknown


def read_labels(data: Path) -> list[Labelled]:
    """Labelled files from labels.csv or the banner/no_banner folder layout."""
    csv_path = data / "labels.csv"
    if csv_path.exists():
        with csv_path.open() as fh:
            return [
                Labelled(data / r["file"], int(r["banner"]), r.get("position") or NO_POSITION)
                for r in csv.DictReader(fh)
            ]
    items = []
    for banner, folder in ((1, "banner"), (0, "no_banner")):
        for path in sorted((data / folder).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                position = path.parent.name if path.parent != data / folder else NO_POSITION
                items.append(Labelled(path, banner, position))
    if not items:
        raise FileNotFoundError(f"{data}: no labels.csv and no images under banner/ or no_banner/")
    return items


def load_arrays(items: list[Labelled], size: tuple[int, int]) -> NDArray[np.uint8]:
    """Decode and resize every item, in threads, into one (n, height, width, 3) array."""

    def one(item: Labelled) -> NDArray[np.uint8]:
        return decode_image(item.path.read_bytes(), size, max_pixels=MAX_TRAINING_PIXELS).pixels

    with ThreadPoolExecutor() as pool:
        return np.stack(list(pool.map(one, items)))


def data_hash(items: list[Labelled]) -> str:
    """A fingerprint of a labelled set (names, labels, sizes), recorded in model metadata."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: str(i.path)):
        digest.update(f"{item.path.name}|{item.banner}|{item.position}|{item.path.stat().st_size}\n".encode())
    return "sha256:" + digest.hexdigest()
