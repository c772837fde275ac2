"""Drawn cars from the positions a listing shows: the subjects of generated photos.

Each drawer paints one position onto an image in place. Shapes are deliberately loose
(random proportions, colours, mirroring) so a model learns the layout of a view, not a
template.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from PIL import Image, ImageDraw

Rgb = tuple[int, int, int]
Drawer = Callable[[random.Random, Image.Image, Rgb], None]

POSITIONS = (
    "front",
    "front_three_quarter",
    "side",
    "rear",
    "rear_three_quarter",
    "interior",
    "dashboard",
    "engine",
    "trunk",
    "detail",
)
INDOOR = frozenset({"interior", "dashboard", "engine", "trunk"})  # dark, close backgrounds


def colour(rng: random.Random, lo: int = 0, hi: int = 255) -> Rgb:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _shade(c: Rgb, k: float) -> Rgb:
    return (min(255, int(c[0] * k)), min(255, int(c[1] * k)), min(255, int(c[2] * k)))


def _wheel(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rim: Rgb, squash: float = 1.0) -> None:
    rx = r * squash
    draw.ellipse([cx - rx, cy - r, cx + rx, cy + r], fill=(20, 20, 20))
    draw.ellipse([cx - rx * 0.6, cy - r * 0.6, cx + rx * 0.6, cy + r * 0.6], fill=rim)
    for k in range(5):
        a = k * 2 * math.pi / 5
        end = (cx + rx * 0.6 * math.cos(a), cy + r * 0.6 * math.sin(a))
        draw.line([(cx, cy), end], fill=(60, 60, 60), width=3)


def _mirrored(rng: random.Random, img: Image.Image, paint: Callable[[Image.Image], None]) -> None:
    """Paint on a transparent layer, mirror it half the time, composite it onto ``img``."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    paint(layer)
    if rng.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    img.paste(layer, (0, 0), layer)


def draw_side(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    x0, x1 = w * rng.uniform(0.05, 0.15), w * rng.uniform(0.85, 0.95)
    base = h * rng.uniform(0.62, 0.75)
    top = base - h * rng.uniform(0.18, 0.25)
    draw.rounded_rectangle([x0, top, x1, base], radius=int(h * 0.05), fill=body)
    cab0, cab1 = x0 + (x1 - x0) * rng.uniform(0.2, 0.3), x0 + (x1 - x0) * rng.uniform(0.65, 0.8)
    roof = top - h * rng.uniform(0.12, 0.18)
    draw.polygon([(cab0 - w * 0.05, top), (cab0, roof), (cab1, roof), (cab1 + w * 0.06, top)], fill=body)
    window = [(cab0 - w * 0.03, top - 4), (cab0 + 6, roof + 8), (cab1 - 6, roof + 8), (cab1 + w * 0.04, top - 4)]
    draw.polygon(window, fill=colour(rng, 30, 110))
    draw.line([((cab0 + cab1) / 2, roof + 8), ((cab0 + cab1) / 2, top - 4)], fill=body, width=6)
    r = h * rng.uniform(0.07, 0.1)
    rim = colour(rng, 140, 230)
    _wheel(draw, x0 + (x1 - x0) * 0.2, base, r, rim)
    _wheel(draw, x0 + (x1 - x0) * 0.8, base, r, rim)


def _face(
    rng: random.Random, draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], body: Rgb, rear: bool
) -> None:
    """The front or rear of a car seen head-on, inside ``box`` (x0, roof, x1, base)."""
    x0, roof, x1, base = box
    cx, half = (x0 + x1) / 2, (x1 - x0) / 2
    top = roof + (base - roof) * 0.4
    r = (base - roof) * 0.12
    _wheel(draw, cx - half * 0.8, base, r, (40, 40, 40))
    _wheel(draw, cx + half * 0.8, base, r, (40, 40, 40))
    draw.rounded_rectangle([x0, top, x1, base], radius=int(half * 0.12), fill=body)
    draw.polygon(
        [(cx - half * 0.85, top), (cx - half * 0.6, roof), (cx + half * 0.6, roof), (cx + half * 0.85, top)], fill=body
    )
    glass = [
        (cx - half * 0.75, top - 3),
        (cx - half * 0.55, roof + 6),
        (cx + half * 0.55, roof + 6),
        (cx + half * 0.75, top - 3),
    ]
    draw.polygon(glass, fill=colour(rng, 30, 110))
    ly, lh = top + (base - top) * 0.3, (base - top) * 0.12
    lamp = (200, 20, 20) if rear else (240, 240, 210)
    lw = half * rng.uniform(0.2, 0.3)
    for side in (-1, 1):
        lx = cx + side * half * 0.7
        if rear:
            draw.rectangle([lx - lw / 2, ly - lh, lx + lw / 2, ly + lh * 1.3], fill=lamp)
        else:
            draw.ellipse([lx - lw / 2, ly - lh, lx + lw / 2, ly + lh], fill=lamp)
    if rear:
        draw.rectangle([cx - half * 0.25, base - lh * 3, cx + half * 0.25, base - lh * 1.5], fill=(235, 235, 235))
    else:
        gy, gh = top + (base - top) * 0.55, (base - top) * 0.25
        draw.rectangle([cx - half * 0.35, gy, cx + half * 0.35, gy + gh], fill=(25, 25, 25))
        for k in range(6):
            x = cx - half * 0.35 + k * half * 0.14
            draw.line([(x, gy), (x, gy + gh)], fill=(90, 90, 90), width=2)


def draw_front_or_rear(rng: random.Random, img: Image.Image, body: Rgb, rear: bool) -> None:
    w, h = img.size
    cx, half = w * rng.uniform(0.4, 0.6), w * rng.uniform(0.25, 0.35)
    base = h * rng.uniform(0.7, 0.8)
    roof = base - h * rng.uniform(0.4, 0.5)
    _face(rng, ImageDraw.Draw(img), (cx - half, roof, cx + half, base), body, rear)


def draw_three_quarter(rng: random.Random, img: Image.Image, body: Rgb, rear: bool) -> None:
    """A face on one side and the flank receding from it in perspective."""
    w, h = img.size

    def paint(layer: Image.Image) -> None:
        draw = ImageDraw.Draw(layer)
        face_w, length = w * rng.uniform(0.22, 0.3), w * rng.uniform(0.4, 0.55)
        fx = w * rng.uniform(0.04, 0.12)
        base = h * rng.uniform(0.7, 0.8)
        height = h * rng.uniform(0.38, 0.46)
        roof, top = base - height, base - height * 0.6
        near, far = fx + face_w, fx + face_w + length
        shrink = height * rng.uniform(0.08, 0.15)  # the far end is smaller
        flank = [(near, top), (far, top + shrink * 0.6), (far, base - shrink * 0.4), (near, base)]
        draw.polygon(flank, fill=_shade(body, 0.8))
        cabin = [
            (near - face_w * 0.1, top),
            (near + length * 0.12, roof + shrink * 0.2),
            (near + length * 0.65, roof + shrink * 0.5),
            (far - length * 0.08, top + shrink * 0.6),
        ]
        draw.polygon(cabin, fill=_shade(body, 0.8))
        glass = [(p[0] + (6 if i < 2 else -6), p[1] + 6) for i, p in enumerate(cabin)]
        draw.polygon(glass, fill=colour(rng, 30, 110))
        rim = colour(rng, 140, 230)
        _wheel(draw, near + length * 0.18, base, height * 0.16, rim, squash=0.7)
        _wheel(draw, far - length * 0.15, base - shrink * 0.4, height * 0.13, rim, squash=0.6)
        _face(rng, draw, (fx, roof, near, base), body, rear)

    _mirrored(rng, img, paint)


def draw_interior(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    """Seats seen from the door or from behind: backs, headrests, a door panel."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, h * rng.uniform(0.55, 0.7), w, h], fill=colour(rng, 10, 60))  # floor
    seat = colour(rng, 15, 200) if rng.random() < 0.5 else (rng.randint(20, 60),) * 3
    seats = rng.randint(2, 3)
    span = w * rng.uniform(0.7, 0.95)
    sx = (w - span) / 2
    sw = span / seats * 0.85
    for k in range(seats):
        x = sx + k * span / seats
        top = h * rng.uniform(0.25, 0.35)
        draw.rounded_rectangle([x, top, x + sw, h * 0.85], radius=int(sw * 0.2), fill=seat)
        draw.line([(x + sw * 0.5, top + h * 0.08), (x + sw * 0.5, h * 0.8)], fill=_shade(seat, 0.6), width=3)
        hr = sw * 0.3
        draw.rounded_rectangle(
            [x + sw / 2 - hr, top - h * 0.15, x + sw / 2 + hr, top - h * 0.03],
            radius=int(hr * 0.4),
            fill=_shade(seat, 1.1),
        )
    if rng.random() < 0.5:  # a door panel with a handle
        draw.rectangle([0, 0, w * 0.12, h], fill=body)
        draw.rectangle([w * 0.03, h * 0.45, w * 0.09, h * 0.5], fill=(180, 180, 180))


def _gauge(draw: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    draw.ellipse(
        [cx - r, cy - r, cx + r, cy + r], fill=(10, 10, 12), outline=(200, 200, 200), width=max(2, int(r / 12))
    )
    for k in range(9):
        a = math.pi * (0.75 + 1.5 * k / 8)
        draw.line(
            [
                (cx + r * 0.75 * math.cos(a), cy + r * 0.75 * math.sin(a)),
                (cx + r * 0.9 * math.cos(a), cy + r * 0.9 * math.sin(a)),
            ],
            fill=(230, 230, 230),
            width=2,
        )
    a = math.pi * rng.uniform(0.8, 2.2)
    draw.line([(cx, cy), (cx + r * 0.8 * math.cos(a), cy + r * 0.8 * math.sin(a))], fill=(230, 40, 20), width=3)


def draw_dashboard(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    """The driver's view: windscreen at the top, dash, instrument cluster, wheel, centre screen."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    dash_top = h * rng.uniform(0.3, 0.42)
    draw.polygon([(0, dash_top + h * 0.05), (w, dash_top), (w, h), (0, h)], fill=colour(rng, 10, 50))
    cy, r = dash_top + h * 0.2, h * rng.uniform(0.09, 0.13)
    cx = w * rng.uniform(0.25, 0.4)
    _gauge(draw, cx - r * 1.2, cy, r, rng)
    _gauge(draw, cx + r * 1.2, cy, r, rng)
    sr = h * rng.uniform(0.3, 0.4)  # steering wheel, partly out of frame
    sy = cy + sr * 0.9
    draw.ellipse([cx - sr, sy - sr, cx + sr, sy + sr], outline=(15, 15, 15), width=int(sr * 0.15))
    draw.ellipse([cx - sr * 0.25, sy - sr * 0.25, cx + sr * 0.25, sy + sr * 0.25], fill=(25, 25, 25))
    sx = w * rng.uniform(0.55, 0.65)
    screen = (rng.randint(0, 60), rng.randint(40, 140), rng.randint(120, 230))
    draw.rectangle([sx, dash_top + h * 0.06, sx + w * 0.2, dash_top + h * 0.22], fill=screen)
    for k in range(3):  # vents
        vy = dash_top + h * 0.3 + k * h * 0.03
        draw.line([(sx, vy), (sx + w * 0.2, vy)], fill=(70, 70, 70), width=3)
    if rng.random() < 0.5:
        draw.rectangle([w * 0.85, dash_top, w, h], fill=body)  # passenger door trim


def draw_engine(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    w, h = img.size
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, h * 0.1, w, h], fill=colour(rng, 20, 60))
    for _ in range(rng.randint(25, 60)):
        grey = rng.randint(60, 200)
        x, y = rng.uniform(0, w), rng.uniform(h * 0.15, h)
        bw, bh = rng.uniform(w * 0.03, w * 0.2), rng.uniform(h * 0.03, h * 0.2)
        shape = rng.random()
        fill = (grey, grey, grey + rng.randint(-20, 20)) if shape < 0.8 else colour(rng)
        if shape < 0.5:
            draw.rectangle([x, y, x + bw, y + bh], fill=fill)
        elif shape < 0.8:
            draw.ellipse([x, y, x + bw, y + bw], fill=fill, outline=(20, 20, 20))
        else:
            draw.line([(x, y), (x + bw * 3, y + bh)], fill=fill, width=rng.randint(4, 12))
    draw.rectangle([0, 0, w, h * 0.12], fill=body)  # the raised bonnet


def draw_trunk(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    """The open boot from behind: raised lid, carpeted floor, side walls, tail lamps."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    x0, x1 = w * rng.uniform(0.03, 0.15), w * rng.uniform(0.85, 0.97)
    lid, sill = h * rng.uniform(0.05, 0.15), h * rng.uniform(0.7, 0.8)
    draw.rectangle([x0, lid, x1, h], fill=body)
    inset = (x1 - x0) * 0.08
    carpet = (rng.randint(25, 70),) * 3
    draw.polygon(
        [(x0 + inset, lid + h * 0.12), (x1 - inset, lid + h * 0.12), (x1 - inset, sill), (x0 + inset, sill)],
        fill=_shade(carpet, 0.6),
    )
    draw.polygon(
        [(x0 + inset * 2, sill - h * 0.22), (x1 - inset * 2, sill - h * 0.22), (x1 - inset, sill), (x0 + inset, sill)],
        fill=carpet,
    )
    draw.rectangle([x0, lid - h * 0.06, x1, lid + h * 0.02], fill=_shade(body, 0.7))  # the lid's edge
    for side in (x0, x1 - inset):
        draw.rectangle([side, sill - h * 0.12, side + inset, sill], fill=(200, 25, 25))
    draw.rectangle([x0, sill, x1, sill + h * 0.08], fill=(30, 30, 30))  # bumper
    for _ in range(rng.randint(0, 2)):  # luggage
        bx, bw = rng.uniform(x0 + inset * 2, x1 - inset * 4), (x1 - x0) * rng.uniform(0.15, 0.3)
        draw.rectangle([bx, sill - h * rng.uniform(0.1, 0.25), bx + bw, sill - h * 0.02], fill=colour(rng, 40, 200))


def draw_detail(rng: random.Random, img: Image.Image, body: Rgb) -> None:
    """A close-up: a wheel filling the frame, or a headlamp set in the body."""
    w, h = img.size
    draw = ImageDraw.Draw(img)
    cx, cy = w * rng.uniform(0.35, 0.65), h * rng.uniform(0.4, 0.6)
    r = min(w, h) * rng.uniform(0.35, 0.55)
    if rng.random() < 0.6:
        draw.rectangle([0, 0, w, cy - r * 0.6], fill=body)  # wheel arch
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(18, 18, 18))
        rim = colour(rng, 120, 230)
        draw.ellipse([cx - r * 0.7, cy - r * 0.7, cx + r * 0.7, cy + r * 0.7], fill=rim)
        draw.ellipse([cx - r * 0.5, cy - r * 0.5, cx + r * 0.5, cy + r * 0.5], fill=(90, 90, 95))  # brake disc
        spokes = rng.choice((5, 6, 10))
        for k in range(spokes):
            a = k * 2 * math.pi / spokes
            draw.line(
                [(cx, cy), (cx + r * 0.68 * math.cos(a), cy + r * 0.68 * math.sin(a))], fill=rim, width=int(r * 0.12)
            )
        draw.ellipse([cx - r * 0.12, cy - r * 0.12, cx + r * 0.12, cy + r * 0.12], fill=_shade(rim, 0.6))
    else:
        draw.rectangle([0, 0, w, h], fill=body)
        draw.rounded_rectangle(
            [cx - r * 1.2, cy - r * 0.5, cx + r * 1.2, cy + r * 0.5],
            radius=int(r * 0.4),
            fill=(30, 30, 35),
            outline=(200, 200, 200),
            width=3,
        )
        for offset in (-0.6, 0.6):
            lr = r * 0.35
            draw.ellipse(
                [cx + offset * r - lr, cy - lr, cx + offset * r + lr, cy + lr],
                fill=(235, 235, 220),
                outline=(120, 120, 120),
                width=4,
            )


DRAWERS: dict[str, Drawer] = {
    "front": lambda rng, img, body: draw_front_or_rear(rng, img, body, rear=False),
    "front_three_quarter": lambda rng, img, body: draw_three_quarter(rng, img, body, rear=False),
    "side": draw_side,
    "rear": lambda rng, img, body: draw_front_or_rear(rng, img, body, rear=True),
    "rear_three_quarter": lambda rng, img, body: draw_three_quarter(rng, img, body, rear=True),
    "interior": draw_interior,
    "dashboard": draw_dashboard,
    "engine": draw_engine,
    "trunk": draw_trunk,
    "detail": draw_detail,
}
