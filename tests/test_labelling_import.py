"""Photos imported into the labelling app and labelled in batches through its JSON interface."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from processor.errors import BlockedUrl
from processor.labelling.agreement import cohen_kappa, pairwise
from processor.labelling.images import local_path
from processor.labelling.importing import (
    ManifestError,
    Overlap,
    import_rows,
    register_dir,
    rows_from_folder,
    rows_from_manifest,
)
from processor.labelling.sheets import AppClient, Sheet, SheetError, claim_sheet, parse_answers

from .labelling_support import (
    PASSWORD,
    POSITIONS,
    LabelDb,
    RunningApp,
    label_app_fixture,  # noqa: F401
    label_db_fixture,  # noqa: F401
)


def photo(seed: int) -> bytes:
    rng = random.Random(seed)
    out = io.BytesIO()
    Image.new("RGB", (320, 240), tuple(rng.randrange(256) for _ in range(3))).save(out, "JPEG")  # type: ignore[arg-type]
    return out.getvalue()


def photo_folder(root: Path, cars: int = 3, per_car: int = 4) -> Path:
    for car in range(cars):
        (root / f"car-{car}").mkdir(parents=True)
        for i in range(per_car):
            (root / f"car-{car}" / f"{i}.jpg").write_bytes(photo(car * 100 + i))
    (root / "car-0" / "copy.jpg").write_bytes(photo(0))  # the same photo twice is one task
    (root / "notes.txt").write_text("not a photo")
    return root


def test_a_folder_gives_one_row_per_distinct_photo_with_its_sub_folder_as_listing(tmp_path: Path) -> None:
    rows = rows_from_folder(photo_folder(tmp_path / "photos"))
    assert len(rows) == 12
    assert {r.listing_id for r in rows} == {"car-0", "car-1", "car-2"}
    assert all(r.url.startswith("file:///") for r in rows)


def test_a_manifest_needs_ids_and_a_source_inside_its_root(tmp_path: Path) -> None:
    root = photo_folder(tmp_path / "photos")
    good = tmp_path / "good.csv"
    good.write_text("image_id,car_id,file,url\na,car-a,car-0/0.jpg,\nb,car-b,,https://cdn.example/b.jpg\n")
    rows = rows_from_manifest(good, root)
    assert [(r.image_id, r.listing_id) for r in rows] == [("a", "car-a"), ("b", "car-b")]
    assert rows[1].url == "https://cdn.example/b.jpg"
    for body, why in (
        ("image_id,car_id,file\na,car-a,../../etc/passwd\n", "not a file under"),
        ("image_id,car_id,url\na,car-a,ftp://x/y.jpg\n", "http or https"),
        ("image_id,car_id,file\n,car-a,car-0/0.jpg\n", "required"),
    ):
        bad = tmp_path / "bad.csv"
        bad.write_text(body)
        with pytest.raises(ManifestError, match=why):
            rows_from_manifest(bad, root)


def test_the_app_reads_files_only_under_imported_folders(tmp_path: Path) -> None:
    inside = tmp_path / "photos" / "a.jpg"
    inside.parent.mkdir()
    inside.write_bytes(photo(1))
    assert local_path(inside.as_uri(), [tmp_path / "photos"]) == inside
    with pytest.raises(BlockedUrl):
        local_path((tmp_path / "photos" / ".." / "secret.jpg").as_uri(), [tmp_path / "photos"])
    with pytest.raises(BlockedUrl):
        local_path(inside.as_uri(), [])


def test_answer_lines_accept_groups_abbreviations_and_banners() -> None:
    sheet = Sheet({1: "a", 2: "b", 3: "c", 4: "d", 5: "e"}, 7, POSITIONS)
    answers = parse_answers("1,2 f34   # two three-quarters\n3 dash banner\n4 unsure\n\n5 eng b\n", sheet)
    assert [(a["image_id"], a.get("position"), a.get("banner"), a["verdict"]) for a in answers] == [
        ("a", "front_three_quarter", False, "label"),
        ("b", "front_three_quarter", False, "label"),
        ("c", "dashboard", True, "label"),
        ("d", None, None, "unsure"),
        ("e", "engine", True, "label"),
    ]
    assert all(a["guidelines_version"] == 7 for a in answers)
    for text, why in (("9 side", "no photo 9"), ("1 side\n1 rear", "twice"), ("1 r", "ambiguous"), ("1 car", "not a")):
        with pytest.raises(SheetError, match=why):
            parse_answers(text, sheet)


def test_cohen_kappa_matches_the_textbook_example() -> None:
    # 50 pairs: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> po 0.7, pe 0.5, kappa 0.4
    pairs = [(1, 1)] * 20 + [(1, 0)] * 5 + [(0, 1)] * 10 + [(0, 0)] * 15
    observed, kappa = cohen_kappa(pairs)
    assert observed == pytest.approx(0.7) and kappa == pytest.approx(0.4)


async def test_a_small_team_labels_an_import_in_batches_and_measures_its_agreement(
    label_db: LabelDb, label_app: RunningApp, tmp_path: Path
) -> None:
    folder = photo_folder(tmp_path / "photos").resolve()
    rows = rows_from_folder(folder)
    await register_dir(label_db.pool, folder)
    done = await import_rows(label_db.pool, rows, Overlap(labellers=1, second_share=0.5))
    assert done.added == 12 and 0 < done.double < 12
    again = await import_rows(label_db.pool, rows, Overlap(labellers=1, second_share=0.5))
    assert again.added == 0 and again.already_queued == 12
    for name in ("ann", "ben"):
        await label_db.user(name)

    async def label_all(name: str, answer: str) -> int:
        answered = 0
        async with AppClient(label_app.base_url) as client:
            await client.sign_in(name, PASSWORD)
            while True:
                png, n = await claim_sheet(client, 5, tmp_path / name, columns=3, cell_px=120)
                if n == 0:
                    return answered
                assert png.exists() and len(list((tmp_path / name / png.stem).glob("*.jpg"))) == n
                sheet = Sheet.load(png.with_suffix(".json"))
                reply = await client.submit(parse_answers(answer.format(all=",".join(map(str, sheet.numbers))), sheet))
                assert reply == {"saved": n, "errors": []}
                answered += n

    assert await label_all("ann", "{all} side") == 12  # every photo once
    assert await label_all("ben", "{all} rear banner") == done.double  # only the second-labeller share
    status = dict(await label_db.pool.fetch("SELECT status, count(*) FROM label_tasks GROUP BY status"))
    assert status == {"final": 12 - done.double, "review": done.double}  # ben never agreed with ann
    report = await pairwise(label_db.pool)
    assert report.images == done.double
    assert [(q.name, q.observed) for q in report.questions] == [("banner", 0.0), ("position", 0.0)]
    assert report.disagreements == {("rear", "side"): done.double}
