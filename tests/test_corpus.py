"""The real-photo corpus: adding sources, fetching from them, labels back from the app, splits by car."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from aiohttp import web
from click.testing import CliRunner
from PIL import Image

from processor.cli import main
from processor.ml.corpus import (
    Candidate,
    Photo,
    add_photos,
    apply_labels,
    check_splits,
    fetch,
    read_manifest,
    split_of,
    write_manifest,
    write_split_folders,
)


def photo(seed: int, size: tuple[int, int] = (640, 480)) -> bytes:
    rng = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(size[0] * size[1] // 64)] * 64)  # type: ignore[misc]
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def source(tmp_path: Path, files: dict[str, bytes]) -> list[Candidate]:
    root = tmp_path / "source"
    out = []
    for path, data in files.items():
        local = root / path.replace("/", "__")
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(data)
        out.append(Candidate("dealer/site", "a" * 40, path, "MIT", local))
    return out


def test_add_drops_exact_and_near_duplicates_and_groups_cars_by_folder(tmp_path: Path) -> None:
    first = photo(1)
    resaved = io.BytesIO()
    Image.open(io.BytesIO(first)).resize((600, 450)).save(resaved, "JPEG", quality=70)  # same photo, re-encoded
    files = {
        "cars/golf/1.jpg": first,
        "cars/golf/2.jpg": photo(2),
        "cars/polo/1.jpg": photo(3),
        "cars/polo/copy.jpg": first,
        "thumbs/golf-small.jpg": resaved.getvalue(),
    }
    photos, outcome = add_photos([], source(tmp_path, files), tmp_path / "photos", car_per="folder")
    assert dict(outcome) == {"added": 3, "duplicate": 1, "near_duplicate": 1}
    assert sorted(p.car_id for p in photos) == [
        "dealer/site:cars/golf",
        "dealer/site:cars/golf",
        "dealer/site:cars/polo",
    ]
    for p in photos:
        assert p.sha256 == hashlib.sha256(files[p.path]).hexdigest() and p.image_id == p.sha256[:16]
        assert (tmp_path / "photos" / f"{p.image_id}.jpg").exists() and (p.width, p.height) == (640, 480)
        assert p.split == split_of(p.car_id)
    by_photo, _ = add_photos([], source(tmp_path, {"a/1.jpg": photo(1), "a/2.jpg": photo(2)}), tmp_path / "p2", "photo")
    assert len({p.car_id for p in by_photo}) == 2


def test_splits_are_by_car_stable_and_close_to_their_shares() -> None:
    cars = [f"car-{i}" for i in range(3000)]
    splits = [split_of(c) for c in cars]
    assert splits == [split_of(c) for c in cars]
    shares = {s: splits.count(s) / len(cars) for s in ("train", "calibration", "test")}
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["calibration"] - 0.1) < 0.02
    row = Photo("i", "car-1", "train", "side", "0", "consensus", "r/r", "c" * 40, "p.jpg", "MIT", "s", 1, 1)
    assert check_splits([row, row]) == []
    assert check_splits([row, replace(row, image_id="j", split="test")]) == ["car-1"]


async def test_fetch_downloads_from_the_commit_checks_sha256_and_skips_what_is_there(tmp_path: Path) -> None:
    good, changed, zipped = photo(5), photo(6), photo(7)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("set/1.jpg", zipped)
    root = "/dealer/site/" + "a" * 40
    served = {f"{root}/cars/golf%201.jpg": good, f"{root}/x.jpg": changed, f"{root}/data/set.zip": archive.getvalue()}
    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.raw_path)
        body = served.get(request.raw_path)
        return web.Response(body=body, content_type="image/jpeg") if body else web.Response(status=404)

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"

    def row(image_id: str, path: str, data: bytes) -> Photo:
        sha = hashlib.sha256(data).hexdigest()
        return Photo(image_id, "car", "train", "", "", "", "dealer/site", "a" * 40, path, "MIT", sha, 640, 480)

    rows = [
        row("ok", "cars/golf 1.jpg", good),
        row("bad", "x.jpg", good),
        row("gone", "y.jpg", good),
        row("zipped", "data/set.zip!/set/1.jpg", zipped),
        row("not-in-zip", "data/set.zip!/set/2.jpg", zipped),
    ]
    try:
        report = await fetch(rows, tmp_path / "photos", base, concurrency=2)
        assert report.fetched == 2 and set(report.failed) == {"bad", "gone", "not-in-zip"}
        assert hits.count(f"{root}/data/set.zip") == 1  # one download for both members
        assert "SHA-256" in report.failed["bad"]
        with Image.open(tmp_path / "photos" / "ok.jpg") as img:
            assert img.size == (640, 480)
        before = len(hits)
        again = await fetch(rows[:1], tmp_path / "photos", base)
        assert again.present == 1 and len(hits) == before
    finally:
        await runner.cleanup()


def test_labels_from_an_export_fill_the_manifest_and_the_split_folders(tmp_path: Path) -> None:
    photos_dir = tmp_path / "photos"
    files = {f"cars/{car}/{i}.jpg": photo(10 * car + i) for car in range(6) for i in range(2)}
    rows, _ = add_photos([], source(tmp_path, files), photos_dir, "folder")
    export = tmp_path / "export" / "train"
    export.mkdir(parents=True)
    with (export / "labels.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("file", "banner", "position", "image_id", "listing_id", "source", "reason"))
        for p in rows[:-1]:  # the last one was discarded by the admin
            writer.writerow(("images/x.jpg", "1", "side", p.image_id, p.car_id, "consensus", "import"))
    manifest = tmp_path / "manifest.csv"
    write_manifest(rows, manifest)
    runner = CliRunner()
    applied = runner.invoke(
        main, ["corpus", "apply-labels", "--manifest", str(manifest), "--export", str(export.parent)]
    )
    assert applied.exit_code == 0, applied.output
    labelled = read_manifest(manifest)
    assert sum(p.labelled for p in labelled) == len(rows) - 1
    counts = write_split_folders(labelled, photos_dir, tmp_path / "splits")
    assert sum(sum(c.values()) for c in counts.values()) == len(rows) - 1
    cars_by_split: dict[str, set[str]] = {}
    for split in ("train", "calibration", "test"):
        with (tmp_path / "splits" / split / "labels.csv").open() as fh:
            for r in csv.DictReader(fh):
                assert Path(r["file"]).is_file() and r["position"] == "side"
                cars_by_split.setdefault(r["car_id"], set()).add(split)
    assert all(len(s) == 1 for s in cars_by_split.values())
    stats = runner.invoke(main, ["corpus", "stats", "--manifest", str(manifest), "--json"])
    assert json.loads(stats.output)["photos"] == len(rows) - 1
    assert apply_labels(labelled, {})[0].position == ""
    discarded = next(p.image_id for p in labelled if not p.labelled)
    merged = apply_labels(labelled, {discarded: ("0", "trunk", "1 consensus")}, keep_unlisted=True)  # a later batch
    assert sorted(p.position for p in merged) == ["side"] * (len(rows) - 1) + ["trunk"]


def test_a_pattern_names_the_car_in_a_path_else_its_folder_or_file() -> None:
    from processor.ml.corpus import car_of

    assert car_of("images/train/9808053-hyundai-minor_scratch.rf.1.jpg", "photo", r"/(\d{5,})-") == "9808053"
    assert car_of("images/train/front.jpg", "photo", r"/(\d{5,})-") == "images/train/front.jpg"
    assert car_of("cars/golf/1.jpg", "folder") == "cars/golf"


async def test_the_demo_streams_whole_real_listings_with_their_labels(tmp_path: Path) -> None:
    from processor.dev.demo import real_listings

    files = {f"cars/{car}/{i}.jpg": photo(100 * car + i) for car in range(4) for i in range(5 if car < 3 else 2)}
    rows, _ = add_photos([], source(tmp_path, files), tmp_path / "photos", "folder")
    labels = {p.image_id: ("1" if p.path.endswith("0.jpg") else "0", "side", "consensus") for p in rows}
    manifest = tmp_path / "manifest.csv"
    write_manifest(apply_labels(rows, labels), manifest)
    real = await real_listings(tmp_path / "photos", 8, lambda _msg: None, manifest)
    assert real is not None
    catalogue, blobs = real
    assert len(catalogue) == 2 and all(len(listing.photos) >= 4 for listing in catalogue)  # whole cars, 4+ photos
    assert {name for listing in catalogue for name, _, _ in listing.photos} == set(blobs)
    assert all(position == "side" for listing in catalogue for _, position, _ in listing.photos)
    assert sum(banner for listing in catalogue for _, _, banner in listing.photos) == 2


def test_stamped_copies_keep_the_position_and_carry_a_banner(tmp_path: Path) -> None:
    from processor.ml.corpus import write_stamped

    split = tmp_path / "train"
    (split).mkdir()
    (split / "a.jpg").write_bytes(photo(1))
    (split / "b.jpg").write_bytes(photo(2))
    (split / "labels.csv").write_text(
        f"file,banner,position,image_id,car_id\n{split / 'a.jpg'},0,rear,a,car-a\n{split / 'b.jpg'},1,side,b,car-b\n"
    )
    assert write_stamped(split, tmp_path / "stamped", unseen=True) == 1  # only the banner-free photo
    rows = list(csv.DictReader(io.StringIO((tmp_path / "stamped" / "labels.csv").read_text())))
    assert [(r["banner"], r["position"], r["car_id"]) for r in rows] == [("1", "rear", "car-a")]
    with Image.open(tmp_path / "stamped" / rows[0]["file"]) as stamped, Image.open(split / "a.jpg") as original:
        diff = np.abs(np.asarray(stamped, dtype=np.int16) - np.asarray(original, dtype=np.int16))
        assert (diff.max(axis=2) > 60).mean() > 0.01  # a visible overlay, not just re-encoding


def test_a_folder_of_many_cars_goes_to_train(tmp_path: Path) -> None:
    files = {f"uploads/{i}.jpg": photo(300 + i) for i in range(6)}
    rows, _ = add_photos([], source(tmp_path, files), tmp_path / "photos", "folder", mixed=True)
    assert {p.car_id for p in rows} == {"mixed:dealer/site:uploads"} and {p.split for p in rows} == {"train"}


def test_subtle_site_overlays_are_small_or_faint_but_visible() -> None:
    from processor.ml.synth import banners

    for seed in range(24):
        original = Image.new("RGB", (640, 480), (90, 110, 130))
        img = original.copy()
        style = banners.stamp_subtle(random.Random(seed), img)
        diff = np.abs(np.asarray(img, dtype=np.int16) - np.asarray(original, dtype=np.int16)).max(axis=2)
        changed = (diff > 25).mean()
        assert 0.0005 < changed < 0.2, (style, changed)  # there, and far smaller than a drawn banner


def test_heroes_are_judged_only_where_a_banner_free_exterior_photo_exists() -> None:
    from types import SimpleNamespace

    from processor.ml.dataset import Labelled
    from processor.ml.realeval import heroes
    from processor.model import Prediction

    def said(position: str, banner: float = 0.0) -> Prediction:
        return Prediction(banner, {position: 0.9, "other": 0.1})

    shots = [  # (truth position, truth banner, the model's position, the model's banner score)
        *[("engine", 0, "engine", 0.0)] * 5,  # a repair page: no exterior hero is possible
        *[("interior", 0, "interior", 0.0)] * 4 + [("front", 0, "front", 0.0)],  # right
        *[("engine", 0, "front_three_quarter", 0.0)] + [("side", 0, "rear", 0.0)] * 4,  # wrong: engine on top
    ]
    items = [Labelled(Path(f"{k}.jpg"), b, p) for k, (p, b, _, _) in enumerate(shots)]
    cars = ["repair"] * 5 + ["right"] * 5 + ["wrong"] * 5
    predictions = [said(p, s) for _, _, p, s in shots]
    info = SimpleNamespace(position_floor=0.0, version="1")
    report = heroes(items, cars, predictions, SimpleNamespace(banner_threshold=0.5, info=info))  # type: ignore[arg-type]
    assert (report["listings"], report["exterior_hero"]) == (2, 1)
    assert report["not_judged_no_banner_free_exterior"] == 1
    assert report["wrong_heroes"] == {"engine": 1}


def test_held_out_sources_leave_every_split_for_other_sources(tmp_path: Path) -> None:
    photos_dir = tmp_path / "photos"
    rows: list[Photo] = []
    for n, repo in enumerate(("dealer/one", "dealer/two")):
        files = {f"cars/{car}/{i}.jpg": photo(100 * n + 10 * car + i) for car in range(5) for i in range(2)}
        candidates = [replace(c, repo=repo) for c in source(tmp_path / repo, files)]
        rows, _ = add_photos(rows, candidates, photos_dir, "folder")
    rows = [replace(p, banner="0", position="side", labellers="1 consensus") for p in rows]
    manifest, sources = tmp_path / "manifest.csv", tmp_path / "held-out.txt"
    write_manifest(rows, manifest)
    sources.write_text("# kept out\ndealer/two  # a comment\n\n")
    runner = CliRunner()
    args = ["corpus", "splits", "--manifest", str(manifest), "--photos", str(photos_dir), "--out", str(tmp_path / "s")]
    done = runner.invoke(main, [*args, "--hold-out-sources", str(sources)])
    assert done.exit_code == 0, done.output
    repo_of = {p.image_id: p.repo for p in rows}
    seen: dict[str, set[str]] = {}
    for split in ("train", "calibration", "test", "other-sources"):
        with (tmp_path / "s" / split / "labels.csv").open() as fh:
            for r in csv.DictReader(fh):
                seen.setdefault(split, set()).add(repo_of[r["image_id"]])
    assert seen.pop("other-sources") == {"dealer/two"}
    assert set().union(*seen.values()) == {"dealer/one"}
    sources.write_text("dealer/three\n")
    refused = runner.invoke(main, [*args, "--hold-out-sources", str(sources)])
    assert refused.exit_code != 0 and "dealer/three" in refused.output


def test_the_real_report_counts_false_alarms_apart_on_photos_of_a_car(tmp_path: Path) -> None:
    import shutil

    from processor.ml.evaluate import predict_items
    from processor.ml.realeval import read_split, real_report
    from processor.model import Classifier
    from processor.settings import DEFAULT_MODEL_DIR

    split = tmp_path / "test"
    split.mkdir()
    rows = []
    for k in range(12):
        (split / f"{k}.jpg").write_bytes(photo(k))
        rows.append(f"{k}.jpg,{int(k % 4 == 0)},{'other' if k % 3 == 0 else 'side'},{k},car-{k // 6}")
    (split / "labels.csv").write_text("file,banner,position,image_id,car_id\n" + "\n".join(rows) + "\n")
    model = tmp_path / "cnn"  # small and quick, with its threshold moved to the middle of its scores here
    shutil.copytree(DEFAULT_MODEL_DIR.parent / "cnn", model)
    items, _ = read_split(split)
    scores = [p.banner_score for p in predict_items(Classifier(model), items)]
    meta = json.loads((model / "metadata.json").read_text())
    meta["banner_threshold"] = float(np.median(scores))
    (model / "metadata.json").write_text(json.dumps(meta))
    called = [s >= meta["banner_threshold"] for s in scores]
    report = real_report(model, split)["banner"]
    clean = [k for k in range(12) if k % 4]
    clean_cars = [k for k in clean if k % 3]
    assert report["false_alarms"] == round(sum(called[k] for k in clean) / len(clean), 4)
    assert report["false_alarms_on_car_photos"] == round(sum(called[k] for k in clean_cars) / len(clean_cars), 4)
    assert report["photos_with_overlay"] == 3
