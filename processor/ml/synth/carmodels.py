"""3D car models from the Debian package ``torcs-data``: AC3D meshes, their textures and wheel positions.

TORCS ships about fifteen textured car bodies (a Peugeot 406, an Alfa 155, an Acura NSX, a VW Beetle
baja, touring and stock racers) in AC3D's ``.acc`` dialect (surfaces are triangle strips, vertices carry
normals). The game draws wheels itself, from the car's XML, and so does ``wheels()`` here. Liveries are
repainted (``Repaint``): the body colour and its stripes and lettering become one paint colour per
image, while glass, lights and dark trim keep the texture's own colours, so a model learns the car's
shape and its lights rather than racing stickers (which would look like dealer banners).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

TORCS_PACKAGE = "torcs-data"
CARS_SUBDIR = "usr/share/games/torcs/cars"
# Not cars a marketplace lists: a single-seater and a dune buggy without a body.
EXCLUDED = ("car1-ow1", "buggy")

# Material ids in the vertex stream (the fragment shader branches on them).
BODY, TYRE, RIM = 0.0, 1.0, 2.0
# Texture alpha written by Repaint: what the shader does with a texel.
PAINT, GLASS, LIGHT, MATTE = 255, 128, 90, 0

CLEAR_LENS = (205, 208, 210)
SHADE_SCALE = 1.25  # paint shades (0.8-1.1) stored as shade / SHADE_SCALE in a uint8 texture

Floats = NDArray[np.float32]


@dataclass(frozen=True)
class Mesh:
    """Non-indexed triangles: 3 rows per triangle. Coordinates in metres, x forward, y left, z up."""

    positions: Floats  # (n, 3)
    normals: Floats  # (n, 3)
    uvs: Floats  # (n, 2)
    materials: Floats  # (n,)

    def __add__(self, other: Mesh) -> Mesh:
        return Mesh(*(np.concatenate([a, b]) for a, b in zip(self.arrays(), other.arrays(), strict=True)))

    def arrays(self) -> tuple[Floats, Floats, Floats, Floats]:
        return self.positions, self.normals, self.uvs, self.materials

    def interleaved(self) -> Floats:
        return np.hstack([self.positions, self.normals, self.uvs, self.materials[:, None]]).astype(np.float32)


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: load_car caches one per folder
class CarModel:
    """A car body with its wheels, its texture and where the ground is."""

    name: str
    folder: Path
    mesh: Mesh  # body and wheels
    texture: NDArray[np.uint8]  # RGBA, rows top to bottom
    ground_z: float
    box_min: Floats  # body bounding box (x, y, z)
    box_max: Floats


class _AcReader:
    """AC3D's nested OBJECT blocks, read line by line into flat triangle lists."""

    def __init__(self, text: str, strips: bool) -> None:
        self.lines, self.i, self.strips = text.splitlines(), 0, strips
        self.pos: list[list[float]] = []
        self.nrm: list[list[float]] = []
        self.uv: list[list[float]] = []

    def take(self, n: int) -> list[list[str]]:
        rows = [line.split() for line in self.lines[self.i : self.i + n]]
        self.i += n
        return rows

    def read(self) -> None:
        while self.i < len(self.lines):
            self.i += 1
            if self.lines[self.i - 1].startswith("OBJECT"):
                self.object(np.zeros(3))

    def object(self, offset: NDArray[np.float64]) -> None:
        verts, loc = np.zeros((0, 6)), np.zeros(3)
        while self.i < len(self.lines):
            words = self.take(1)[0] or [""]
            if words[0] == "loc":
                loc = np.array([float(w) for w in words[1:4]])
            elif words[0] == "numvert":
                rows = [[*map(float, r), 0.0, 0.0, 0.0][:6] for r in self.take(int(words[1]))]
                verts = np.array(rows).reshape(-1, 6)
                verts[:, :3] += offset + loc
                verts = verts[:, [0, 2, 1, 3, 5, 4]] * [1, -1, 1, 1, -1, 1]  # AC3D is y-up: to x, y, z-up
            elif words[0] == "refs":
                _add_surface(verts, self.take(int(words[1])), self.strips, self.pos, self.nrm, self.uv)
            elif words[0] == "kids":
                for _ in range(int(words[1])):
                    self.object(offset + loc)
                return


def read_ac(text: str, strips: bool) -> Mesh:
    """Parse AC3D text. ``strips``: surfaces are triangle strips (TORCS ``.acc``), else polygons (fans)."""
    reader = _AcReader(text, strips)
    reader.read()
    positions = np.asarray(reader.pos, np.float32).reshape(-1, 3)
    normals = np.asarray(reader.nrm, np.float32).reshape(-1, 3)
    missing = np.linalg.norm(normals, axis=1) < 1e-6  # files without vertex normals: face normals
    if missing.any():
        tri = positions.reshape(-1, 3, 3)
        face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        face /= np.maximum(np.linalg.norm(face, axis=1, keepdims=True), 1e-9)
        normals[missing] = np.repeat(face, 3, axis=0)[missing]
    uvs = np.asarray(reader.uv, np.float32).reshape(-1, 2)
    return Mesh(positions, normals, uvs, np.full(len(positions), BODY, np.float32))


def _add_surface(
    verts: NDArray[np.float64],
    refs: list[list[str]],
    strips: bool,
    pos: list[list[float]],
    nrm: list[list[float]],
    uv: list[list[float]],
) -> None:
    idx = [int(r[0]) for r in refs]
    tex = [(float(r[1]), float(r[2])) if len(r) >= 3 else (0.0, 0.0) for r in refs]
    if strips:
        tris = [(k, k + 1, k + 2) if k % 2 == 0 else (k + 1, k, k + 2) for k in range(len(idx) - 2)]
    else:
        tris = [(0, k, k + 1) for k in range(1, len(idx) - 1)]
    for tri in tris:
        if len({idx[k] for k in tri}) < 3:  # degenerate strip joints
            continue
        for k in tri:
            v = verts[idx[k]]
            pos.append(list(v[:3]))
            nrm.append(list(v[3:6]))
            uv.append([tex[k][0], tex[k][1]])


def _attnum(xml: str, section: str, name: str) -> tuple[float, str] | None:
    block = re.search(rf'<section name="{re.escape(section)}">(.*?)</section>', xml, re.S)
    if block is None:
        return None
    tag = re.search(rf'<attnum name="{re.escape(name)}"[^>]*>', block[1])
    value = re.search(r'val="([-+.\deE]+)"', tag[0]) if tag else None
    if tag is None or value is None:
        return None
    unit = re.search(r'unit="([^"]*)"', tag[0])
    return float(value[1]), unit[1] if unit else ""


def _metres(value: tuple[float, str] | None, default: float) -> float:
    if value is None:
        return default
    number, unit = value
    return number * {"in": 0.0254, "mm": 0.001, "cm": 0.01}.get(unit, 1.0)


def cylinder(centre: NDArray[np.float64], radius: float, rim: float, width: float, side: float) -> Mesh:
    """A wheel: tread and sidewalls (TYRE) and an outer rim disc (RIM, uv = position on the disc in
    [-1, 1]) around the y axis; ``side`` is +1 for the car's left wheels, -1 for the right."""
    seg = 28
    a = np.linspace(0, 2 * np.pi, seg + 1)
    c, s = np.cos(a), np.sin(a)
    y_out, y_in = side * width / 2, -side * width / 2
    tris: list[tuple[list[float], list[float], list[float], float]] = []

    def ring(r: float, y: float, k: int) -> list[float]:
        return [centre[0] + r * c[k], centre[1] + y, centre[2] + r * s[k]]

    for k in range(seg):
        for rr in ((radius, y_out, radius, y_in),):
            quad = [ring(rr[0], rr[1], k), ring(rr[0], rr[1], k + 1), ring(rr[2], rr[3], k + 1), ring(rr[2], rr[3], k)]
            normal = [[c[j], 0.0, s[j]] for j in (k, k + 1, k + 1, k)]
            for t in ((0, 1, 2), (0, 2, 3)):
                for j in t:
                    tris.append((quad[j], normal[j], [0.0, 0.0], TYRE))
        for y, n_y in ((y_out, side), (y_in, -side)):  # sidewalls
            quad = [ring(rim, y, k), ring(radius, y, k), ring(radius, y, k + 1), ring(rim, y, k + 1)]
            for t in ((0, 1, 2), (0, 2, 3)):
                for j in t:
                    tris.append((quad[j], [0.0, n_y, 0.0], [0.0, 0.0], TYRE))
        inset = y_out - side * width * 0.15  # the rim sits a little inside the sidewall
        disc = [[centre[0], centre[1] + inset, centre[2]], ring(rim, inset, k), ring(rim, inset, k + 1)]
        disc_uv = [[0.0, 0.0], [c[k], s[k]], [c[k + 1], s[k + 1]]]
        for j in range(3):
            tris.append((disc[j], [0.0, side, 0.0], disc_uv[j], RIM))
    return Mesh(
        np.array([t[0] for t in tris], np.float32),
        np.array([t[1] for t in tris], np.float32),
        np.array([t[2] for t in tris], np.float32),
        np.array([t[3] for t in tris], np.float32),
    )


def wheels(xml: str, box_min: Floats, box_max: Floats) -> tuple[Mesh, float]:
    """Four wheels where the car's XML puts them; returns them and the ground height."""
    length = float(box_max[0] - box_min[0])
    front_x = _metres(_attnum(xml, "Front Axle", "xpos"), box_max[0] - 0.2 * length)
    rear_x = _metres(_attnum(xml, "Rear Axle", "xpos"), box_min[0] + 0.2 * length)
    half_track = abs(_metres(_attnum(xml, "Front Right Wheel", "ypos"), (box_max[1] - box_min[1]) / 2 - 0.15))
    rim = _metres(_attnum(xml, "Front Right Wheel", "rim diameter"), 0.4) / 2
    width = _metres(_attnum(xml, "Front Right Wheel", "tire width"), 0.22)
    ratio = _attnum(xml, "Front Right Wheel", "tire height-width ratio")
    radius = rim + width * (ratio[0] if ratio else 0.5)
    ride = _metres(_attnum(xml, "Front Right Suspension", "ride height"), 0.12)
    ground = float(box_min[2]) - min(ride, 0.25)
    centre_z = ground + radius
    mesh: Mesh | None = None
    for x in (front_x, rear_x):
        for side in (1.0, -1.0):
            wheel = cylinder(np.array([x, side * half_track, centre_z]), radius, rim, width, side)
            mesh = wheel if mesh is None else mesh + wheel
    assert mesh is not None
    return mesh, ground


def find_cars(root: Path) -> list[Path]:
    """Car folders under an unpacked torcs-data (``dpkg-deb -x``) or its ``cars`` folder."""
    base = root / CARS_SUBDIR if (root / CARS_SUBDIR).is_dir() else root
    return [d for d in sorted(base.iterdir()) if (d / f"{d.name}.acc").exists() and d.name not in EXCLUDED]


@functools.cache
def load_car(folder: Path) -> CarModel:
    """The highest-detail body of a TORCS car, its wheels and its texture."""
    text = (folder / f"{folder.name}.acc").read_text(errors="replace")
    body = read_ac(text, strips=True)
    names = re.findall(r'^texture "([^"]+)"', text, re.M)
    tex_path = folder / names[0] if names and (folder / names[0]).exists() else folder / f"{folder.name}.rgb"
    with Image.open(tex_path) as img:
        texture = np.asarray(img.convert("RGBA"))
    xml_path = folder / f"{folder.name}.xml"
    xml = xml_path.read_text(errors="replace") if xml_path.exists() else ""
    box_min, box_max = body.positions.min(axis=0), body.positions.max(axis=0)
    wheel_mesh, ground = wheels(xml, box_min, box_max)
    return CarModel(folder.name, folder, body + wheel_mesh, texture, ground, box_min, box_max)


class Repaint:
    """Turns a car's livery into one paint colour, keeping glass, lights and dark trim."""

    def __init__(self, texture: NDArray[np.uint8]) -> None:
        import cv2

        rgb, alpha = texture[..., :3], texture[..., 3]
        hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).astype(np.float32)
        h, s, v = hsv[..., 0], hsv[..., 1] / 255, hsv[..., 2] / 255
        quant = (rgb // 32).astype(np.int32)
        codes = quant[..., 0] * 64 + quant[..., 1] * 8 + quant[..., 2]
        lit = (v > 0.35) & (alpha > 128)
        mode = np.bincount(codes[lit].ravel(), minlength=512).argmax() if lit.any() else 0
        body_colour = rgb[codes == mode].reshape(-1, 3).mean(axis=0)
        near_body = np.abs(rgb.astype(np.float32) - body_colour).max(axis=2) < 48
        red = ((h < 8) | (h > 165)) & (s > 0.5) & (v > 0.3)
        yellow = (h >= 20) & (h <= 38) & (s > 0.4) & (v > 0.5)
        white = (s < 0.2) & (v > 0.8)
        size = max(3, texture.shape[0] // 24)  # wider than lettering, narrower than headlights
        big_white = cv2.morphologyEx(white.astype(np.uint8), cv2.MORPH_OPEN, np.ones((size, size), np.uint8)) > 0
        glass = ((v < 0.3) | ((s < 0.15) & (v < 0.8))) | (alpha < 128)
        livery = (s > 0.35) & (v > 0.35) & ~red & ~yellow
        lights = red | yellow | big_white
        self.clear = yellow
        self.paint = (near_body | livery | (white & ~big_white)) & ~lights & ~(glass & ~near_body)
        self.shade = np.clip(v / max(1e-3, float(v[self.paint].mean()) if self.paint.any() else 1.0), 0.8, 1.1)
        self.rgb = rgb
        kind = np.full(alpha.shape, MATTE, np.uint8)
        kind[glass] = GLASS
        kind[lights] = LIGHT
        kind[yellow] = GLASS
        kind[self.paint] = PAINT
        self.kind = kind

    def paintable(self) -> NDArray[np.uint8]:
        """The texture with every paint texel a grey level (its shade / SHADE_SCALE): the renderer
        multiplies it by the paint colour, so one texture per car serves every colour."""
        grey = np.clip(self.shade / SHADE_SCALE * 255, 0, 255).astype(np.uint8)
        rgb = np.where(self.paint[..., None], grey[..., None], self.rgb).astype(np.uint8)
        rgb[self.clear] = CLEAR_LENS
        return np.dstack([rgb, self.kind])
