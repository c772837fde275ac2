"""Labelling speed: key presses and page round trips per answered image on the label page, before and after.

A scripted labeller in headless Chromium (the system's, ``--chromium``) answers the same small queue with
each version of the app: N photos, mostly without a banner, the model right about most of them. It knows
the true label of every photo; it accepts the model's suggestion with ``a`` when one is shown and right,
and otherwise presses the banner key and the position key. Counted per answered image, from the sign-in
to the "nothing to label" page: key presses, HTTP requests that reached the app by kind (a counting
middleware; the sign-in itself left out), and the sequential round trips before the next photo shows (the
answer's POST, the redirected GET, and the photo's GET unless it was fetched ahead).
Wall time per image (key press to the next photo shown) is printed too, but it depends on the machine.

    python -m benchmarks.labelling_speed --before /tmp/old --json speed.json   # a worktree of an old commit

Each version runs in a child process whose ``processor`` package comes from that tree (``PYTHONPATH``),
against a database of its own on one embedded Postgres; ``--dsn`` uses a running Postgres instead.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("PROCESSOR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PASSWORD = "correct horse battery"
PHOTO_SHOWN = "() => { const i = document.querySelector('.photo img'); return i && i.complete && i.naturalWidth > 0; }"
CYCLE = ("front", "side", "rear", "front_three_quarter", "rear_three_quarter", "interior", "dashboard")


@dataclass(frozen=True, slots=True)
class Photo:
    """A photo of the scenario: its true label and what the model said."""

    image_id: str
    banner: bool
    position: str
    model_banner_score: float
    model_position: str

    @property
    def model_right(self) -> bool:
        return (self.model_banner_score >= 0.5) == self.banner and self.model_position == self.position


def scenario(images: int) -> list[Photo]:
    """Photos 0..images-1: a banner on one in ten; the model wrong about the position of one in ten and
    about the banner of another one in ten (right about 80 %)."""
    photos = []
    for i in range(images):
        banner, position = i % 10 == 4, CYCLE[i % len(CYCLE)]
        model_position = ("side" if position != "side" else "front") if i % 10 == 7 else position
        wrong_banner = i % 10 == 2
        score = 0.9 if banner != wrong_banner else 0.1
        photos.append(Photo(f"bench-{i:03d}", banner, position, score, model_position))
    return photos


@dataclass
class Figures:
    """One version's run."""

    version: str
    images: int = 0
    keys: int = 0
    requests: Counter[str] = field(default_factory=Counter)  # by kind: answer, page, image, static, other
    photo_on_critical_path: int = 0  # photos first requested after the answer that led to them
    suggestions_shown: int = 0
    suggestions_accepted: int = 0
    ms_per_image: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        n = max(self.images, 1)
        later = max(self.images - 1, 1)  # the first photo is on screen before counting starts
        return {
            "version": self.version,
            "images": self.images,
            "keys_per_image": round(self.keys / n, 2),
            "requests_per_image": round(sum(self.requests.values()) / n, 2),
            "requests_per_image_by_kind": {k: round(v / n, 2) for k, v in sorted(self.requests.items())},
            "round_trips_before_next_photo": round(
                (self.requests["answer"] + self.requests["page"] + self.photo_on_critical_path) / n, 2
            ),
            "photos_fetched_ahead_share": round(1 - self.photo_on_critical_path / later, 2),
            "suggestions_shown": self.suggestions_shown,
            "suggestions_accepted": self.suggestions_accepted,
            "median_ms_per_image": round(statistics.median(self.ms_per_image), 1) if self.ms_per_image else None,
        }


def jpeg(i: int) -> bytes:
    """A 1024x768 photo-sized JPEG (noise, so it does not compress to nothing)."""
    from PIL import Image

    img = Image.effect_noise((1024, 768), 40 + i).convert("RGB")
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


async def seed(settings: Any, photos: list[Photo], urls: dict[str, str]) -> None:
    """The classification table as workers would have written it."""
    import asyncpg

    from processor.store import PostgresStore

    store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
    await store.start()
    await store.migrate()
    await store.close()
    conn = await asyncpg.connect(settings.postgres_dsn)
    try:
        for i, p in enumerate(photos):
            scores = {q: (0.9 if q == p.model_position else 0.01) for q in CYCLE}
            await conn.execute(
                f'INSERT INTO "{settings.postgres_table}" (image_id, listing_id, url, position_index, has_banner, '
                "banner_score, position, position_scores, model_name, model_version, content_hash, width, height, "
                "event_time, classified_at, output_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, "
                "'listing-image-cnn', '2026.11.30.5', 'sha256:x', 1024, 768, $9, $9, $10)",
                p.image_id,
                f"listing-{i // 5}",
                urls[p.image_id],
                i % 5,
                p.model_banner_score >= 0.5,
                p.model_banner_score,
                p.model_position,
                json.dumps(scores),
                datetime(2026, 12, 1, tzinfo=UTC),
                uuid.uuid4(),
            )
    finally:
        await conn.close()


@asynccontextmanager
async def running_app(settings: Any, config: Any, log: list[tuple[str, str]]) -> AsyncIterator[str]:
    """This tree's app with a middleware (outermost) that logs every request's kind and image id."""
    from aiohttp import web

    from processor.labelling.server import create_app

    @web.middleware
    async def counting(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
        path = request.path
        if path == "/label" and request.method == "POST":
            kind = "answer"
        elif path in ("/label", "/"):
            kind = "page"
        elif path == "/image":
            kind = "image"
        elif path == "/sign-in":
            kind = "sign-in"  # not counted: once per session
        else:
            kind = "static" if path.startswith("/static/") else "other"
        log.append((kind, request.query.get("id", "")))
        return await handler(request)

    app = create_app(settings, config)
    app.middlewares.insert(0, counting)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def keys_for(page: Any, photo: Photo) -> tuple[list[str], bool]:
    """What the labeller presses for this photo, and whether a suggestion was on the page."""
    shown = bool(await page.locator("#suggestion").count())
    said = f"{'banner' if photo.banner else 'no banner'}, {photo.position.replace('_', ' ')}"
    if shown and await page.inner_text("#suggestion strong") == said:
        return ["a"], True
    position_key = await page.get_attribute(f"input[name=position][value={photo.position}]", "data-key")
    return ["y" if photo.banner else "n", position_key or ""], shown


async def label_all(base_url: str, photos: list[Photo], figures: Figures, log: list[tuple[str, str]]) -> None:
    """Sign in, then answer every photo the page offers, counting keys and requests from the first photo on."""
    from playwright.async_api import async_playwright

    truth = {p.image_id: p for p in photos}
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 860})
            page = await context.new_page()
            await page.goto("/sign-in")
            await page.fill("input[name=username]", "bench")
            await page.fill("input[name=password]", PASSWORD)
            log.clear()  # from the sign-in on: the first page and photo count, the sign-in itself not
            async with page.expect_navigation():
                await page.click("button[type=submit]")
            while await page.locator("#answer").count():
                image_id = await page.locator("figcaption code").nth(1).inner_text()
                keys, shown = await keys_for(page, truth[image_id])
                figures.suggestions_shown += shown
                figures.suggestions_accepted += keys == ["a"]
                log.append(("answered", image_id))
                started = time.perf_counter()
                async with page.expect_navigation(wait_until="commit"):
                    for key in keys:
                        await page.keyboard.press(key)
                await page.wait_for_load_state("domcontentloaded")
                if await page.locator("#answer").count():  # not the load event: that waits for a prefetch too
                    await page.wait_for_function(PHOTO_SHOWN)
                figures.ms_per_image.append((time.perf_counter() - started) * 1000)
                figures.images += 1
                figures.keys += len(keys)
        finally:
            await browser.close()


def tally(figures: Figures, log: list[tuple[str, str]]) -> None:
    """Requests by kind, and the photos the browser asked for only after the answer that led to them (the
    labeller waits for those); a photo fetched ahead was asked for while the one before was on screen."""
    figures.requests = Counter(kind for kind, _ in log if kind not in ("answered", "sign-in"))
    answered_at = {image_id: i for i, (kind, image_id) in enumerate(log) if kind == "answered"}
    order = sorted(answered_at, key=answered_at.__getitem__)
    first_request: dict[str, int] = {}
    for i, (kind, image_id) in enumerate(log):
        if kind == "image":
            first_request.setdefault(image_id, i)
    for previous, shown in itertools.pairwise(order):
        figures.photo_on_critical_path += int(first_request.get(shown, -1) > answered_at[previous])


async def measure(settings: Any, config: Any, images: int, version: str) -> Figures:
    """One version's run against ``settings`` (its own classification table) and ``config`` (its own schema)."""
    from processor.dev.imageserver import ImageServer
    from processor.labelling import sampling
    from processor.labelling.accounts import create_user
    from processor.labelling.schema import create_pool, migrate
    from processor.labelling.server import model_labels

    photos = scenario(images)
    figures = Figures(version)
    log: list[tuple[str, str]] = []
    async with ImageServer(images={f"{p.image_id}.jpg": jpeg(i) for i, p in enumerate(photos)}) as server:
        await seed(settings, photos, {p.image_id: server.url(f"{p.image_id}.jpg") for p in photos})
        pool = await create_pool(settings.postgres_dsn, config.db_schema)
        try:
            await migrate(pool)
            await create_user(pool, "bench", PASSWORD, "labeller")
            _positions, threshold = model_labels(settings.model_dir, settings)
            await sampling.fill(pool, settings.postgres_table, images, 0.0, threshold)
        finally:
            await pool.close()
        async with running_app(settings, config, log) as base_url:
            await label_all(base_url, photos, figures, log)
    tally(figures, log)
    return figures


def child_settings(dsn: str, hidden_share: float | None) -> tuple[Any, Any]:
    """Settings and label config for one run, with only the fields every version knows."""
    from processor.labelling.config import LabelConfig
    from processor.settings import Settings

    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        postgres_dsn=dsn,
        postgres_table=f"bench_{tag}",
        allow_networks="127.0.0.1/32",
        model_dir=ROOT / "processor" / "models" / "default",
    )
    overrides: dict[str, Any] = {"db_schema": f"label_{tag}", "agree": 1, "max_labellers": 1}
    if hidden_share is not None and "suggestion_hidden_share" in LabelConfig.model_fields:
        overrides["suggestion_hidden_share"] = hidden_share
    return settings, LabelConfig().with_overrides(**overrides)


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = (
        ("version", "version"),
        ("keys/image", "keys_per_image"),
        ("requests/image", "requests_per_image"),
        ("round trips before next photo", "round_trips_before_next_photo"),
        ("photos fetched ahead", "photos_fetched_ahead_share"),
        ("suggestions shown/accepted", None),
        ("median ms to next photo", "median_ms_per_image"),
    )
    click.echo(" | ".join(title for title, _ in columns))
    for row in rows:
        cells = [
            f"{row['suggestions_shown']}/{row['suggestions_accepted']}" if key is None else str(row[key])
            for _, key in columns
        ]
        click.echo(" | ".join(cells))
    for row in rows:
        click.echo(f"{row['version']}: requests per image by kind {row['requests_per_image_by_kind']}")


async def create_database(dsn: str) -> str:
    """A fresh database on the server of ``dsn`` (each version migrates its own tables); its DSN."""
    import asyncpg

    name = f"bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


def run_child(tree: Path, dsn: str, images: int, hidden_share: float | None, version: str) -> dict[str, Any]:
    """One version in a child process whose ``processor`` comes from ``tree``."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        args = [sys.executable, str(Path(__file__).resolve()), "one", "--dsn", dsn, "--images", str(images)]
        args += ["--version", version, "--json", out.name]
        if hidden_share is not None:
            args += ["--hidden-share", str(hidden_share)]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run(args, check=True, cwd=tree, env=env, timeout=600)
        summary: dict[str, Any] = json.loads(Path(out.name).read_text())
    return summary


@click.group(invoke_without_command=True)
@click.option(
    "--before",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="A checkout of the version to compare with (git worktree add /tmp/old COMMIT).",
)
@click.option("--images", default=20, show_default=True, help="Photos in the queue.")
@click.option(
    "--repeats",
    default=3,
    show_default=True,
    help="Runs of the current version at the default "
    "hidden share (the suggestion is hidden on a random share of draws).",
)
@click.option("--dsn", default=None, help="A Postgres to create the runs' databases on (default: an embedded one).")
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.pass_context
def main(
    ctx: click.Context, before: Path | None, images: int, repeats: int, dsn: str | None, json_out: Path | None
) -> None:
    """The current tree (its default hidden share, repeated; and the suggestion always shown) against --before."""
    if ctx.invoked_subcommand is not None:
        return
    runs: list[tuple[Path, float | None, str]] = []
    if before is not None:
        runs.append((before.resolve(), None, f"before ({before.name})"))
    runs += [(ROOT, None, f"now, run {i + 1}") for i in range(repeats)]
    runs.append((ROOT, 0.0, "now, suggestion never hidden"))
    with postgres(dsn) as server_dsn:
        rows = []
        for tree, share, version in runs:
            click.echo(f"running {version} ({tree}) ...", err=True)
            rows.append(run_child(tree, asyncio.run(create_database(server_dsn)), images, share, version))
    print_table(rows)
    if json_out is not None:
        json_out.write_text(json.dumps({"images": images, "runs": rows}, indent=2) + "\n")


@contextmanager
def postgres(dsn: str | None) -> Iterator[str]:
    """The given DSN, or an embedded Postgres (alone: no broker or Redis) for the length of the run."""
    if dsn is not None:
        yield dsn
        return
    from processor.dev.stack import EmbeddedStack

    stack = EmbeddedStack()
    try:
        yield stack._start_postgres()
    finally:
        stack.stop()


@main.command()
@click.option("--dsn", required=True)
@click.option("--images", default=20)
@click.option("--version", default="")
@click.option("--hidden-share", type=float, default=None)
@click.option("--json", "json_out", type=click.Path(path_type=Path, dir_okay=False), required=True)
def one(dsn: str, images: int, version: str, hidden_share: float | None, json_out: Path) -> None:
    """One version, whichever ``processor`` this process imports."""
    settings, config = child_settings(dsn, hidden_share)
    figures = asyncio.run(measure(settings, config, images, version))
    json_out.write_text(json.dumps(figures.summary()))


if __name__ == "__main__":
    main()
