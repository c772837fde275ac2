"""The labelling app in a real browser (headless Chromium through Playwright).

An admin creates three labellers and fills the queue; the three label with the keyboard; one
image reaches consensus, one goes to the admin's review queue; the export holds both. Set
LABELLING_SCREENSHOTS=docs/screenshots to refresh the README's screenshots.
"""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from processor.dev.imageserver import ImageServer
from processor.labelling import guidelines, sampling
from processor.labelling.export import export
from processor.labelling.tasks import Answer, next_task, record_answer, resolve

from .labelling_support import (
    PASSWORD,
    LabelDb,
    RunningApp,
    label_app_fixture,  # noqa: F401
    label_db_fixture,  # noqa: F401
)

CHROMIUM = os.environ.get("PROCESSOR_TEST_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("LABELLING_SCREENSHOTS")
# Positions take the keys 1 2 3 ... walking round the car: front is 1, side 3, rear 5.
KEYS = {  # (labeller, image) -> keys pressed
    ("lab0", "agree"): "n1",
    ("lab1", "agree"): "n1",
    ("lab2", "agree"): "n1",
    ("lab0", "disagree"): "y1",
    ("lab1", "disagree"): "n3",  # two different labels of three: cannot reach three, so to review
    ("lab0", "skipped"): "s",  # a skip uses no slot: the image stays open for a third labeller
    ("lab1", "skipped"): "n5",
    ("lab2", "skipped"): "n5",
    ("lab0", "unsure"): "u",  # with K = N = 3, one "unsure" sends it to review
}
SEEN = {"lab0": ["agree", "disagree", "skipped", "unsure"], "lab1": ["agree", "disagree", "skipped"]}


@pytest.fixture
def chromium() -> str:
    """The system's Chromium (Playwright's own browser download does not work offline); CI must have it."""
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") or os.environ.get("PROCESSOR_TEST_REQUIRE_TOOLS"):
            pytest.fail(f"no Chromium at {CHROMIUM} (.ci/run installs it)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:  # playwright creates the folder
        await page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


async def open_page(browser: Any, base_url: str) -> Any:
    context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    page.on("dialog", lambda dialog: pytest.fail(f"a script ran: {dialog.message}"))
    return page


async def sign_in(page: Any, username: str) -> None:
    await page.goto("/sign-in")
    await page.fill("input[name=username]", username)
    await page.fill("input[name=password]", PASSWORD)
    async with page.expect_navigation():
        await page.click("button:has-text('Sign in')")


async def wait_for_image(page: Any, selector: str) -> None:
    await page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0; }", arg=selector
    )


async def label_everything(page: Any, username: str, first: bool) -> list[str]:
    """Answer each image the page offers with the keys of KEYS; return the images in the order shown."""
    seen: list[str] = []
    while await page.locator("#answer").count():
        image_id = await page.locator("figcaption code").nth(1).inner_text()
        seen.append(image_id)
        await wait_for_image(page, ".photo img")
        if first and not seen[:-1]:
            await screenshot(page, "labelling")
        async with page.expect_navigation():
            for key in KEYS[(username, image_id)]:
                await page.keyboard.press(key)
    assert "Nothing to label" in await page.content()
    return seen


async def admin_creates_labellers_and_fills_the_queue(page: Any) -> None:
    await sign_in(page, "boss")
    assert page.url.endswith("/admin"), await page.content()
    assert await page.title() == "Admin · listing images"
    for name in ("lab0", "lab1", "lab2"):
        await page.fill("#new-user input[name=username]", name)
        await page.fill("#new-user input[name=password]", PASSWORD)
        async with page.expect_navigation():
            await page.click("button:has-text('Create account')")
        assert "Account created." in await page.content()
    await page.fill("input[name=count]", "10")
    await page.fill("input[name=random_share]", "0")
    async with page.expect_navigation():
        await page.click("button:has-text('Add to the queue')")
    assert await page.inner_text("#count-open") == "4"


async def test_three_labellers_reach_consensus_and_the_admin_reviews_the_rest(
    label_db: LabelDb, image_server: ImageServer, jpegs: dict[str, bytes], browser: Any, tmp_path: Path
) -> None:
    db = label_db
    db.config = db.config.with_overrides(agree=3, max_labellers=3)  # three people: all must agree
    names = sorted(jpegs)
    for image_id, name in zip(("agree", "disagree", "skipped", "unsure"), names, strict=False):
        await db.classify(image_id, image_server.url(name), banner_score=0.5, listing_id=f"L-{image_id}")
    await db.user("boss", "admin")  # the first admin comes from `processor label add-user --admin`
    app = await start_app(db)
    try:
        admin = await open_page(browser, app.base_url)
        await admin_creates_labellers_and_fills_the_queue(admin)
        for i in range(3):
            page = await open_page(browser, app.base_url)
            await sign_in(page, f"lab{i}")
            assert page.url.endswith("/label")
            seen = await label_everything(page, f"lab{i}", first=i == 0)
            assert sorted(seen) == SEEN.get(f"lab{i}", ["agree", "skipped"])
        await admin.goto("/admin")
        counts = {s: await admin.inner_text(f"#count-{s}") for s in ("open", "final", "review")}
        assert counts == {"open": "1", "final": "1", "review": "2"}
        await screenshot(admin, "admin")
        await admin.goto("/admin/review")
        assert await admin.locator("section.review").count() == 2
        await wait_for_image(admin, "section.review img")
        await screenshot(admin, "review")
        disputed = admin.locator("section.review", has_text="image disagree")
        assert "1 \u00d7 banner, front" in await disputed.inner_text()
        by_labeller = await disputed.locator("table.by-labeller").inner_text()  # who answered what
        assert "lab0\tbanner, front" in by_labeller and "lab1\tno banner, side" in by_labeller, by_labeller
        assert await disputed.locator("input[name=position]:checked").count() == 0  # no default position
        assert "image unsure" in await admin.inner_text("#current")  # the oldest first takes the keys
        async with admin.expect_navigation():
            await admin.keyboard.press("Delete")  # discard
        assert "image disagree" in await admin.inner_text("#current")
        async with admin.expect_navigation():
            for key in "n3":  # no banner, side: both chosen, so decided
                await admin.keyboard.press(key)
        assert "Nothing to review." in await admin.content()
        await admin.goto("/admin")
        assert (await admin.inner_text("#count-resolved"), await admin.inner_text("#count-discarded")) == ("1", "1")
        assert "50% (1 of 2)" in await admin.inner_text("table.people")  # lab0: agreed on one of two
        lab0 = admin.locator("table.people tr", has_text="lab0")
        assert (await lab0.locator("td.time").inner_text()).endswith(" s")  # median time per image
        lab2 = admin.locator("table.people tr", has_text="lab2")
        await lab2.locator("form.reset input[name=password]").fill("a-new-password-for-lab2")
        async with admin.expect_navigation():
            await lab2.locator("form.reset button").click()
        assert "Password changed" in await admin.content()
        again = await open_page(browser, app.base_url)
        await again.goto("/sign-in")
        await again.fill("input[name=username]", "lab2")
        await again.fill("input[name=password]", "a-new-password-for-lab2")
        async with again.expect_navigation():
            await again.click("button:has-text('Sign in')")
        assert again.url.endswith("/label")
    finally:
        await app.runner.cleanup()
    summary = await export(db.pool, db.settings, tmp_path, 20)
    assert summary.train + summary.holdout == 2 and not summary.failed
    rows = []
    for part in ("train", "holdout"):
        with (tmp_path / part / "labels.csv").open() as fh:
            rows += [(r["image_id"], r["banner"], r["position"], r["source"]) for r in csv.DictReader(fh)]
    assert sorted(rows) == [("agree", "0", "front", "consensus"), ("disagree", "0", "side", "admin")]


async def test_a_hostile_listing_id_and_url_stay_inert_in_the_browser(
    label_db: LabelDb, label_app: RunningApp, browser: Any
) -> None:
    await label_db.classify(
        '"><img src=x onerror=alert(2)>', "javascript:alert(3)", 0.5, listing_id="<script>alert(1)</script>"
    )
    await label_db.user("lab")
    await sampling.fill(label_db.pool, label_db.settings.postgres_table, 10, 0.0, 0.54)
    page = await open_page(browser, label_app.base_url)  # any dialog fails the test
    await sign_in(page, "lab")
    captions = page.locator("figcaption code")
    assert await captions.nth(0).inner_text() == "<script>alert(1)</script>"
    assert await captions.nth(1).inner_text() == '"><img src=x onerror=alert(2)>'
    assert await page.locator("img").count() == 1  # the id did not become an element
    assert await page.locator("script:not([src])").count() == 0
    inert = "[...document.querySelectorAll('[href],[src]')].every(e => !/javascript:/i.test(e.outerHTML))"
    assert await page.evaluate(inert)


class StartedApp:
    def __init__(self, runner: Any, base_url: str) -> None:
        self.runner, self.base_url = runner, base_url


async def start_app(db: LabelDb) -> StartedApp:
    """The app with the test's own (possibly changed) config."""
    from aiohttp import web

    from processor.labelling.server import create_app

    runner = web.AppRunner(create_app(db.settings, db.config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return StartedApp(runner, f"http://127.0.0.1:{runner.addresses[0][1]}")


async def test_backspace_takes_back_a_wrong_key_and_the_image_comes_back(
    label_db: LabelDb, image_server: ImageServer, jpegs: dict[str, bytes], browser: Any
) -> None:
    db = label_db
    names = sorted(jpegs)
    for i in range(2):
        await db.classify(f"img-{i}", image_server.url(names[i]), banner_score=0.5, listing_id="L")
    await db.user("lab")
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, 0.54)
    app = await start_app(db)
    try:
        page = await open_page(browser, app.base_url)
        await sign_in(page, "lab")
        assert await page.locator("#undo").count() == 0  # nothing answered yet
        first = await page.locator("figcaption code").nth(1).inner_text()
        async with page.expect_navigation():
            for key in "n3":  # meant front (1), pressed side (3)
                await page.keyboard.press(key)
        assert await page.locator("figcaption code").nth(1).inner_text() != first
        async with page.expect_navigation():
            await page.keyboard.press("Backspace")
        assert await page.locator("figcaption code").nth(1).inner_text() == first  # back, to answer again
        assert await page.locator("#undo").count() == 0
        async with page.expect_navigation():
            for key in "n1":
                await page.keyboard.press(key)
        async with page.expect_navigation():
            await page.keyboard.press("s")
        assert "Nothing to label" in await page.content()
        async with page.expect_navigation():
            await page.click("#undo button")  # the button does what Backspace does
        assert await page.locator("#answer").count() == 1
    finally:
        await app.runner.cleanup()
    rows = await db.pool.fetch("SELECT image_id, verdict, position FROM label_answers ORDER BY image_id")
    assert [(r["image_id"], r["verdict"], r["position"]) for r in rows] == [
        (first, "label", "front"),
        (({"img-0", "img-1"} - {first}).pop(), None, None),  # the skip, taken back
    ]
    assert await db.pool.fetchval("SELECT sum(votes + skips) FROM label_tasks") == 1


async def test_a_suggestion_taken_with_one_key_the_zoom_the_listing_and_the_next_image_fetched_ahead(
    label_db: LabelDb, image_server: ImageServer, jpegs: dict[str, bytes], browser: Any
) -> None:
    db = label_db
    db.config = db.config.with_overrides(agree=1, max_labellers=1, suggestion_hidden_share=0.0)
    names = sorted(jpegs)
    for i in range(3):
        await db.classify(f"img-{i}", image_server.url(names[i]), banner_score=0.5, position="side", listing_id="L")
    await db.user("lab")
    await sampling.fill(db.pool, db.settings.postgres_table, 2, 0.0, 0.54)  # img-2 stays out of the queue
    app = await start_app(db)
    try:
        page = await open_page(browser, app.base_url)
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await sign_in(page, "lab")
        first = await page.locator("figcaption code").nth(1).inner_text()
        other = ({"img-0", "img-1"} - {first}).pop()
        await wait_for_image(page, ".photo img")
        assert "The model suggests no banner, side" in await page.inner_text("#suggestion")
        await page.wait_for_function(
            "n => performance.getEntriesByType('resource').some(e => e.name.endsWith(n))", arg=f"/image?id={other}"
        )  # fetched ahead
        await page.keyboard.press("f")
        assert "zoomed" in (await page.get_attribute("#photo", "class") or "")
        assert (await page.get_attribute(".photo img", "src") or "").endswith("&full=1")
        await wait_for_image(page, ".photo img")
        await screenshot(page, "labelling-zoom")
        await page.keyboard.press("f")  # and back
        assert "zoomed" not in (await page.get_attribute("#photo", "class") or "")
        assert await page.locator("#listing img[src]").count() == 0  # on demand only
        await page.keyboard.press("l")
        assert await page.locator("#listing[open] li").count() == 3  # the queued two and the listing's third
        for i in range(3):
            await wait_for_image(page, f"#listing li:nth-child({i + 1}) img")
        await screenshot(page, "labelling-listing")
        async with page.expect_navigation():
            await page.keyboard.press("a")  # the suggestion, accepted with one key
        assert await page.locator("figcaption code").nth(1).inner_text() == other
        assert f"{app.base_url}/image?id={other}" in requested
    finally:
        await app.runner.cleanup()
    row = await db.pool.fetchrow("SELECT * FROM label_answers WHERE image_id = $1", first)
    assert (row["verdict"], row["banner"], row["position"], row["suggestion_shown"]) == ("label", False, "side", True)
    assert await db.pool.fetchval("SELECT status FROM label_tasks WHERE image_id = $1", first) == "final"


async def answer_as(db: LabelDb, user_id: int, labels: dict[str, tuple[bool, str]], version: int) -> None:
    """This labeller answers every image the queue gives them with ``labels`` (image id -> banner, position)."""
    while (task := await next_task(db.pool, user_id, db.config)) is not None:
        banner, position = labels[task.image_id]
        await record_answer(db.pool, user_id, Answer(task.image_id, "label", banner, position, version), db.config)


def zip_rows(path: Path) -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """A downloaded export: its file names, and every labels.csv row of train/ and holdout/."""
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        rows = []
        for part in ("train", "holdout"):
            with archive.open(f"{part}/labels.csv") as fh:
                reader = csv.DictReader(io.TextIOWrapper(fh, "utf-8"))
                rows += [(r["image_id"], r["banner"], r["position"], r["source"]) for r in reader]
    return names, sorted(rows)


async def test_the_admin_sees_positions_by_labeller_searches_discards_in_bulk_and_downloads_the_export(
    label_db: LabelDb, image_server: ImageServer, jpegs: dict[str, bytes], browser: Any, tmp_path: Path
) -> None:
    db = label_db
    db.config = db.config.with_overrides(agree=2, max_labellers=2)
    names = sorted(jpegs)
    for i, (image_id, listing) in enumerate((("img-a", "L-1"), ("img-b", "L-1"), ("img-c", "L-2"))):
        await db.classify(image_id, image_server.url(names[i]), banner_score=0.5, listing_id=listing)
    admin_id = await db.user("boss", "admin")
    lab0, lab1 = await db.user("lab0"), await db.user("lab1")
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, 0.54)
    version = (await guidelines.current(db.pool)).version
    truth = {"img-a": (False, "front"), "img-b": (False, "side"), "img-c": (True, "rear")}
    await answer_as(db, lab1, truth, version)
    await answer_as(db, lab0, {**truth, "img-b": (False, "front")}, version)  # lab0 takes a side view for a front
    assert await db.pool.fetchval("SELECT image_id FROM label_tasks WHERE status = 'review'") == "img-b"
    await resolve(db.pool, admin_id, "img-b", (False, "side"))
    await db.classify("img-d", image_server.url(names[3]), banner_score=0.5, listing_id="L-2")
    await sampling.fill(db.pool, db.settings.postgres_table, 10, 0.0, 0.54)  # img-d: queued later, still open
    app = await start_app(db)
    try:
        admin = await open_page(browser, app.base_url)
        await sign_in(admin, "boss")
        # per-position agreement by labeller, and the matrix behind it
        row0 = admin.locator("#confusion table.confusion tr[data-user=lab0]")
        header = await admin.locator("#confusion table.confusion thead").inner_text()
        assert header.strip().split("\t")[1:] == ["banner", "front", "side", "rear"], header
        assert (await row0.inner_text()).strip().split("\t")[1:] == ["3/3 100%", "1/1 100%", "0/1 0%", "1/1 100%"]
        row1 = admin.locator("#confusion table.confusion tr[data-user=lab1]")
        assert (await row1.inner_text()).strip().split("\t")[1:] == ["3/3 100%", "1/1 100%", "1/1 100%", "1/1 100%"]
        matrix = admin.locator("details.matrix[data-user=lab0]")
        await matrix.locator("summary").click()
        side_row = await matrix.locator("tbody tr", has_text="side").inner_text()
        assert side_row.strip("\n").split("\t") == ["side", "1", "", ""], side_row  # final side, lab0 said front
        await screenshot(admin, "admin-confusion")
        # search from the admin page: by listing, then by state and labeller on the images page
        await admin.fill("#search input[name=q]", "L-1")
        async with admin.expect_navigation():
            await admin.click("#search button")
        assert sorted(await admin.locator("table.images tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.image)")) == ["img-a", "img-b"]  # fmt: skip
        assert "lab0: no banner, front" in await admin.locator("tr[data-image=img-b]").inner_text()
        await screenshot(admin, "admin-images")
        await admin.goto("/admin/images?state=open")
        assert await admin.inner_text("#found") == "1 image(s)."
        assert await admin.locator("tr[data-image=img-d] td.state").inner_text() == "open"
        await admin.goto("/admin/images?labeller=lab0&state=resolved")
        assert await admin.locator("table.images tbody tr").count() == 1
        await admin.goto("/admin/images?q=IMG-C")  # case-insensitive, a part of the id
        assert await admin.locator("tr[data-image=img-c] td.state").inner_text() == "final"
        # bulk discard: the listing L-2 (one final, one open image), every row ticked with one box
        await admin.goto("/admin/images?q=L-2")
        await admin.check("#all")
        async with admin.expect_navigation():
            await admin.click("#discard")
        assert "2 image(s) discarded." in await admin.inner_text("p.notice")
        assert "q=L-2" in admin.url  # back to the same search
        assert await admin.locator("table.images td.state").all_inner_texts() == ["discarded", "discarded"]
        assert await admin.locator("table.images input[name=image_id]:checked").count() == 0
        async with admin.expect_navigation():
            await admin.click("#discard")  # nothing ticked: refused, nothing changes
        assert "Tick 1-500 images" in await admin.inner_text("p.error")
        # export from the page: the discarded final image is not in it
        await admin.goto("/admin")
        assert await admin.inner_text("#count-discarded") == "2"
        async with admin.expect_download() as download_info:
            await admin.click("#export button")
        download = await download_info.value
        assert download.suggested_filename.startswith("labels-") and download.suggested_filename.endswith(".zip")
        await download.save_as(tmp_path / "labels.zip")
        files, rows = zip_rows(tmp_path / "labels.zip")
        assert rows == [("img-a", "0", "front", "consensus"), ("img-b", "0", "side", "admin")]
        assert "manifest.json" in files and not any("/images/" in f for f in files)
        await admin.check("#export input[name=images]")
        await admin.fill("#export input[name=holdout_percent]", "0")
        async with admin.expect_download() as download_info:
            await admin.click("#export button")
        await (await download_info.value).save_as(tmp_path / "with-images.zip")
        files, rows = zip_rows(tmp_path / "with-images.zip")
        assert len([f for f in files if f.startswith("train/images/")]) == 2 and len(rows) == 2
        # a label given under old rules: the discarded final image goes back to review, its answers with it
        await admin.goto("/admin/images?q=img-c")
        await admin.check("tr[data-image=img-c] input[name=image_id]")
        async with admin.expect_navigation():
            await admin.click("#to-review")
        assert "1 image(s) sent to review." in await admin.inner_text("p.notice")
        assert await admin.locator("tr[data-image=img-c] td.state").inner_text() == "review"
        await admin.goto("/admin/review")
        assert "img-c" in await admin.content()
        # a labeller reaches none of it, and the admin's forms need the CSRF token
        labeller = await open_page(browser, app.base_url)
        await sign_in(labeller, "lab0")
        token = await labeller.locator("input[name=csrf]").first.get_attribute("value")
        for path, form in (
            ("/admin/export", {"holdout_percent": "20"}),
            ("/admin/images/discard", {"image_id": "img-a"}),
            ("/admin/images/review", {"image_id": "img-a"}),
        ):
            response = await labeller.request.post(path, form={"csrf": token or "", **form})
            assert response.status == 403, path
        assert (await labeller.request.get("/admin/images", max_redirects=0)).status == 403
        response = await admin.request.post("/admin/images/discard", form={"image_id": "img-a"})
        assert response.status == 403
    finally:
        await app.runner.cleanup()
    assert await db.pool.fetchval("SELECT status FROM label_tasks WHERE image_id = 'img-a'") == "final"
    states = await db.pool.fetch("SELECT image_id, decided_by FROM label_tasks WHERE status = 'discarded'")
    assert sorted((r["image_id"], r["decided_by"]) for r in states) == [("img-d", admin_id)]
    back = await db.pool.fetchrow(
        "SELECT status, banner, position, decided_by FROM label_tasks WHERE image_id = 'img-c'"
    )
    assert tuple(back) == ("review", None, None, None)
    assert await db.pool.fetchval("SELECT count(*) FROM label_answers WHERE image_id = 'img-c'") > 0


async def test_the_labelling_speed_benchmark_counts_keys_and_round_trips(label_db: LabelDb, chromium: str) -> None:
    """A smoke-size run of benchmarks/labelling_speed.py, so it cannot rot (its figures live in the docs)."""
    from benchmarks import labelling_speed

    config = label_db.config.with_overrides(agree=1, max_labellers=1, suggestion_hidden_share=0.0)
    figures = await labelling_speed.measure(label_db.settings, config, 5, "smoke")
    summary = figures.summary()
    assert summary["images"] == 5 and figures.requests["answer"] == 5
    # photos 0-4: the model is wrong about the banner of photo 2 only, so 4 single keys and one pair
    assert (summary["suggestions_shown"], summary["suggestions_accepted"], figures.keys) == (5, 4, 6)
    assert 2 <= summary["round_trips_before_next_photo"] < 3  # the answer, its redirect; photos fetched ahead
    assert len(figures.ms_per_image) == 5
