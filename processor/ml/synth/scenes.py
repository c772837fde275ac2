"""Generated listing photos: cars from several positions, some stamped with dealer banners.

Used to train the shipped model, by the demo's image server and by the tests. Drawing
is deliberately varied (colours, geometry, backgrounds, banner styles, JPEG quality)
so the model learns banners and positions rather than one template. Backgrounds are
crops of real photographs when any are available: those shipped inside installed
packages, plus any folders given (``--backgrounds``), e.g. your own banner-free photos.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import io
import multiprocessing
import os
import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from . import banners
from .cars import DRAWERS, INDOOR, POSITIONS, colour

__all__ = ["OTHER", "POSITIONS", "SIZES", "Sample", "render", "render_sample", "samples", "to_jpeg", "write_dataset"]

OTHER = "other"  # a photograph with no car drawn on it
SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 960), (480, 360), (1024, 683))
PHOTO_SHARE = 0.55  # share of car images drawn over a real photograph, when photographs are available
OTHER_SHARE = 0.3  # share of images that are a bare photograph or texture
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MAX_PHOTO_SIDE = 1600  # large wallpapers are scaled down once when loaded
# Photographs never used for training: the held-out "real photo" evaluation set is cut from them.
HELD_OUT_PHOTOS = ("china.jpg", "flower.jpg", "grace_hopper.jpg", "coffee.png", "chelsea.png")
# Graphics rather than photographs: not backgrounds of "no banner" images.
NOT_PHOTOS = ("logo.png", "color.png")


@dataclass(frozen=True, slots=True)
class Sample:
    """One generated photo and its labels."""

    image: Image.Image
    position: str
    banner: bool


@functools.cache
def installed_photos(exclude: tuple[str, ...] = HELD_OUT_PHOTOS) -> tuple[Path, ...]:
    """Real photographs shipped inside installed packages (scikit-image, scikit-learn, matplotlib)."""
    found: list[Path] = []
    for package, folder in (
        ("skimage", "data"),
        ("sklearn", "datasets/images"),
        ("matplotlib", "mpl-data/sample_data"),
    ):
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations))) / folder
        found += [
            p
            for p in sorted(root.glob("*"))
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stat().st_size > 20_000 and p.name not in NOT_PHOTOS
        ]
    return _usable(p for p in found if p.name not in exclude)


def photos_in(folders: Sequence[Path], exclude: tuple[str, ...] = HELD_OUT_PHOTOS) -> tuple[Path, ...]:
    """Every usable image under ``folders`` (recursively), e.g. unpacked wallpaper packages."""
    found = (p for folder in folders for p in sorted(Path(folder).rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES)
    return _usable(p for p in found if p.name not in exclude and "screenshot" not in p.name)


def _usable(paths: Iterator[Path]) -> tuple[Path, ...]:
    usable = []
    for path in paths:
        with contextlib.suppress(OSError, ValueError), Image.open(path) as img:
            if img.mode in ("RGB", "RGBA", "P", "L") and min(img.size) >= 256:
                usable.append(path)
    return tuple(usable)


@functools.cache
def _load_photo(path: Path) -> Image.Image:
    with Image.open(path) as src:
        src.draft("RGB", (MAX_PHOTO_SIDE, MAX_PHOTO_SIDE))
        img = src.convert("RGB")
    img.thumbnail((MAX_PHOTO_SIDE, MAX_PHOTO_SIDE))
    return img


TURNS = (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def photo_crop(rng: random.Random, photos: tuple[Path, ...], size: tuple[int, int], remix: bool = False) -> Image.Image:
    """A random crop of a random photograph, rescaled to ``size``, with colour jitter. ``remix`` (for
    training) also turns the photograph by quarter turns and swaps its colour channels now and then, so
    that few photographs give more distinct banner-free structure (eaves, window rows, horizons in
    every orientation) and colours."""
    photo = _load_photo(rng.choice(photos))
    if remix and rng.random() < 0.3:
        photo = photo.transpose(rng.choice(TURNS))
    if remix and rng.random() < 0.2:
        bands = list(photo.split())
        rng.shuffle(bands)
        photo = Image.merge("RGB", bands)
    w, h = photo.size
    aspect = size[0] / size[1]
    cw = max(16, int(min(w, h * aspect) * rng.uniform(0.3, 1.0)))
    ch = max(16, int(cw / aspect))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.6:  # more distinct backgrounds from few photographs
        crop = ImageEnhance.Color(crop).enhance(rng.uniform(0.3, 1.5))
        crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.7, 1.3))
        crop = ImageEnhance.Contrast(crop).enhance(rng.uniform(0.7, 1.3))
    return crop


def _texture_background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A photo-like background: smooth random blobs, a gradient, soft shapes and grain."""
    w, h = size
    small = Image.new("RGB", (rng.randint(3, 12), rng.randint(3, 9)))
    small.putdata([colour(rng, 20, 235) for _ in range(small.width * small.height)])
    img = small.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 15)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(w * 0.03, w * 0.3)
        draw.ellipse([x - r, y - r * rng.uniform(0.4, 1.5), x + r, y + r], fill=colour(rng, 10, 245))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(2, 12)))
    # Pillow's effect_noise draws from C's rand(), which no seed reaches: the same seed gave other grain
    # in another worker process. Seeded NumPy noise keeps a dataset reproducible.
    noise = np.random.default_rng(rng.getrandbits(64)).normal(128, rng.uniform(8, 30), (h, w))
    grain = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).convert("RGB")
    return Image.blend(img, grain, rng.uniform(0.03, 0.12))


def _scene_background(rng: random.Random, size: tuple[int, int], dark: bool) -> Image.Image:
    """A drawn scene: sky or showroom wall, ground, a few buildings or poles."""
    w, h = size
    top = colour(rng, 10, 90) if dark else colour(rng, 120, 250)
    bottom = colour(rng, 0, 70) if dark else colour(rng, 60, 200)
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.45, 0.7))
    for y in range(h):
        base = top if y < horizon else bottom
        shade = 1.0 - 0.3 * y / h
        draw.line([(0, y), (w, y)], fill=tuple(int(c * shade) for c in base))
    for _ in range(rng.randint(0, 6)):
        x = rng.randint(0, w)
        bw, bh = rng.randint(w // 20, w // 5), rng.randint(h // 10, h // 2)
        draw.rectangle([x, horizon - bh, x + bw, horizon], fill=colour(rng, 40, 200))
    return img


def _finish(rng: random.Random, img: Image.Image, banner: bool) -> Image.Image:
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    if banner:
        banners.stamp(rng, img)
    return img


def render_sample(
    rng: random.Random,
    banner: bool,
    size: tuple[int, int] | None = None,
    photos: tuple[Path, ...] | None = None,
    position: str | None = None,
    other: bool | None = None,
) -> Sample:
    """A labelled photo: a drawn car over a photographic or generated background, or (``other``; by
    default at random when no ``position`` is given) a bare photograph or texture."""
    photos = installed_photos() if photos is None else photos
    size = size or rng.choice(SIZES)
    if other is None:
        other = position is None and rng.random() < OTHER_SHARE
    if other:
        img = (
            photo_crop(rng, photos, size, remix=True)
            if photos and rng.random() < 0.85
            else _texture_background(rng, size)
        )
        return Sample(_finish(rng, img, banner), OTHER, banner)
    position = position or rng.choice(POSITIONS)
    roll = rng.random()
    if photos and roll < PHOTO_SHARE:
        img = photo_crop(rng, photos, size, remix=True)
    elif roll < PHOTO_SHARE + 0.2:
        img = _texture_background(rng, size)
    else:
        img = _scene_background(rng, size, position in INDOOR)
    DRAWERS[position](rng, img, colour(rng))
    return Sample(_finish(rng, img, banner), position, banner)


def render(rng: random.Random, position: str, banner: bool, size: tuple[int, int] | None = None) -> Image.Image:
    """Draw one listing photo of a given position over a drawn scene (fast; no photographs)."""
    size = size or rng.choice(SIZES)
    img = _scene_background(rng, size, dark=position in INDOOR)
    DRAWERS[position](rng, img, colour(rng))
    return _finish(rng, img, banner)


def to_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def samples(
    seed: int,
    count: int,
    banner_share: float = 0.5,
    photos: tuple[Path, ...] | None = None,
    positions: Sequence[str] = (*POSITIONS, OTHER),
) -> Iterator[Sample]:
    """A reproducible stream of labelled photos of ``positions`` (``other``: a bare photo or texture)."""
    rng = random.Random(seed)
    drawn = [p for p in positions if p != OTHER]
    for _ in range(count):
        banner = rng.random() < banner_share
        if OTHER in positions and (not drawn or rng.random() < OTHER_SHARE):
            yield render_sample(rng, banner, photos=photos, other=True)
        else:
            yield render_sample(rng, banner, photos=photos, position=rng.choice(drawn))


CHUNK = 250  # images per worker task; each chunk has its own seed, so output does not depend on the pool


def _write_chunk(
    out: Path,
    first: int,
    count: int,
    seed: int,
    banner_share: float,
    photos: tuple[Path, ...],
    positions: Sequence[str],
) -> list[list[str]]:
    rows = []
    quality = random.Random(seed + 1)
    for i, sample in enumerate(samples(seed, count, banner_share, photos, positions), start=first):
        name = f"images/{i:06d}.jpg"
        (out / name).write_bytes(to_jpeg(sample.image, quality.randint(55, 95)))
        rows.append([name, str(int(sample.banner)), sample.position])
    return rows


def write_dataset(
    out: Path,
    count: int,
    seed: int,
    banner_share: float = 0.5,
    backgrounds: Sequence[Path] = (),
    positions: Sequence[str] = (*POSITIONS, OTHER),
) -> Path:
    """Write JPEGs and a labels.csv (file, banner, position) of ``positions`` using all CPUs; return the
    CSV's path."""
    unknown = set(positions) - {*POSITIONS, OTHER}
    if unknown or not positions:
        raise ValueError(f"positions: choose from {(*POSITIONS, OTHER)}, not {sorted(unknown)}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    photos = installed_photos() + photos_in(backgrounds)
    starts = range(0, count, CHUNK)
    counts = [min(CHUNK, count - s) for s in starts]
    seeds = [seed * 100_003 + s for s in starts]
    workers = max(1, min(len(starts), os.cpu_count() or 1))
    # forkserver, not fork: a fork of a process whose runtime threads run (OpenVINO's, after a model was
    # compiled in it) can crash in the child
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        chunks = pool.map(
            _write_chunk, repeat(out), starts, counts, seeds, repeat(banner_share), repeat(photos), repeat(positions)
        )
        rows = [row for chunk in chunks for row in chunk]
    labels = out / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "banner", "position"])
        writer.writerows(rows)
    return labels


def write_photo_testset(out: Path, count: int, seed: int, photos_from: Sequence[Path] = ()) -> Path:
    """Held-out set in the banner/ and no_banner/ layout: crops of photographs never used for
    training (the held-out installed ones, or those under ``photos_from``), half stamped with
    banner styles the training generator never draws, 480-1024 px wide."""
    photos = (
        photos_in(photos_from, exclude=())
        if photos_from
        else tuple(p for p in installed_photos(exclude=()) if p.name in HELD_OUT_PHOTOS)
    )
    if not photos:
        raise RuntimeError("no held-out photographs found (pip install scikit-image scikit-learn)")
    return _write_photo_set(out, count, seed, photos, banners.stamp_unseen)


def write_calibration_set(out: Path, count: int, seed: int, backgrounds: Sequence[Path] = ()) -> Path:
    """Bare crops of the training photographs (no drawn car), half stamped with the training styles, in
    the banner/ and no_banner/ layout: closer to real listing photos than the generated validation split,
    so a better set to choose the banner threshold on (``processor calibrate``); no held-out photograph
    or unseen style is used."""
    photos = installed_photos() + photos_in(backgrounds)
    if not photos:
        raise RuntimeError("no photographs found (pip install scikit-image, or give --backgrounds)")
    return _write_photo_set(out, count, seed, photos, banners.stamp)


def _write_photo_set(
    out: Path, count: int, seed: int, photos: tuple[Path, ...], stamp: Callable[[random.Random, Image.Image], str]
) -> Path:
    rng = random.Random(seed)
    for folder in ("banner", "no_banner"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        width = rng.randint(480, 1024)
        img = photo_crop(rng, photos, (width, int(width * rng.uniform(0.62, 0.8))))
        name = f"no_banner/{i:05d}.jpg"
        if i % 2 == 0:  # the style goes into the name, for a per-style look at the misses
            name = f"banner/{i:05d}-{stamp(rng, img)}.jpg"
        (out / name).write_bytes(to_jpeg(img, rng.randint(70, 95)))
    return out
