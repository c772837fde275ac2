"""Rendered cars: the AC3D reader, position labels from the camera azimuth, and renders whose picture
matches the label (a made-up box car with red tail lights, so no package download is needed)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from processor.ml.synth import render3d
from processor.ml.synth.carmodels import BODY, CarModel, Mesh, read_ac, wheels

# One quad as a TORCS-style triangle strip (4 refs: two triangles), with vertex normals and uvs.
ACC = """AC3Db
MATERIAL "m" rgb 1 1 1 amb 1 1 1 emis 0 0 0 spec 0 0 0 shi 1 trans 0
OBJECT world
kids 1
OBJECT poly
name "BODY"
loc 1 0 0
numvert 4
0 0 0 0 1 0
1 0 0 0 1 0
0 0 1 0 1 0
1 0 1 0 1 0
numsurf 1
SURF 0x14
mat 0
refs 4
0 0 0
1 1 0
2 0 1
3 1 1
kids 0
"""


def test_ac3d_strip_becomes_two_triangles_in_z_up_metres() -> None:
    mesh = read_ac(ACC, strips=True)
    assert mesh.positions.shape == (6, 3)
    assert np.allclose(mesh.positions[:, 2], 0.0)  # AC3D's y (up) is 0 for all four vertices
    assert mesh.positions[:, 0].min() == pytest.approx(1.0)  # loc moved the object 1 m forward
    assert np.allclose(mesh.normals, [0.0, 0.0, 1.0])  # the y-up normal points up (+z)
    assert set(mesh.materials.tolist()) == {BODY}


@pytest.mark.parametrize(
    ("azimuth", "position"),
    [(0, "front"), (-8, "front"), (45, "front_three_quarter"), (-90, "side"), (95, "side"),
     (-130, "rear_three_quarter"), (180, "rear"), (-175, "rear"), (20, None), (110, None), (160, None)],
)  # fmt: skip
def test_position_comes_from_the_camera_azimuth(azimuth: float, position: str | None) -> None:
    assert render3d.position_for(azimuth) == position


def test_sampled_azimuths_carry_their_label() -> None:
    rng = random.Random(3)
    for position in render3d.EXTERIOR:
        for _ in range(50):
            assert render3d.position_for(render3d.sample_azimuth(rng, position)) == position


def _box(lo: tuple[float, float, float], hi: tuple[float, float, float], uv_front: float, uv_rear: float) -> Mesh:
    """A box whose +x face (the nose) samples the texture at u=uv_front and the -x face (the tail) at
    u=uv_rear; the other faces sample the body colour at u=0.5."""
    (x0, y0, z0), (x1, y1, z1) = lo, hi
    faces = [
        ([(x1, y0, z0), (x1, y1, z0), (x1, y1, z1), (x1, y0, z1)], (1, 0, 0), uv_front),
        ([(x0, y1, z0), (x0, y0, z0), (x0, y0, z1), (x0, y1, z1)], (-1, 0, 0), uv_rear),
        ([(x0, y1, z0), (x1, y1, z0), (x1, y1, z1), (x0, y1, z1)], (0, 1, 0), 0.5),
        ([(x1, y0, z0), (x0, y0, z0), (x0, y0, z1), (x1, y0, z1)], (0, -1, 0), 0.5),
        ([(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)], (0, 0, 1), 0.5),
    ]
    pos, nrm, uv = [], [], []
    for quad, normal, u in faces:
        for k in (0, 1, 2, 0, 2, 3):
            pos.append(quad[k])
            nrm.append(normal)
            uv.append((u, 0.5))
    n = len(pos)
    return Mesh(np.array(pos, np.float32), np.array(nrm, np.float32), np.array(uv, np.float32), np.zeros(n, np.float32))


def box_car() -> CarModel:
    """4.4 m long, 1.8 m wide, 1.4 m tall; white lamps on the nose, red lamps on the tail, blue paint."""
    texture = np.zeros((64, 64, 4), np.uint8)
    texture[..., 3] = 255
    texture[:, :16, :3] = (240, 240, 240)  # u < 0.25: nose
    texture[:, 16:48, :3] = (40, 60, 200)  # body
    texture[:, 48:, :3] = (220, 20, 20)  # u > 0.75: tail
    body = _box((-2.2, -0.9, 0.25), (2.2, 0.9, 1.4), uv_front=0.1, uv_rear=0.9)
    lo, hi = body.positions.min(axis=0), body.positions.max(axis=0)
    wheel_mesh, ground = wheels("", lo, hi)
    return CarModel("box", Path("box"), body + wheel_mesh, texture, ground, lo, hi)


def _render(car: CarModel, azimuth: float) -> NDArray[np.float32]:
    return render3d.render_car(random.Random(5), car, (40, 60, 200), azimuth, (160, 120), opaque_ground=False)


def _red_share(layer: NDArray[np.float32]) -> float:
    rgb = layer[..., :3]
    return float(((rgb[..., 0] > 0.35) & (rgb[..., 0] > 2 * rgb[..., 1]) & (rgb[..., 0] > 2 * rgb[..., 2])).mean())


def _silhouette_aspect(layer: NDArray[np.float32]) -> float:
    rows, cols = np.nonzero(layer[..., 3] > 0.9)
    return float((cols.max() - cols.min() + 1) / (rows.max() - rows.min() + 1))


CHILD = "PROCESSOR_RENDER_TEST_CHILD"


def renderer_available() -> bool:
    """Probed in a subprocess: an EGL context in the test process makes a later TensorFlow import crash."""
    probe = "from processor.ml.synth.render3d import renderer_available as r; raise SystemExit(0 if r() else 1)"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0


@pytest.mark.skipif(not renderer_available(), reason="no OpenGL (moderngl + EGL/Mesa) here")
def test_render_matches_its_label() -> None:
    if os.environ.get(CHILD) != "1":  # EGL and TensorFlow in one process crash: render in a process of its own
        here = f"{__file__}::test_render_matches_its_label"
        child = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", here],
            env={**os.environ, CHILD: "1"},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert child.returncode == 0, child.stdout[-4000:]
        assert "1 passed" in child.stdout, child.stdout[-2000:]
        return
    car = box_car()
    front, side, rear = _render(car, 0.0), _render(car, 90.0), _render(car, 180.0)
    for layer in (front, side, rear):
        assert (layer[..., 3] > 0.9).mean() > 0.05, "the car is missing from the frame"
    assert _silhouette_aspect(side) > 1.6 * _silhouette_aspect(front)  # long from the side, square from ahead
    assert _red_share(rear) > 0.05 > _red_share(front)  # tail lamps face the rear camera only
