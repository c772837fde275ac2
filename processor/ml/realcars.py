"""An evaluation set of real car pictures that packages ship, with positions checked by eye.

Allowed sources (Debian and PyPI packages) hold very few car pictures; these are the ones found:

| picture | package (licence) | position |
| --- | --- | --- |
| ``ALPR/test.jpg``, left car (red roadster) | PyPI ``alpr`` 0.0.2 (MIT) | front_three_quarter |
| ``ALPR/test.jpg``, right car (silver coupe) | PyPI ``alpr`` 0.0.2 (MIT) | rear_three_quarter |
| ``licenseplate_motion.jpg`` (a saloon's tail, blurred) | Debian ``opencv-doc`` (Apache-2.0) | rear |
| ``assets/test_image.png`` (a Skoda Citigo) | PyPI ``fast-alpr`` 0.4.0 sdist (MIT) | rear_three_quarter |
| ``quickie-jpeg-example.jpg`` (a 1930s convertible) | Debian ``gimp-help-en`` (GFDL) | front_three_quarter |
| ``truck-tone-mapped-using-gegl-mantuik.jpg`` (a Ford Ranger) | Debian ``gimp-help-en`` (GFDL) | side |

The ALPR picture looks like a studio render rather than a photograph; the other four are photographs.
Each is written as is and mirrored (a mirror keeps the position), once bare and once stamped with a
banner style the generator never trains on. Photographs without a car (the held-out photo sets) join as
``other``, so the set also measures false "car" calls. Six pictures are a smoke test of the
domain gap, not a benchmark: the labelling loop is the way to a real one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .synth import banners
from .synth.scenes import IMAGE_SUFFIXES, to_jpeg


@dataclass(frozen=True, slots=True)
class RealCar:
    name: str
    path: str  # relative to one of the unpacked package roots
    box: tuple[int, int, int, int] | None  # crop (left, top, right, bottom), or the whole picture
    position: str


GIMP_TUTORIALS = "usr/share/gimp/2.0/help/en/images/tutorials"
REAL_CARS = (
    RealCar("alpr-roadster", "ALPR/test.jpg", (0, 260, 560, 600), "front_three_quarter"),
    RealCar("alpr-coupe", "ALPR/test.jpg", (490, 250, 1200, 640), "rear_three_quarter"),
    RealCar("opencv-licenseplate", "usr/share/doc/opencv-doc/examples/data/licenseplate_motion.jpg", None, "rear"),
    RealCar("fast-alpr-citigo", "fast_alpr-0.4.0/assets/test_image.png", (45, 42, 452, 272), "rear_three_quarter"),
    RealCar(
        "gimp-convertible", f"{GIMP_TUTORIALS}/quickie-jpeg-example.jpg", (10, 49, 297, 210), "front_three_quarter"
    ),
    RealCar(
        "gimp-pickup",
        f"{GIMP_TUTORIALS}/tone-mapping/truck-tone-mapped-using-gegl-mantuik.jpg",
        (25, 248, 645, 478),
        "side",
    ),
)
# Pictures in the held-out photo folders that do show a car: not "other".
NOT_OTHER = ("licenseplate_motion.jpg",)


def _find(roots: Sequence[Path], relative: str) -> Path:
    for root in roots:
        if (root / relative).exists():
            return root / relative
    raise FileNotFoundError(f"{relative} not under {[str(r) for r in roots]} (make model-real-cars)")


def write_real_set(roots: Sequence[Path], out: Path, seed: int = 1, no_car: Sequence[Path] = ()) -> Path:
    """Write ``banner/<position>/`` and ``no_banner/<position>/`` JPEGs (processor evaluate reads them)."""
    rng = random.Random(seed)
    pictures: list[tuple[str, Image.Image, str]] = []
    for car in REAL_CARS:
        with Image.open(_find(roots, car.path)) as src:
            img = src.convert("RGB")
        img = img.crop(car.box) if car.box else img
        pictures += [
            (car.name, img, car.position),
            (car.name + "-mirrored", img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), car.position),
        ]
    for folder in no_car:
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.name not in NOT_OTHER:
                with Image.open(path) as src:
                    src.draft("RGB", (1024, 1024))
                    img = src.convert("RGB")
                img.thumbnail((1024, 1024))
                pictures.append((f"{folder.name}-{path.stem}", img, "other"))
    for name, img, position in pictures:
        for kind in ("no_banner", "banner"):
            (out / kind / position).mkdir(parents=True, exist_ok=True)
        (out / "no_banner" / position / f"{name}.jpg").write_bytes(to_jpeg(img, 92))
        stamped = img.copy()
        style = banners.stamp_unseen(rng, stamped)
        (out / "banner" / position / f"{name}-{style}.jpg").write_bytes(to_jpeg(stamped, 92))
    return out
