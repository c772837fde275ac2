"""Rendered listing photos: real car geometry (``carmodels``) drawn at a known camera angle, so the
position label comes from geometry, for free.

Rendering is OpenGL 3.3 through moderngl on a headless EGL context: on a machine without a GPU, Mesa's
llvmpipe (Debian ``libegl-mesa0``, present wherever Mesa is) draws a 1024x768 frame in tens of
milliseconds, and the same code uses a GPU where there is one. (A NumPy rasteriser would need a Python
loop per triangle, 10k-40k per car; pyrender pins old PyOpenGL and needs OSMesa on top.)

A frame: a photographic or generated background, then optionally a ground plane (asphalt, concrete,
grass, a showroom floor) in perspective with a soft contact shadow, then the car: repainted texture,
sun and sky light, a fresnel reflection of a sky gradient on paint and glass, and procedural wheels.
The camera circles the car at a random azimuth, height, distance and focal length; views in the gaps
between the position bands are not drawn, so no label is a guess.
"""

from __future__ import annotations

import csv
import functools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from . import banners
from .carmodels import SHADE_SCALE, CarModel, Floats, Repaint, find_cars, load_car
from .scenes import _texture_background, installed_photos, photo_crop, photos_in, to_jpeg

# Azimuth bands in degrees, 0 = looking at the car's nose, 180 = at its tail; either side of the car.
BANDS = (
    ("front", 0.0, 12.0),
    ("front_three_quarter", 25.0, 65.0),
    ("side", 78.0, 102.0),
    ("rear_three_quarter", 115.0, 155.0),
    ("rear", 168.0, 180.0),
)
EXTERIOR = tuple(name for name, _, _ in BANDS)
# Small frames: the classifier sees 160 px, and a quarter of the pixels renders, composites and encodes
# about four times faster than the generator's 640-1280 px photos.
SIZES = ((400, 300), (480, 360), (432, 288), (480, 270), (360, 360), (448, 336))
SUPERSAMPLE = 2
GROUND_RADIUS_M = 60.0
# Common car colours (white, black, greys and silvers dominate real listings) and a few bright ones.
PAINTS = (
    (235, 235, 232), (245, 245, 245), (20, 20, 22), (35, 35, 40), (120, 122, 125), (170, 172, 176),
    (90, 92, 96), (200, 200, 205), (140, 20, 25), (190, 30, 30), (20, 45, 110), (40, 80, 150),
    (25, 60, 40), (120, 90, 60), (200, 160, 40), (230, 110, 20), (80, 20, 60), (180, 190, 200),
)  # fmt: skip


def position_for(azimuth_deg: float) -> str | None:
    """The position label of a view from ``azimuth_deg`` (0 front, 180 rear, either sign), or None
    between bands."""
    a = abs((azimuth_deg + 180.0) % 360.0 - 180.0)
    for name, lo, hi in BANDS:
        if lo <= a <= hi:
            return name
    return None


def sample_azimuth(rng: random.Random, position: str) -> float:
    lo, hi = next((lo, hi) for name, lo, hi in BANDS if name == position)
    return rng.uniform(lo, hi) * rng.choice((-1.0, 1.0))


VERTEX = """
#version 330
uniform mat4 mvp;
in vec3 in_pos; in vec3 in_norm; in vec2 in_uv; in float in_mat;
out vec3 v_pos; out vec3 v_norm; out vec2 v_uv; out float v_mat;
void main() { v_pos = in_pos; v_norm = in_norm; v_uv = in_uv; v_mat = in_mat; gl_Position = mvp * vec4(in_pos, 1.0); }
"""
CAR_FRAGMENT = """
#version 330
uniform sampler2D tex;
uniform vec3 cam; uniform vec3 sun_dir; uniform vec3 sun_col; uniform vec3 amb_col;
uniform vec3 sky_top; uniform vec3 sky_hor; uniform vec3 ground_col; uniform vec3 rim_col;
uniform float gloss; uniform float spokes; uniform vec3 paint; uniform float shade_scale;
in vec3 v_pos; in vec3 v_norm; in vec2 v_uv; in float v_mat;
out vec4 f;
vec3 env(vec3 d) {
    return d.z > 0.0 ? mix(sky_hor, sky_top, sqrt(d.z)) : mix(sky_hor * 0.7, ground_col, min(1.0, -d.z * 5.0));
}
void main() {
    vec3 n = normalize(v_norm); vec3 v = normalize(cam - v_pos);
    if (dot(n, v) < 0.0) n = -n;
    vec3 base; float kind;
    if (v_mat < 0.5) {
        vec4 t = texture(tex, v_uv); kind = t.a;
        base = kind > 0.9 ? paint * t.r * shade_scale : t.rgb;
    }
    else if (v_mat < 1.5) { base = vec3(0.035); kind = 0.0; }
    else {
        float r = length(v_uv); float a = atan(v_uv.y, v_uv.x);
        float spoke = step(0.55, abs(cos(a * spokes * 0.5)));
        base = r < 0.28 ? rim_col : (r > 0.9 ? rim_col * 0.8 : mix(vec3(0.05), rim_col, spoke));
        kind = 0.45;
    }
    float diff = max(dot(n, sun_dir), 0.0);
    vec3 h = normalize(sun_dir + v);
    float fres = 0.04 + 0.96 * pow(1.0 - max(dot(n, v), 0.0), 5.0);
    vec3 col = base * (amb_col + sun_col * diff);
    vec3 refl = env(reflect(-v, n));
    if (kind > 0.9) {         // paint: clear coat
        col = mix(col, refl, clamp(fres * gloss + 0.06 * gloss, 0.0, 1.0));
        col += sun_col * pow(max(dot(n, h), 0.0), 80.0) * gloss;
    } else if (kind > 0.4) {  // glass and chrome
        col = mix(col, refl, clamp(0.25 + fres, 0.0, 0.95));
        col += sun_col * pow(max(dot(n, h), 0.0), 120.0);
    } else if (kind > 0.3) {  // lights: lit a little from inside
        col = mix(base * 0.9, refl, 0.2 + 0.5 * fres);
    }
    f = vec4(col, 1.0);
}
"""
GROUND_FRAGMENT = """
#version 330
uniform sampler2D noise;
uniform vec2 box_min; uniform vec2 box_max; uniform vec3 floor_col; uniform vec3 light;
uniform float opaque; uniform float shadow; uniform float grain; uniform float reach; uniform float scale;
in vec3 v_pos; in vec3 v_norm; in vec2 v_uv; in float v_mat;
out vec4 f;
void main() {
    vec2 q = max(box_min - v_pos.xy, v_pos.xy - box_max);
    float d = length(max(q, 0.0)) + min(max(q.x, q.y), 0.0);
    float s = shadow * (1.0 - smoothstep(-0.4, 0.5, d));
    if (opaque < 0.5) { f = vec4(0.0, 0.0, 0.0, s); return; }
    float g = texture(noise, v_pos.xy * scale).r - 0.5;
    vec3 col = floor_col * light * (1.0 + grain * g) * (1.0 - s);
    float a = 1.0 - smoothstep(reach * 0.5, reach, length(v_pos.xy));
    f = vec4(col * a, a);
}
"""


@functools.cache
def _gl() -> tuple[Any, Any, Any, Any]:
    """One headless context and the two programs per process."""
    import moderngl

    ctx = moderngl.create_standalone_context(backend="egl")  # type: ignore[arg-type]  # stub types **settings wrongly
    car = ctx.program(vertex_shader=VERTEX, fragment_shader=CAR_FRAGMENT)
    ground = ctx.program(vertex_shader=VERTEX, fragment_shader=GROUND_FRAGMENT)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256), dtype=np.uint8)
    noise_tex = ctx.texture((256, 256), 1, noise.tobytes())
    noise_tex.build_mipmaps()
    noise_tex.repeat_x = noise_tex.repeat_y = True
    return ctx, car, ground, noise_tex


def renderer_available() -> bool:
    try:
        _gl()
    except Exception:  # no moderngl, no EGL, no Mesa: callers skip rendering
        return False
    return True


@dataclass(frozen=True)
class Camera:
    azimuth_deg: float
    height_m: float
    distance_m: float
    fov_deg: float  # vertical
    roll_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)  # where the car sits, as a fraction of the frame


def _look(eye: Floats, target: Floats, roll_deg: float) -> NDArray[np.float64]:
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, fwd)
    r = math.radians(roll_deg)
    right, up = right * math.cos(r) + up * math.sin(r), up * math.cos(r) - right * math.sin(r)
    view = np.eye(4)
    view[0, :3], view[1, :3], view[2, :3] = right, up, -fwd
    view[:3, 3] = -view[:3, :3] @ eye
    return view


def _perspective(fov_deg: float, aspect: float, near: float = 0.1, far: float = 200.0) -> NDArray[np.float64]:
    t = 1.0 / math.tan(math.radians(fov_deg) / 2)
    m = np.zeros((4, 4))
    m[0, 0], m[1, 1] = t / aspect, t
    m[2, 2], m[2, 3] = (far + near) / (near - far), 2 * far * near / (near - far)
    m[3, 2] = -1.0
    return m


def camera_matrix(car: CarModel, cam: Camera, size: tuple[int, int]) -> tuple[NDArray[np.float64], Floats]:
    """Model-view-projection and eye position; the car's front is +x."""
    centre = (car.box_min + car.box_max) / 2
    target = np.array([centre[0], centre[1], car.ground_z + 0.45 * (car.box_max[2] - car.ground_z)])
    a = math.radians(cam.azimuth_deg)
    eye = target + np.array([cam.distance_m * math.cos(a), cam.distance_m * math.sin(a), 0.0])
    eye[2] = car.ground_z + cam.height_m
    proj = _perspective(cam.fov_deg, size[0] / size[1])
    shift = np.eye(4)
    shift[0, 3], shift[1, 3] = 2 * cam.shift[0], 2 * cam.shift[1]
    return shift @ proj @ _look(eye, target, cam.roll_deg), eye.astype(np.float32)


def _extent(car: CarModel, mvp: NDArray[np.float64]) -> tuple[float, float]:
    """Width and height of the car's projected bounding box, as fractions of the frame."""
    lo, hi = car.box_min.copy(), car.box_max.copy()
    lo[2] = car.ground_z
    corners = np.array([[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    clip = corners @ mvp.T
    ndc = clip[:, :2] / np.maximum(clip[:, 3:4], 1e-6)
    span = ndc.max(axis=0) - ndc.min(axis=0)
    return float(span[0] / 2), float(span[1] / 2)


def frame_camera(rng: random.Random, car: CarModel, azimuth: float, size: tuple[int, int]) -> Camera:
    """A camera at ``azimuth`` placed so that the car fills a listing-like share of the frame."""
    fill = rng.uniform(0.55, 0.95)
    cam = Camera(
        azimuth,
        height_m=rng.uniform(0.6, 1.9),
        distance_m=8.0,
        fov_deg=rng.uniform(22.0, 58.0),
        roll_deg=rng.gauss(0.0, 1.2),
    )
    radius = float(np.linalg.norm(car.box_max - car.box_min)) / 2
    near, far = radius + 0.3, 80.0
    for _ in range(24):  # bisection: the projected size shrinks as the camera backs away
        cam = Camera(azimuth, cam.height_m, (near + far) / 2, cam.fov_deg, cam.roll_deg)
        width, height = _extent(car, camera_matrix(car, cam, size)[0])
        near, far = (cam.distance_m, far) if max(width / fill, height / 0.9) > 1 else (near, cam.distance_m)
    scale = max(width / fill, height / 0.9)
    room_x, room_y = max(0.0, 1 - width / scale) / 2, max(0.0, 0.9 - height / scale) / 2
    shift = (rng.uniform(-room_x, room_x) * 0.8, rng.uniform(-room_y, room_y) * 0.8 - 0.03)
    return Camera(cam.azimuth_deg, cam.height_m, cam.distance_m, cam.fov_deg, cam.roll_deg, shift)


@dataclass(frozen=True)
class Light:
    sun_dir: tuple[float, float, float]
    sun_col: tuple[float, float, float]
    amb_col: tuple[float, float, float]
    sky_top: tuple[float, float, float]
    sky_hor: tuple[float, float, float]
    ground_col: tuple[float, float, float]

    @classmethod
    def random(cls, rng: random.Random) -> Light:
        elev, azim = math.radians(rng.uniform(12, 75)), rng.uniform(0, 2 * math.pi)
        overcast = rng.random() < 0.35
        sun = rng.uniform(0.1, 0.35) if overcast else rng.uniform(0.65, 1.05)
        warm = rng.uniform(-0.08, 0.12)
        amb = rng.uniform(0.45, 0.75) if overcast else rng.uniform(0.22, 0.45)
        top = (
            (0.75, 0.78, 0.82) if overcast else (rng.uniform(0.2, 0.45), rng.uniform(0.4, 0.6), rng.uniform(0.7, 0.95))
        )
        hor = tuple(min(1.0, c + rng.uniform(0.15, 0.35)) for c in top)
        grey = rng.uniform(0.15, 0.45)
        return cls(
            (math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev)),
            (sun * (1 + warm), sun, sun * (1 - warm)),
            (amb * 0.95, amb, amb * 1.05),
            top,
            hor,  # type: ignore[arg-type]
            (grey, grey * 0.97, grey * 0.93),
        )


FLOORS = (  # base colours of ground planes: asphalt, concrete, paving, grass, gravel, showroom tiles
    (0.22, 0.22, 0.23), (0.35, 0.35, 0.36), (0.55, 0.54, 0.52), (0.45, 0.40, 0.35), (0.22, 0.33, 0.14),
    (0.50, 0.46, 0.40), (0.80, 0.80, 0.80), (0.15, 0.15, 0.16),
)  # fmt: skip


def render_car(
    rng: random.Random,
    car: CarModel,
    paint: tuple[int, int, int],
    azimuth: float,
    size: tuple[int, int],
    opaque_ground: bool,
) -> NDArray[np.float32]:
    """Premultiplied RGBA floats (h, w, 4) of the car at ``azimuth`` (and its ground or shadow)."""
    ctx, car_prog, ground_prog, noise = _gl()
    w, h = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    cam = frame_camera(rng, car, azimuth, size)
    mvp, eye = camera_matrix(car, cam, size)
    light = Light.random(rng)
    tex, vbo, gbo = _car_buffers(car)
    fbo = _framebuffer((w, h))
    try:
        fbo.use()
        fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
        ctx.enable(ctx.BLEND)
        ctx.blend_func = ctx.ONE, ctx.ONE_MINUS_SRC_ALPHA
        ctx.disable(ctx.DEPTH_TEST)
        _set(ground_prog, mvp=mvp.T.astype("f4").tobytes())
        floor, tone = rng.choice(FLOORS), rng.uniform(0.75, 1.25)
        lit = light.amb_col[1] + light.sun_col[1] * light.sun_dir[2]
        _uniforms(
            ground_prog,
            box_min=tuple(car.box_min[:2] - 0.05),
            box_max=tuple(car.box_max[:2] + 0.05),
            floor_col=tuple(c * tone for c in floor),
            light=(lit, lit, lit),
            opaque=1.0 if opaque_ground else 0.0,
            shadow=rng.uniform(0.45, 0.8),
            grain=rng.uniform(0.1, 0.6),
            reach=rng.uniform(15.0, 55.0),
            scale=rng.uniform(0.05, 0.6),
            noise=1,
        )
        noise.use(1)
        _draw(ctx, ground_prog, gbo)
        ctx.disable(ctx.BLEND)
        ctx.enable(ctx.DEPTH_TEST)
        _set(car_prog, mvp=mvp.T.astype("f4").tobytes())
        rim = rng.uniform(0.25, 0.8)
        _uniforms(
            car_prog,
            cam=tuple(float(v) for v in eye),
            sun_dir=light.sun_dir,
            sun_col=light.sun_col,
            amb_col=light.amb_col,
            sky_top=light.sky_top,
            sky_hor=light.sky_hor,
            ground_col=light.ground_col,
            rim_col=(rim, rim, rim * 1.02),
            gloss=rng.uniform(0.5, 1.0),
            spokes=float(rng.choice((5, 5, 6, 10, 12))),
            tex=0,
            paint=tuple(c / 255.0 for c in paint),
            shade_scale=SHADE_SCALE,
        )
        tex.use(0)
        _draw(ctx, car_prog, vbo)
        raw = np.frombuffer(fbo.read(components=4, dtype="f1"), np.uint8).reshape(h, w, 4)
    finally:
        ctx.disable(ctx.BLEND | ctx.DEPTH_TEST)
    import cv2

    small = cv2.resize(raw[::-1], size, interpolation=cv2.INTER_AREA)  # GL rows are bottom-up
    return small.astype(np.float32) / 255.0


ATTRIBUTES = (("in_pos", 3), ("in_norm", 3), ("in_uv", 2), ("in_mat", 1))  # Mesh.interleaved()


def _draw(ctx: Any, prog: Any, buffer: Any) -> None:
    """Draw interleaved vertices; attributes the program's compiler dropped are skipped over."""
    layout, names = [], []
    for name, width in ATTRIBUTES:
        if name in prog:
            layout.append(f"{width}f")
            names.append(name)
        else:
            layout.append(f"{width * 4}x")
    vao = ctx.vertex_array(prog, [(buffer, " ".join(layout), *names)])
    try:
        vao.render()
    finally:
        vao.release()


@functools.cache
def _car_buffers(car: CarModel) -> tuple[Any, Any, Any]:
    """The car's texture, vertex buffer and ground quad, uploaded once per process."""
    ctx = _gl()[0]
    rgba = Repaint(car.texture).paintable()
    tex = ctx.texture((rgba.shape[1], rgba.shape[0]), 4, rgba[::-1].tobytes())  # AC3D's v runs upwards
    tex.build_mipmaps()
    r, g = GROUND_RADIUS_M, car.ground_z
    quad = np.array(
        [[x, y, g, 0, 0, 1, 0, 0, 3] for x, y in ((-r, -r), (r, -r), (r, r), (-r, -r), (r, r), (-r, r))], np.float32
    )
    return tex, ctx.buffer(car.mesh.interleaved().tobytes()), ctx.buffer(quad.tobytes())


@functools.cache
def _framebuffer(size: tuple[int, int]) -> Any:
    """One framebuffer per frame size and process: releasing a framebuffer would not free its
    renderbuffers, and a new one per frame leaked ~5 MB a render."""
    return _gl()[0].simple_framebuffer(size, components=4, dtype="f1")


def _set(prog: Any, mvp: bytes) -> None:
    prog["mvp"].write(mvp)


def _uniforms(prog: Any, **values: Any) -> None:
    for name, value in values.items():
        if name in prog:
            prog[name].value = value


def composite(background: Image.Image, layer: NDArray[np.float32]) -> Image.Image:
    """The premultiplied render over a background of the same size."""
    bg = np.asarray(background.convert("RGB"), np.float32) / 255.0
    out = layer[..., :3] + bg * (1.0 - layer[..., 3:4])
    return Image.fromarray(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Render:
    image: Image.Image
    position: str
    azimuth_deg: float
    car: str
    banner: bool


def render_listing_photo(
    rng: random.Random,
    cars: Sequence[Path],
    photos: tuple[Path, ...],
    banner: bool,
    position: str | None = None,
) -> Render:
    """One labelled listing photo of a rendered car."""
    position = position or rng.choice(EXTERIOR)
    azimuth = sample_azimuth(rng, position)
    size = rng.choice(SIZES)
    car = load_car(rng.choice(list(cars)))
    paint = tuple(max(0, min(255, int(c + rng.gauss(0, 10)))) for c in rng.choice(PAINTS))
    if photos and rng.random() < 0.8:
        background = photo_crop(rng, photos, size, remix=True)
    else:
        background = _texture_background(rng, size)
    layer = render_car(rng, car, paint, azimuth, size, opaque_ground=rng.random() < 0.6)  # type: ignore[arg-type]
    img = composite(background, layer)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # mirroring keeps the position
    if banner:
        banners.stamp(rng, img)
    return Render(img, position, azimuth, car.name, banner)


def write_renders(
    out: Path,
    count: int,
    seed: int,
    torcs: Path,
    backgrounds: Sequence[Path] = (),
    banner_share: float = 0.5,
    only: Sequence[str] = (),
    leave_out: Sequence[str] = (),
) -> Path:
    """Write rendered JPEGs and a labels.csv (file, banner, position, azimuth, car); returns the CSV.
    ``only`` / ``leave_out`` pick car models by name (a calibration set of cars never trained on).
    One process: the GL context is per process and the renders are cheap next to JPEG encoding."""
    cars = [c for c in find_cars(torcs) if (not only or c.name in only) and c.name not in leave_out]
    if not cars:
        raise FileNotFoundError(f"no TORCS cars under {torcs} (apt-get download torcs-data; dpkg-deb -x)")
    photos = installed_photos() + photos_in(backgrounds)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    labels = out / "labels.csv"
    with labels.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "banner", "position", "azimuth_deg", "car"])
        for i in range(count):
            r = render_listing_photo(rng, cars, photos, rng.random() < banner_share)
            name = f"images/r{i:06d}.jpg"
            (out / name).write_bytes(to_jpeg(r.image, rng.randint(60, 95)))
            writer.writerow([name, int(r.banner), r.position, f"{r.azimuth_deg:.1f}", r.car])
    return labels
