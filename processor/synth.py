"""Generated listing photos: cars from several positions, some stamped with dealer banners.

Used to train the shipped model, by the demo's image server and by the tests. Drawing
is deliberately varied (colours, geometry, backgrounds, banner styles, JPEG quality)
so the model learns banners and positions rather than one template.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import importlib.util
import io
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

POSITIONS = ("front", "side", "rear", "interior", "engine")
PHOTO_SHARE = 0.5  # share of images drawn over a real photograph, when photographs are installed
OTHER = "other"  # a photograph with no car drawn on it
SIZES = ((640, 480), (800, 600), (1024, 768), (1280, 960))
DEALERS = ("AutoHaus Nord", "Best Cars", "Premium Motors", "Garage Dupont", "Autos García", "CarPoint")
OFFERS = (
    "€ {p},-",
    "{p} €",
    "ab {r} €/Monat",
    "0,9% Finanzierung",
    "{r}€ / mes",
    "Tel. 0{t}",
    "$ {p}",
    "Garantie 24 Monate",
    "TOP ANGEBOT",
    "Leasing {r} €",
)

Rgb = tuple[int, int, int]
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


def _colour(rng: random.Random, lo: int = 0, hi: int = 255) -> Rgb:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansMono.ttf", "DejaVuSerif-Bold.ttf")


@functools.cache
def _font_paths() -> tuple[str, ...]:
    roots = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu")]
    spec = importlib.util.find_spec("matplotlib")  # matplotlib ships DejaVu fonts too
    if spec and spec.submodule_search_locations:
        roots.append(Path(next(iter(spec.submodule_search_locations))) / "mpl-data/fonts/ttf")
    return tuple(str(r / f) for r in roots for f in FONT_FILES if (r / f).exists())


def _font(size: int, rng: random.Random | None = None) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    paths = _font_paths()
    if rng is not None and paths and rng.random() < 0.6:
        return ImageFont.truetype(rng.choice(paths), max(8, size))
    return ImageFont.load_default(size=max(8, size))


def _texture_background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A photo-like background: smooth random blobs, a gradient, soft shapes and grain."""
    w, h = size
    small = Image.new("RGB", (rng.randint(3, 12), rng.randint(3, 9)))
    small.putdata([_colour(rng, 20, 235) for _ in range(small.width * small.height)])
    img = small.resize(size, Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 15)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(w * 0.03, w * 0.3)
        draw.ellipse([x - r, y - r * rng.uniform(0.4, 1.5), x + r, y + r], fill=_colour(rng, 10, 245))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(2, 12)))
    grain = Image.effect_noise(size, rng.uniform(8, 30)).convert("RGB")
    return Image.blend(img, grain, rng.uniform(0.03, 0.12))


def _background(rng: random.Random, size: tuple[int, int], dark: bool) -> Image.Image:
    w, h = size
    top = _colour(rng, 10, 90) if dark else _colour(rng, 120, 250)
    bottom = _colour(rng, 0, 70) if dark else _colour(rng, 60, 200)
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.45, 0.7))
    for y in range(h):
        t = y / h
        base = top if y < horizon else bottom
        shade = 1.0 - 0.3 * t
        draw.line([(0, y), (w, y)], fill=tuple(int(c * shade) for c in base))
    for _ in range(rng.randint(0, 6)):  # buildings, poles, showroom clutter
        x = rng.randint(0, w)
        bw, bh = rng.randint(w // 20, w // 5), rng.randint(h // 10, h // 2)
        draw.rectangle([x, horizon - bh, x + bw, horizon], fill=_colour(rng, 40, 200))
    return img


def _wheel(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rim: Rgb) -> None:
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(20, 20, 20))
    draw.ellipse([cx - r * 0.6, cy - r * 0.6, cx + r * 0.6, cy + r * 0.6], fill=rim)
    for k in range(5):
        a = k * 2 * math.pi / 5
        draw.line([(cx, cy), (cx + r * 0.6 * math.cos(a), cy + r * 0.6 * math.sin(a))], fill=(60, 60, 60), width=3)


def _draw_side(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    x0, x1 = w * rng.uniform(0.05, 0.15), w * rng.uniform(0.85, 0.95)
    base = h * rng.uniform(0.62, 0.75)
    top = base - h * rng.uniform(0.18, 0.25)
    draw.rounded_rectangle([x0, top, x1, base], radius=int(h * 0.05), fill=body)
    cab0, cab1 = x0 + (x1 - x0) * rng.uniform(0.2, 0.3), x0 + (x1 - x0) * rng.uniform(0.65, 0.8)
    roof = top - h * rng.uniform(0.12, 0.18)
    draw.polygon([(cab0 - w * 0.05, top), (cab0, roof), (cab1, roof), (cab1 + w * 0.06, top)], fill=body)
    glass = _colour(rng, 30, 110)
    window = [(cab0 - w * 0.03, top - 4), (cab0 + 6, roof + 8), (cab1 - 6, roof + 8), (cab1 + w * 0.04, top - 4)]
    draw.polygon(window, fill=glass)
    draw.line([((cab0 + cab1) / 2, roof + 8), ((cab0 + cab1) / 2, top - 4)], fill=body, width=6)
    r = h * rng.uniform(0.07, 0.1)
    rim = _colour(rng, 140, 230)
    _wheel(draw, x0 + (x1 - x0) * 0.2, base, r, rim)
    _wheel(draw, x0 + (x1 - x0) * 0.8, base, r, rim)


def _draw_front_or_rear(rng: random.Random, img: Image.Image, body: Rgb, rear: bool) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    cx = w * rng.uniform(0.4, 0.6)
    half = w * rng.uniform(0.25, 0.35)
    base = h * rng.uniform(0.7, 0.8)
    top = base - h * rng.uniform(0.22, 0.3)
    roof = top - h * rng.uniform(0.15, 0.2)
    r = h * 0.06
    _wheel(draw, cx - half * 0.8, base, r, (40, 40, 40))
    _wheel(draw, cx + half * 0.8, base, r, (40, 40, 40))
    draw.rounded_rectangle([cx - half, top, cx + half, base], radius=int(h * 0.04), fill=body)
    cabin = [(cx - half * 0.85, top), (cx - half * 0.6, roof), (cx + half * 0.6, roof), (cx + half * 0.85, top)]
    draw.polygon(cabin, fill=body)
    glass = [
        (cx - half * 0.75, top - 3),
        (cx - half * 0.55, roof + 8),
        (cx + half * 0.55, roof + 8),
        (cx + half * 0.75, top - 3),
    ]
    draw.polygon(glass, fill=_colour(rng, 30, 110))
    ly = top + (base - top) * 0.3
    lamp = (200, 20, 20) if rear else (240, 240, 210)
    lw = half * rng.uniform(0.2, 0.3)
    for side in (-1, 1):
        lx = cx + side * half * 0.7
        if rear:
            draw.rectangle([lx - lw / 2, ly - h * 0.02, lx + lw / 2, ly + h * 0.03], fill=lamp)
        else:
            draw.ellipse([lx - lw / 2, ly - h * 0.03, lx + lw / 2, ly + h * 0.03], fill=lamp)
    if rear:
        draw.rectangle([cx - half * 0.25, base - h * 0.1, cx + half * 0.25, base - h * 0.05], fill=(235, 235, 235))
    else:
        gy = top + (base - top) * 0.55
        draw.rectangle([cx - half * 0.35, gy, cx + half * 0.35, gy + h * 0.07], fill=(25, 25, 25))
        for k in range(6):
            x = cx - half * 0.35 + k * half * 0.14
            draw.line([(x, gy), (x, gy + h * 0.07)], fill=(90, 90, 90), width=2)


def _draw_interior(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    trim = _colour(rng, 10, 80)
    draw.rectangle([0, h * rng.uniform(0.35, 0.5), w, h], fill=trim)
    draw.chord([-w * 0.1, h * 0.2, w * 1.1, h * 0.8], 180, 360, fill=_colour(rng, 20, 90))
    cx, cy, r = w * rng.uniform(0.3, 0.45), h * rng.uniform(0.55, 0.7), h * rng.uniform(0.2, 0.28)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(15, 15, 15), width=int(r * 0.18))
    for a in (math.pi / 2, math.pi * 7 / 6, -math.pi / 6):
        draw.line([(cx, cy), (cx + r * math.cos(a), cy + r * math.sin(a))], fill=(15, 15, 15), width=int(r * 0.15))
    sx = w * rng.uniform(0.6, 0.7)
    draw.rectangle([sx, h * 0.35, sx + w * 0.15, h * 0.5], fill=(10, 30, 60))  # screen
    for k in range(rng.randint(2, 5)):
        draw.ellipse([sx + k * 25, h * 0.55, sx + k * 25 + 15, h * 0.55 + 15], fill=body)


def _draw_engine(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, h * 0.1, w, h], fill=_colour(rng, 20, 60))
    for _ in range(rng.randint(25, 60)):
        grey = rng.randint(60, 200)
        x, y = rng.uniform(0, w), rng.uniform(h * 0.15, h)
        bw, bh = rng.uniform(w * 0.03, w * 0.2), rng.uniform(h * 0.03, h * 0.2)
        shape = rng.random()
        fill = (grey, grey, grey + rng.randint(-20, 20)) if shape < 0.8 else _colour(rng)
        if shape < 0.5:
            draw.rectangle([x, y, x + bw, y + bh], fill=fill)
        elif shape < 0.8:
            draw.ellipse([x, y, x + bw, y + bw], fill=fill, outline=(20, 20, 20))
        else:
            draw.line([(x, y), (x + bw * 3, y + bh)], fill=fill, width=rng.randint(4, 12))
    draw.rectangle([0, 0, w, h * 0.12], fill=body)  # the raised bonnet


DRAWERS: dict[str, Callable[[random.Random, Image.Image, Rgb], None]] = {
    "front": lambda rng, img, body: _draw_front_or_rear(rng, img, body, rear=False),
    "rear": lambda rng, img, body: _draw_front_or_rear(rng, img, body, rear=True),
    "side": _draw_side,
    "interior": _draw_interior,
    "engine": _draw_engine,
}


def _offer_text(rng: random.Random) -> str:
    text = rng.choice(OFFERS).format(
        p=f"{rng.randint(5, 89)}.{rng.randint(0, 999):03d}", r=rng.randint(99, 899), t=rng.randint(100000000, 999999999)
    )
    return text if rng.random() < 0.5 else f"{rng.choice(DEALERS)}  {text}"


def _stamp_banner(rng: random.Random, img: Image.Image) -> None:
    """Overlay one or two dealer banners of a random style."""
    w, h = img.size
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(1 if rng.random() < 0.7 else 2):
        style = rng.choice(
            ("strip", "strip", "ribbon", "badge", "frame", "bar", "logo", "text", "vstrip", "box", "sticker")
        )
        colour = (*_colour(rng), 255 if style != "bar" else rng.randint(140, 210))
        ink = (255, 255, 255, 255) if sum(colour[:3]) < 380 else (0, 0, 0, 255)
        text = _offer_text(rng)
        if style in ("strip", "bar"):
            bh = int(h * rng.uniform(0.1, 0.2))
            y = 0 if rng.random() < 0.4 else h - bh
            if style == "bar":
                y = int(h * rng.uniform(0.55, 0.8))
            draw.rectangle([0, y, w, y + bh], fill=colour)
            draw.text((w * rng.uniform(0.02, 0.3), y + bh * 0.2), text, fill=ink, font=_font(int(bh * 0.55)))
        elif style == "ribbon":
            size = int(min(w, h) * rng.uniform(0.35, 0.5))
            corner = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
            cd = ImageDraw.Draw(corner)
            band = size * 0.28
            cd.rectangle([0, size - band / 2, size * 2, size + band / 2], fill=colour)
            cd.text((size * 0.55, size - band * 0.35), text[:14], fill=ink, font=_font(int(band * 0.55)))
            corner = corner.rotate(45 if rng.random() < 0.5 else -45)
            x = -size if rng.random() < 0.5 else w - size
            overlay.alpha_composite(corner, (max(0, x), 0) if x > 0 else (0, 0), (0 if x > 0 else size, size // 2))
        elif style == "badge":
            r = int(min(w, h) * rng.uniform(0.12, 0.2))
            cx, cy = rng.choice((r + 10, w - r - 10)), rng.choice((r + 10, h - r - 10))
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour, outline=ink, width=max(2, r // 12))
            draw.text((cx - r * 0.75, cy - r * 0.25), text[:9], fill=ink, font=_font(int(r * 0.4)))
        elif style == "frame":
            t = int(min(w, h) * rng.uniform(0.04, 0.08))
            draw.rectangle([0, 0, w - 1, h - 1], outline=colour, width=t)
            draw.rectangle([0, h - 3 * t, w, h], fill=colour)
            draw.text((t * 2, h - 2.7 * t), text, fill=ink, font=_font(int(t * 1.5)))
        elif style == "logo":  # logo box with a dealer name
            bw, bh = int(w * rng.uniform(0.25, 0.4)), int(h * rng.uniform(0.1, 0.16))
            x, y = rng.choice((10, w - bw - 10)), rng.choice((10, h - bh - 10))
            draw.rounded_rectangle([x, y, x + bw, y + bh], radius=bh // 4, fill=colour)
            draw.text((x + bh * 0.3, y + bh * 0.2), rng.choice(DEALERS), fill=ink, font=_font(int(bh * 0.5), rng))
        else:
            _stamp_more(rng, img.size, overlay, draw, style, colour, ink, text)
    img.paste(Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB"))


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
            if p.suffix.lower() in (".jpg", ".jpeg", ".png")
            and p.stat().st_size > 20_000
            and p.name not in exclude
            and p.name not in NOT_PHOTOS
        ]
    usable = []
    for path in found:
        with contextlib.suppress(OSError, ValueError), Image.open(path) as img:
            if img.mode in ("RGB", "RGBA", "P") and min(img.size) >= 256:
                usable.append(path)
    return tuple(usable)


@functools.cache
def _load_photo(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def photo_crop(rng: random.Random, photos: tuple[Path, ...], size: tuple[int, int]) -> Image.Image:
    """A random crop of a random photograph, rescaled to ``size``."""
    photo = _load_photo(rng.choice(photos))
    w, h = photo.size
    aspect = size[0] / size[1]
    cw = int(min(w, h * aspect) * rng.uniform(0.45, 1.0))
    ch = int(cw / aspect)
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    crop = photo.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:  # colour and brightness jitter: more distinct backgrounds from few photographs
        r, g, b = crop.split()
        gains = [rng.uniform(0.75, 1.25) for _ in range(3)]
        channels = [c.point(lambda v, k=k: min(255, int(v * k))) for c, k in zip((r, g, b), gains, strict=True)]
        crop = Image.merge("RGB", channels)
    return crop


def render_sample(
    rng: random.Random,
    banner: bool,
    size: tuple[int, int] | None = None,
    photos: tuple[Path, ...] | None = None,
    position: str | None = None,
) -> Sample:
    """A labelled photo: a drawn car over a generated or photographic background, or a bare photograph."""
    photos = installed_photos() if photos is None else photos
    size = size or rng.choice(SIZES)
    if position is None and rng.random() < 0.2:  # no car at all: a photograph or a photo-like texture
        img = photo_crop(rng, photos, size) if photos and rng.random() < 0.7 else _texture_background(rng, size)
        position = OTHER
    else:
        position = position or rng.choice(POSITIONS)
        roll = rng.random()
        if photos and roll < PHOTO_SHARE:
            img = photo_crop(rng, photos, size)
        elif roll < PHOTO_SHARE + 0.2:
            img = _texture_background(rng, size)
        else:
            img = _background(rng, size, position in ("interior", "engine"))
        DRAWERS[position](rng, img, _colour(rng))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    if banner:
        _stamp_banner(rng, img)
    return Sample(img, position, banner)


def _stamp_more(
    rng: random.Random,
    size: tuple[int, int],
    overlay: Image.Image,
    draw: ImageDraw.ImageDraw,
    style: str,
    colour: tuple[int, ...],
    ink: tuple[int, ...],
    text: str,
) -> None:
    """Overlay text, vertical strips, boxes anywhere, and polygon stickers."""
    w, h = size
    if style == "text":  # bare text with an outline, no box
        fs = int(h * rng.uniform(0.06, 0.12))
        x, y = w * rng.uniform(0.02, 0.4), h * rng.choice((rng.uniform(0.02, 0.15), rng.uniform(0.75, 0.88)))
        draw.text(
            (x, y), text, fill=(*colour[:3], 255), font=_font(fs, rng), stroke_width=max(1, fs // 12), stroke_fill=ink
        )
    elif style == "vstrip":
        bw = int(w * rng.uniform(0.08, 0.16))
        x = rng.choice((0, w - bw))
        draw.rectangle([x, 0, x + bw, h], fill=colour)
        strip = Image.new("RGBA", (h, bw), (0, 0, 0, 0))
        ImageDraw.Draw(strip).text((h * 0.05, bw * 0.2), text, fill=ink, font=_font(int(bw * 0.5), rng))
        overlay.alpha_composite(strip.rotate(rng.choice((90, 270)), expand=True), (x, 0))
    elif style == "box":  # a box with one to three lines, anywhere
        bw, bh = int(w * rng.uniform(0.25, 0.6)), int(h * rng.uniform(0.1, 0.3))
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        draw.rounded_rectangle(
            [x, y, x + bw, y + bh],
            radius=rng.randint(0, bh // 3),
            fill=colour,
            outline=ink if rng.random() < 0.4 else None,
            width=3,
        )
        lines = rng.randint(1, 3)
        for k in range(lines):
            draw.text(
                (x + bw * 0.05, y + bh * (0.1 + 0.8 * k / lines)),
                _offer_text(rng) if k else text,
                fill=ink,
                font=_font(int(bh * 0.6 / lines), rng),
            )
    else:  # a star or polygon sticker
        cx, cy, r = rng.uniform(w * 0.15, w * 0.85), rng.uniform(h * 0.15, h * 0.85), min(w, h) * rng.uniform(0.08, 0.2)
        n = rng.choice((5, 6, 8, 10, 12, 16))
        spiky = rng.random() < 0.6
        points = [
            (
                cx + r * (1 if k % 2 == 0 or not spiky else 0.7) * math.cos(k * math.pi * 2 / (2 * n)),
                cy + r * (1 if k % 2 == 0 or not spiky else 0.7) * math.sin(k * math.pi * 2 / (2 * n)),
            )
            for k in range(2 * n)
        ]
        draw.polygon(points, fill=colour)
        draw.text(
            (cx - r * 0.6, cy - r * 0.25),
            rng.choice(("SALE", "NEW", "TOP", "-15%", "0%", "€€€")),
            fill=ink,
            font=_font(int(r * 0.45), rng),
        )


def render(rng: random.Random, position: str, banner: bool, size: tuple[int, int] | None = None) -> Image.Image:
    """Draw one listing photo of a given position over a generated background."""
    size = size or rng.choice(SIZES)
    img = _background(rng, size, dark=position in ("interior", "engine"))
    DRAWERS[position](rng, img, _colour(rng))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    if banner:
        _stamp_banner(rng, img)
    return img


def to_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def samples(seed: int, count: int, banner_share: float = 0.5) -> Iterator[Sample]:
    """A reproducible stream of labelled photos."""
    rng = random.Random(seed)
    for _ in range(count):
        yield render_sample(rng, rng.random() < banner_share)


def write_dataset(out: Path, count: int, seed: int, banner_share: float = 0.5) -> Path:
    """Write JPEGs and a labels.csv (file, banner, position); return the CSV's path."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed + 1)
    labels = out / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "banner", "position"])
        for i, sample in enumerate(samples(seed, count, banner_share)):
            name = f"images/{i:06d}.jpg"
            (out / name).write_bytes(to_jpeg(sample.image, rng.randint(55, 95)))
            writer.writerow([name, int(sample.banner), sample.position])
    return labels


def _dejavu(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSerif.ttf"
    for folder in ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu"):
        with contextlib.suppress(OSError):
            return ImageFont.truetype(f"{folder}/{name}", max(8, size))
    return _font(size)


def _stamp_unseen_style(rng: random.Random, img: Image.Image) -> None:
    """Banner styles the training generator never draws (other fonts, shapes and placements)."""
    w, h = img.size
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    colour = (*_colour(rng), rng.randint(170, 255))
    ink = (255, 255, 255, 255) if sum(colour[:3]) < 380 else (20, 20, 20, 255)
    style = rng.choice(("price_tag", "two_lines", "side_strip", "burst"))
    if style == "price_tag":
        bw, bh = int(w * rng.uniform(0.3, 0.45)), int(h * rng.uniform(0.12, 0.18))
        x, y = (w - bw) // 2, h - bh - int(h * 0.04)
        draw.rounded_rectangle([x, y, x + bw, y + bh], radius=bh // 3, fill=colour, outline=ink, width=3)
        draw.text(
            (x + bh * 0.3, y + bh * 0.15), f"{rng.randint(9, 79)} 990 €", fill=ink, font=_dejavu(int(bh * 0.6), True)
        )
    elif style == "two_lines":
        bh = int(h * rng.uniform(0.16, 0.24))
        y = rng.choice((0, h - bh))
        draw.rectangle([0, y, w, y + bh], fill=colour)
        draw.text((w * 0.03, y + bh * 0.08), rng.choice(DEALERS), fill=ink, font=_dejavu(int(bh * 0.38), True))
        draw.text((w * 0.03, y + bh * 0.52), _offer_text(rng), fill=ink, font=_dejavu(int(bh * 0.3)))
    elif style == "side_strip":
        bw = int(w * rng.uniform(0.1, 0.16))
        x = rng.choice((0, w - bw))
        draw.rectangle([x, 0, x + bw, h], fill=colour)
        strip = Image.new("RGBA", (h, bw), (0, 0, 0, 0))
        ImageDraw.Draw(strip).text((h * 0.05, bw * 0.2), _offer_text(rng), fill=ink, font=_dejavu(int(bw * 0.5), True))
        overlay.alpha_composite(strip.rotate(90, expand=True), (x, 0))
    else:
        cx, cy, r = rng.choice((w * 0.2, w * 0.8)), rng.choice((h * 0.25, h * 0.75)), min(w, h) * rng.uniform(0.12, 0.2)
        points = [
            (
                cx + (r if k % 2 == 0 else r * 0.75) * math.cos(k * math.pi / 12),
                cy + (r if k % 2 == 0 else r * 0.75) * math.sin(k * math.pi / 12),
            )
            for k in range(24)
        ]
        draw.polygon(points, fill=colour)
        draw.text(
            (cx - r * 0.6, cy - r * 0.25),
            rng.choice(("SALE", "NEU", "-20%", "TOP")),
            fill=ink,
            font=_dejavu(int(r * 0.5), True),
        )
    img.paste(Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB"))


def write_photo_testset(out: Path, count: int, seed: int) -> Path:
    """Held-out set in the banner/ and no_banner/ layout: crops of photographs never used for
    training, half stamped with banner styles the training generator never draws, 480-1024 px."""
    photos = tuple(p for p in installed_photos(exclude=()) if p.name in HELD_OUT_PHOTOS)
    if not photos:
        raise RuntimeError("no held-out photographs installed (pip install scikit-image scikit-learn)")
    rng = random.Random(seed)
    for folder in ("banner", "no_banner"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        width = rng.randint(480, 1024)
        img = photo_crop(rng, photos, (width, int(width * rng.uniform(0.62, 0.8))))
        banner = i % 2 == 0
        if banner:
            _stamp_unseen_style(rng, img)
        (out / ("banner" if banner else "no_banner") / f"{i:05d}.jpg").write_bytes(to_jpeg(img, rng.randint(70, 95)))
    return out
