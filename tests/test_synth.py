"""The training-data generator: labels, reproducibility, backgrounds, held-out sets."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from processor.ml import synth
from processor.ml.synth import banners, scenes
from processor.ml.synth.cars import DRAWERS, POSITIONS


def test_every_position_draws_a_different_picture() -> None:
    pictures = {}
    for position in POSITIONS:
        img = Image.new("RGB", (320, 240), (128, 128, 128))
        DRAWERS[position](random.Random(1), img, (200, 30, 30))
        pixels = np.asarray(img, dtype=np.int16)
        assert np.abs(pixels - 128).sum(axis=2).astype(bool).mean() > 0.05, f"{position} drew almost nothing"
        pictures[position] = pixels
    for a in POSITIONS:
        for b in POSITIONS:
            if a < b:
                assert np.abs(pictures[a] - pictures[b]).mean() > 1, f"{a} and {b} look the same"


@pytest.mark.parametrize("stamp", [banners.stamp, banners.stamp_unseen])
def test_banners_change_the_picture(stamp: Callable[[random.Random, Image.Image], str]) -> None:
    for seed in range(20):
        img = Image.new("RGB", (640, 480), (90, 140, 60))
        stamp(random.Random(seed), img)
        changed = (np.asarray(img, dtype=np.int16) - (90, 140, 60)).any(axis=2).mean()
        assert changed > 0.005, f"seed {seed}: banner covers {changed:.4f} of the image"


@pytest.mark.parametrize("style", sorted(set(banners.STYLES), key=lambda f: f.__name__), ids=lambda f: f.__name__)
def test_every_banner_style_draws_something_visible(style: Callable[..., None]) -> None:
    for seed in range(30):
        overlay = Image.new("RGBA", (640, 480), (0, 0, 0, 0))
        style(random.Random(seed), overlay, (200, 30, 30, 255))
        covered = (np.asarray(overlay.getchannel("A")) > 0).mean()
        assert covered > 0.004, f"{style.__name__} seed {seed}: covers {covered:.4f} of the image"


def test_texture_backgrounds_depend_only_on_the_seed() -> None:
    first, second = (scenes._texture_background(random.Random(5), (320, 240)) for _ in range(2))
    assert first.tobytes() == second.tobytes()


def test_dataset_is_reproducible_across_worker_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scenes, "CHUNK", 7)  # 20 images -> 3 chunks over the process pool
    first = synth.write_dataset(tmp_path / "a", 20, seed=9)
    second = synth.write_dataset(tmp_path / "b", 20, seed=9)
    with first.open() as a, second.open() as b:
        rows = list(csv.DictReader(a))
        assert rows == list(csv.DictReader(b))
    assert [r["file"] for r in rows] == [f"images/{i:06d}.jpg" for i in range(20)]
    assert {r["position"] for r in rows} <= {*POSITIONS, synth.OTHER} and {r["banner"] for r in rows} == {"0", "1"}
    for row in rows:
        assert (tmp_path / "a" / row["file"]).read_bytes() == (tmp_path / "b" / row["file"]).read_bytes()


def test_background_folders_are_searched_and_used(tmp_path: Path) -> None:
    nested = tmp_path / "wallpapers" / "deep"
    nested.mkdir(parents=True)
    noise = np.random.default_rng(0).integers(0, 40, (400, 600, 3))
    Image.fromarray((noise + np.array([180, 20, 20])).astype(np.uint8)).save(nested / "red.png")
    Image.new("RGB", (100, 100)).save(nested / "tiny.png")  # too small to crop
    (nested / "notes.txt").write_text("not an image")
    photos = synth.photos_in([tmp_path / "wallpapers"])
    assert [p.name for p in photos] == ["red.png"]
    rng = random.Random(3)
    drawn = [synth.render_sample(rng, False, (320, 240), photos) for _ in range(40)]
    reddish = [s for s in drawn if s.position == "other" and np.asarray(s.image).mean(axis=(0, 1)) @ (1, -1, 0) > 40]
    assert reddish, "no background came from the given folder"


def test_photo_testset_from_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (700, 900, 3), dtype=np.uint8)).save(folder / "p.jpg")
    out = synth.write_photo_testset(tmp_path / "test", 10, seed=2, photos_from=[folder])
    assert len(list((out / "banner").glob("*.jpg"))) == 5 and len(list((out / "no_banner").glob("*.jpg"))) == 5
    styles = {path.stem.split("-", 1)[1] for path in (out / "banner").glob("*.jpg")}
    assert styles <= {"price_tag", "two_lines", "side_strip", "burst"} and styles, styles
    for path in out.rglob("*.jpg"):
        with Image.open(path) as img:
            assert 480 <= img.width <= 1024


def test_dataset_of_chosen_positions_only(tmp_path: Path) -> None:
    labels = synth.write_dataset(tmp_path / "indoor", 30, seed=2, positions=("interior", "engine", synth.OTHER))
    with labels.open() as fh:
        drawn = {row["position"] for row in csv.DictReader(fh)}
    assert drawn == {"interior", "engine", synth.OTHER}
    with pytest.raises(ValueError, match="positions"):
        synth.write_dataset(tmp_path / "bad", 5, seed=2, positions=("roof",))
