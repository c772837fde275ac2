"""Dealer banners stamped onto photos: price strips, ribbons, badges, frames, watermarks.

``stamp`` draws the styles used for training; ``stamp_unseen`` draws styles it never
draws (the held-out photo test set uses them), so that a test measures generalization.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFont

from .cars import colour

Rgba = tuple[int, int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

DEALERS = (
    "AutoHaus Nord",
    "Best Cars",
    "Premium Motors",
    "Garage Dupont",
    "Autos García",
    "CarPoint",
    "Motor Center Kraków",
    "Autobedrijf de Vries",
    "Concessionaria Rossi",
    "City Cars Ltd",
)
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
    "Prix: {p} €",
    "Prezzo {p} €",
    "Cena {p} zł",
    "Prijs € {p}",
    "£{p}",
    "www.{d}.com",
    "+49 {t}",
    "Finance from {r}/mo",
    "NEW ARRIVAL",
    "1. Hand · Scheckheft",
)
WORDS = ("SALE", "NEW", "TOP", "-15%", "0%", "HOT", "DEAL", "NEU", "PROMO", "OUTLET")
_FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "cmss10.ttf",
    "cmb10.ttf",
    "cmtt10.ttf",
)


@functools.cache
def _font_file(name: str) -> str | None:
    """Where a font file is installed: the system's DejaVu folders first, then matplotlib's fonts
    (DejaVu, STIX and Computer Modern)."""
    roots = [Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu")]
    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.submodule_search_locations:
        roots.append(Path(next(iter(spec.submodule_search_locations))) / "mpl-data/fonts/ttf")
    return next((str(root / name) for root in roots if (root / name).exists()), None)


@functools.cache
def _font_paths() -> tuple[str, ...]:
    return tuple(path for path in map(_font_file, _FONT_FILES) if path)


def _star(cx: float, cy: float, r: float, spikes: int, inner: float) -> list[tuple[float, float]]:
    """The corners of a star: 2 * ``spikes`` of them, every other one at ``inner`` * r."""
    return [
        (
            cx + r * (1 if k % 2 == 0 else inner) * math.cos(k * math.pi / spikes),
            cy + r * (1 if k % 2 == 0 else inner) * math.sin(k * math.pi / spikes),
        )
        for k in range(2 * spikes)
    ]


def _composite(img: Image.Image, overlay: Image.Image) -> None:
    img.paste(Image.alpha_composite(img.convert("RGBA"), overlay).convert("RGB"))


def font(size: int, rng: random.Random | None = None) -> Font:
    """A font of ``size`` px: a random installed one when ``rng`` is given, else Pillow's default."""
    paths = _font_paths()
    if rng is not None and paths and rng.random() < 0.85:
        return ImageFont.truetype(rng.choice(paths), max(8, size))
    return ImageFont.load_default(size=max(8, size))


def offer_text(rng: random.Random) -> str:
    text = rng.choice(OFFERS).format(
        p=f"{rng.randint(5, 89)}.{rng.randint(0, 999):03d}",
        r=rng.randint(99, 899),
        t=rng.randint(100000000, 999999999),
        d=rng.choice(DEALERS).lower().replace(" ", "-"),
    )
    return text if rng.random() < 0.5 else f"{rng.choice(DEALERS)}  {text}"


def _ink(fill: tuple[int, ...]) -> Rgba:
    return (255, 255, 255, 255) if sum(fill[:3]) < 380 else (0, 0, 0, 255)


def _strip(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """A full-width strip at the top or bottom (or a bar across the lower third), one or two lines."""
    w, h = overlay.size
    draw = ImageDraw.Draw(overlay)
    bh = int(h * rng.uniform(0.07, 0.22))
    y = rng.choice((0, h - bh, int(h * rng.uniform(0.55, 0.8))))
    draw.rectangle([0, y, w, y + bh], fill=fill)
    if rng.random() < 0.3:  # an accent line
        draw.rectangle([0, y, w, y + max(2, bh // 12)], fill=(*colour(rng), 255))
    lines = 1 if rng.random() < 0.6 else 2
    for k in range(lines):
        size = int(bh * (0.55 if lines == 1 else 0.34))
        x = w * rng.uniform(0.02, 0.35)
        draw.text((x, y + bh * (0.2 + 0.42 * k)), offer_text(rng), fill=_ink(fill), font=font(size, rng))


def _ribbon(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """A diagonal band across one corner with a word or dealer name along it."""
    w, h = overlay.size
    side = int(min(w, h) * rng.uniform(0.3, 0.5))
    near, far = side * rng.uniform(0.25, 0.45), side * rng.uniform(0.6, 0.8)
    tile = Image.new("RGBA", (side, side), (0, 0, 0, 0))  # drawn for the top-left corner, then mirrored
    ImageDraw.Draw(tile).polygon([(near, 0), (far, 0), (0, far), (0, near)], fill=fill)
    mask = tile.getchannel("A")  # text stays on the band
    band = (far - near) / math.sqrt(2)
    label = Image.new("RGBA", (int(side * 1.2), int(band)), (0, 0, 0, 0))
    text, face = rng.choice(WORDS + DEALERS)[:14], font(int(band * 0.6), rng)
    ImageDraw.Draw(label).text((label.width / 2, band / 2), text, fill=_ink(fill), font=face, anchor="mm")
    label = label.rotate(45, expand=True)
    centre = (near + far) / 4  # the band's midline crosses the tile's diagonal here
    dx, dy = int(centre - label.width / 2), int(centre - label.height / 2)
    tile.alpha_composite(label, (max(0, dx), max(0, dy)), (max(0, -dx), max(0, -dy)))
    tile.putalpha(ImageChops.multiply(tile.getchannel("A"), mask))
    flip_x, flip_y = rng.random() < 0.5, rng.random() < 0.5
    if flip_x:
        tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if flip_y:
        tile = tile.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    overlay.alpha_composite(tile, (w - side if flip_x else 0, h - side if flip_y else 0))


def _badge(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """A round or star-shaped sticker with a word or price, near a corner or anywhere."""
    w, h = overlay.size
    draw = ImageDraw.Draw(overlay)
    r = min(w, h) * rng.uniform(0.08, 0.2)
    if rng.random() < 0.5:
        cx, cy = rng.choice((r + 10, w - r - 10)), rng.choice((r + 10, h - r - 10))
    else:
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    n = rng.choice((0, 5, 8, 12, 16, 20))
    if n == 0:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill, outline=_ink(fill), width=max(2, int(r / 12)))
    else:
        draw.polygon(_star(cx, cy, r, n, rng.uniform(0.6, 0.85)), fill=fill)
    text = rng.choice(WORDS) if rng.random() < 0.5 else f"{rng.randint(5, 89)}.990€"
    draw.text((cx - r * 0.7, cy - r * 0.25), text, fill=_ink(fill), font=font(int(r * 0.4), rng))


def _frame(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    w, h = overlay.size
    draw = ImageDraw.Draw(overlay)
    t = int(min(w, h) * rng.uniform(0.02, 0.08))
    draw.rectangle([0, 0, w - 1, h - 1], outline=fill, width=t)
    if rng.random() < 0.8:  # a caption band on one edge
        bottom = rng.random() < 0.7
        y0 = h - 3 * t if bottom else 0
        draw.rectangle([0, y0, w, y0 + 3 * t], fill=fill)
        draw.text((t * 2, y0 + 0.3 * t), offer_text(rng), fill=_ink(fill), font=font(int(t * 1.6), rng))


def _box(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """A logo box or text panel with one to three lines, in a corner or anywhere."""
    w, h = overlay.size
    draw = ImageDraw.Draw(overlay)
    bw, bh = int(w * rng.uniform(0.2, 0.55)), int(h * rng.uniform(0.08, 0.28))
    if rng.random() < 0.6:
        x, y = rng.choice((rng.randint(0, 20), w - bw - rng.randint(0, 20))), rng.choice((10, h - bh - 10))
    else:
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
    draw.rounded_rectangle(
        [x, y, x + bw, y + bh],
        radius=rng.randint(0, bh // 3),
        fill=fill,
        outline=_ink(fill) if rng.random() < 0.3 else None,
        width=3,
    )
    lines = rng.randint(1, 3)
    for k in range(lines):
        text = rng.choice(DEALERS) if k == 0 else offer_text(rng)
        draw.text(
            (x + bw * 0.05, y + bh * (0.1 + 0.8 * k / lines)),
            text,
            fill=_ink(fill),
            font=font(int(bh * 0.6 / lines), rng),
        )


def _vertical(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    w, h = overlay.size
    bw = int(w * rng.uniform(0.07, 0.16))
    x = rng.choice((0, w - bw))
    ImageDraw.Draw(overlay).rectangle([x, 0, x + bw, h], fill=fill)
    strip = Image.new("RGBA", (h, bw), (0, 0, 0, 0))
    ImageDraw.Draw(strip).text((h * 0.05, bw * 0.2), offer_text(rng), fill=_ink(fill), font=font(int(bw * 0.5), rng))
    overlay.alpha_composite(strip.rotate(rng.choice((90, 270)), expand=True), (x, 0))


def _text(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """Bare text with an outline or a drop shadow, no box."""
    w, h = overlay.size
    draw = ImageDraw.Draw(overlay)
    size = int(h * rng.uniform(0.05, 0.12))
    x, y = w * rng.uniform(0.02, 0.4), h * rng.choice((rng.uniform(0.02, 0.15), rng.uniform(0.75, 0.88)))
    text, face = offer_text(rng), font(size, rng)
    if rng.random() < 0.5:
        draw.text(
            (x, y), text, fill=(*fill[:3], 255), font=face, stroke_width=max(1, size // 12), stroke_fill=_ink(fill)
        )
    else:
        d = max(2, size // 10)
        draw.text((x + d, y + d), text, fill=(0, 0, 0, 160), font=face)
        draw.text((x, y), text, fill=(*fill[:3], 255), font=face)


def _watermark(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """A large, faint dealer name across the middle, often tilted."""
    w, h = overlay.size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    size = int(h * rng.uniform(0.1, 0.2))
    ImageDraw.Draw(layer).text(
        (w * rng.uniform(0.05, 0.3), h * rng.uniform(0.35, 0.55)),
        rng.choice(DEALERS),
        fill=(*fill[:3], rng.randint(120, 210)),
        font=font(size, rng),
    )
    overlay.alpha_composite(layer.rotate(rng.choice((0, rng.uniform(-35, 35)))))


def _slant(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """A parallelogram price tag or corner triangle."""
    w, h = overlay.size
    draw = ImageDraw.Draw(overlay)
    bh, bw = h * rng.uniform(0.1, 0.2), w * rng.uniform(0.35, 0.7)
    y = rng.choice((h * 0.03, h - bh - h * 0.03))
    skew = bh * rng.uniform(0.3, 0.8)
    if rng.random() < 0.5:
        draw.polygon([(0, y), (bw + skew, y), (bw, y + bh), (0, y + bh)], fill=fill)
        draw.text((w * 0.03, y + bh * 0.2), offer_text(rng), fill=_ink(fill), font=font(int(bh * 0.5), rng))
    else:
        side = min(w, h) * rng.uniform(0.25, 0.4)
        cx = rng.choice((0, w))
        cy = rng.choice((0, h))
        draw.polygon([(cx, cy), (abs(cx - side), cy), (cx, abs(cy - side))], fill=fill)
        draw.text(
            (abs(cx - side * 0.6), abs(cy - side * 0.3)),
            rng.choice(WORDS),
            fill=_ink(fill),
            font=font(int(side * 0.15), rng),
        )


def _sticker(rng: random.Random, overlay: Image.Image, fill: Rgba) -> None:
    """A generic sticker: a random shape (pill, ellipse, hexagon, tag, burst), anywhere, any size,
    with a price or a word, sometimes outlined or shadowed."""
    w, h = overlay.size
    draw = ImageDraw.Draw(overlay)
    bw = w * rng.uniform(0.12, 0.5)
    bh = min(h * 0.45, bw * rng.uniform(0.2, 0.8))
    x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
    box = (x, y, x + bw, y + bh)
    shape = rng.choice(("pill", "ellipse", "hexagon", "tag", "burst"))
    outline = _ink(fill) if rng.random() < 0.4 else None
    if rng.random() < 0.3:  # a drop shadow under the sticker
        d = max(2, int(bh * 0.06))
        _shape(draw, shape, (x + d, y + d, x + bw + d, y + bh + d), (0, 0, 0, 110), None)
    _shape(draw, shape, box, fill, outline)
    text = rng.choice((f"{rng.randint(5, 89)} {rng.randint(0, 999):03d} €", rng.choice(WORDS), offer_text(rng)))
    face = font(int(bh * rng.uniform(0.3, 0.55)), rng)
    if isinstance(face, ImageFont.FreeTypeFont) and (length := draw.textlength(text, font=face)) > bw * 0.85:
        face = face.font_variant(size=max(8, int(face.size * bw * 0.85 / length)))
    draw.text((x + bw / 2, y + bh / 2), text, fill=_ink(fill), font=face, anchor="mm")


def _shape(
    draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, float, float, float], fill: Rgba, outline: Rgba | None
) -> None:
    x0, y0, x1, y1 = box
    width = max(2, int((y1 - y0) * 0.05))
    if shape == "pill":
        draw.rounded_rectangle(box, radius=(y1 - y0) / 2, fill=fill, outline=outline, width=width)
    elif shape == "ellipse":
        draw.ellipse(box, fill=fill, outline=outline, width=width)
    elif shape == "burst":
        r = (y1 - y0) / 2
        draw.polygon(_star((x0 + x1) / 2, (y0 + y1) / 2, max(r, (x1 - x0) / 3), 14, 0.8), fill=fill, outline=outline)
    else:  # a hexagon, or a price tag with one pointed end
        cut, mid = (y1 - y0) / 2, (y0 + y1) / 2
        left = [(x0, mid), (x0 + cut, y0)] if shape == "hexagon" else [(x0, y0)]
        bottom_left = (x0 + cut, y1) if shape == "hexagon" else (x0, y1)
        draw.polygon([*left, (x1 - cut, y0), (x1, mid), (x1 - cut, y1), bottom_left], fill=fill, outline=outline)


STYLES: tuple[Callable[[random.Random, Image.Image, Rgba], None], ...] = (
    _strip,
    _strip,
    _strip,
    _ribbon,
    _badge,
    _badge,
    _frame,
    _box,
    _box,
    _vertical,
    _text,
    _watermark,
    _slant,
    _sticker,
    _sticker,
)


def stamp(rng: random.Random, img: Image.Image) -> str:
    """Overlay one to three banners of random styles, solid or see-through, in place; return the styles."""
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    drawn = []
    for _ in range(rng.choices((1, 2, 3), (0.65, 0.28, 0.07))[0]):
        fill = (*colour(rng), 255 if rng.random() < 0.75 else rng.randint(130, 230))
        style = rng.choice(STYLES)
        style(rng, overlay, fill)
        drawn.append(style.__name__.lstrip("_"))
    _composite(img, overlay)
    return "+".join(drawn)


def _dejavu(size: int, bold: bool = False) -> Font:
    path = _font_file("DejaVuSans-Bold.ttf" if bold else "DejaVuSerif.ttf")
    return ImageFont.truetype(path, max(8, size)) if path else font(size)


def stamp_unseen(rng: random.Random, img: Image.Image) -> str:
    """Banner styles ``stamp`` never draws (other placements, proportions and layouts); returns the style."""
    w, h = img.size
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    fill = (*colour(rng), rng.randint(170, 255))
    ink = _ink(fill)
    style = rng.choice(("price_tag", "two_lines", "side_strip", "burst"))
    if style == "price_tag":
        bw, bh = int(w * rng.uniform(0.3, 0.45)), int(h * rng.uniform(0.12, 0.18))
        x, y = (w - bw) // 2, h - bh - int(h * 0.04)
        draw.rounded_rectangle([x, y, x + bw, y + bh], radius=bh // 3, fill=fill, outline=ink, width=3)
        draw.text(
            (x + bh * 0.3, y + bh * 0.15), f"{rng.randint(9, 79)} 990 €", fill=ink, font=_dejavu(int(bh * 0.6), True)
        )
    elif style == "two_lines":
        bh = int(h * rng.uniform(0.16, 0.24))
        y = rng.choice((0, h - bh))
        draw.rectangle([0, y, w, y + bh], fill=fill)
        draw.text((w * 0.03, y + bh * 0.08), rng.choice(DEALERS), fill=ink, font=_dejavu(int(bh * 0.38), True))
        draw.text((w * 0.03, y + bh * 0.52), offer_text(rng), fill=ink, font=_dejavu(int(bh * 0.3)))
    elif style == "side_strip":
        bw = int(w * rng.uniform(0.1, 0.16))
        x = rng.choice((0, w - bw))
        draw.rectangle([x, 0, x + bw, h], fill=fill)
        strip = Image.new("RGBA", (h, bw), (0, 0, 0, 0))
        ImageDraw.Draw(strip).text((h * 0.05, bw * 0.2), offer_text(rng), fill=ink, font=_dejavu(int(bw * 0.5), True))
        overlay.alpha_composite(strip.rotate(90, expand=True), (x, 0))
    else:
        cx, cy, r = rng.choice((w * 0.2, w * 0.8)), rng.choice((h * 0.25, h * 0.75)), min(w, h) * rng.uniform(0.12, 0.2)
        draw.polygon(_star(cx, cy, r, 12, 0.75), fill=fill)
        draw.text(
            (cx - r * 0.6, cy - r * 0.25),
            rng.choice(("SALE", "NEU", "-20%", "TOP")),
            fill=ink,
            font=_dejavu(int(r * 0.5), True),
        )
    _composite(img, overlay)
    return style


SITES = ("autohaus-nord.de", "bestcars.com", "premium-motors.it", "carpoint.pl", "bonauto.vn", "citycars.co.uk")


def stamp_subtle(rng: random.Random, img: Image.Image) -> str:
    """The overlays sites and dealers add as published: a faint tiled or centred site name, a small
    corner address or logo. Smaller and fainter than ``stamp``'s banners; returns the style."""
    w, h = img.size
    overlay = Image.new("RGBA", img.size, (0, 0, 0, 0))
    light = rng.random() < 0.6
    rgb = (255, 255, 255) if light else colour(rng)
    style = rng.choice(("tiled", "centred", "corner_text", "corner_logo"))
    if style in ("tiled", "centred"):
        layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(layer)
        text = rng.choice((rng.choice(SITES), rng.choice(DEALERS)))
        alpha = rng.randint(70, 150)
        size = int(h * (rng.uniform(0.05, 0.09) if style == "tiled" else rng.uniform(0.08, 0.16)))
        face = font(size, rng)
        spots = (
            [(x * w / 3 + rng.uniform(0, w * 0.1), y * h / 3) for x in range(3) for y in range(3)]
            if style == "tiled"
            else [(w * rng.uniform(0.15, 0.35), h * rng.uniform(0.4, 0.55))]
        )
        for spot in spots:
            draw.text(spot, text, fill=(*rgb, alpha), font=face)
        overlay.alpha_composite(layer.rotate(rng.choice((0, rng.uniform(-40, 40)))))
    else:
        draw = ImageDraw.Draw(overlay)
        left, top = rng.random() < 0.5, rng.random() < 0.3
        alpha = rng.randint(170, 255)
        if style == "corner_text":
            size = int(h * rng.uniform(0.035, 0.07))
            face = font(size, rng)
            text = rng.choice((f"www.{rng.choice(SITES)}", rng.choice(DEALERS), offer_text(rng)))
            length = draw.textlength(text, font=face)
            x = w * 0.02 if left else w * 0.98 - length
            y = h * 0.02 if top else h * 0.97 - size
            draw.text((x + 1, y + 1), text, fill=(0, 0, 0, alpha // 2), font=face)
            draw.text((x, y), text, fill=(*rgb, alpha), font=face)
        else:
            r = min(w, h) * rng.uniform(0.05, 0.1)
            cx = r * 1.3 if left else w - r * 1.3
            cy = r * 1.3 if top else h - r * 1.3
            fill = (*colour(rng), alpha)
            _shape(
                draw,
                rng.choice(("ellipse", "pill", "hexagon")),
                (cx - r, cy - r * 0.7, cx + r, cy + r * 0.7),
                fill,
                None,
            )
            draw.text(
                (cx, cy), rng.choice(DEALERS)[:2].upper(), fill=_ink(fill), font=font(int(r * 0.7), rng), anchor="mm"
            )
    _composite(img, overlay)
    return style
