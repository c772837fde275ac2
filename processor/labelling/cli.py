"""``processor label ...``: serve the app, manage accounts, fill the queue, export the labels."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from ..cli import settings_options
from ..settings import Settings
from .config import LabelConfig

T = TypeVar("T")
Command = Callable[..., Any]


def label_options(command: Command) -> Command:
    """``--agree``, ``--max-labellers`` and ``--db-schema`` on top of PROCESSOR_LABEL_* variables."""
    fields = LabelConfig.model_fields
    for name in reversed(("agree", "max_labellers", "db_schema")):
        command = click.option(
            f"--{name.replace('_', '-')}",
            name,
            default=None,
            type=fields[name].annotation if fields[name].annotation in (int, str) else None,
            help=f"{fields[name].description} [env PROCESSOR_LABEL_{name.upper()}]",
        )(command)

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        overrides = {n: kwargs.pop(n) for n in ("agree", "max_labellers", "db_schema")}
        return command(config=LabelConfig().with_overrides(**overrides), **kwargs)

    return wrapper


def _with_pool(settings: Settings, config: LabelConfig, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    from .schema import create_pool, migrate

    async def run() -> T:
        pool = await create_pool(settings.postgres_dsn, config.db_schema, max_size=4)
        try:
            await migrate(pool)
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@click.group()
def label() -> None:
    """The labelling app: people label images, consensus makes labels final, exports feed training."""


@label.command()
@click.option("--host", default=None, help="Listen address [env PROCESSOR_LABEL_HOST, default 127.0.0.1].")
@click.option("--port", type=int, default=None, help="Port [env PROCESSOR_LABEL_PORT, default 8080].")
@label_options
@settings_options
def serve(settings: Settings, config: LabelConfig, host: str | None, port: int | None) -> None:
    """Serve the labelling app (put it behind HTTPS and set PROCESSOR_LABEL_COOKIE_SECURE=true)."""
    from aiohttp import web

    from .server import create_app

    config = config.with_overrides(host=host, port=port)
    web.run_app(create_app(settings, config), host=config.host, port=config.port, access_log=None)


@label.command(name="add-user")
@click.argument("username")
@click.option("--admin", is_flag=True, help="An admin (manages labellers, the queue and the rules).")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of asking.")
@label_options
@settings_options
def add_user(settings: Settings, config: LabelConfig, username: str, admin: bool, password_stdin: bool) -> None:
    """Create an account (the first admin is made this way; admins add labellers in the app)."""
    from .accounts import AccountError, create_user

    password = _read_password(password_stdin)
    try:
        _with_pool(
            settings, config, lambda pool: create_user(pool, username, password, "admin" if admin else "labeller")
        )
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {'admin' if admin else 'labeller'} {username.strip().lower()}")


@label.command(name="set-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of asking.")
@label_options
@settings_options
def set_password_command(settings: Settings, config: LabelConfig, username: str, password_stdin: bool) -> None:
    """Replace an account's password (and end its sessions)."""
    from .accounts import AccountError, set_password

    password = _read_password(password_stdin)
    try:
        _with_pool(settings, config, lambda pool: set_password(pool, username, password))
    except AccountError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"password of {username.strip().lower()} replaced")


@label.command()
@click.option("--count", default=100, show_default=True, help="Images to add to the queue.")
@click.option("--random-share", default=0.2, show_default=True, help="Share of them drawn uniformly at random.")
@label_options
@settings_options
def fill(settings: Settings, config: LabelConfig, count: int, random_share: float) -> None:
    """Add the images the model is least sure of (and a random share) to the labelling queue."""
    from .sampling import fill as run_fill
    from .server import model_dir_in_use, model_labels

    async def work(pool: asyncpg.Pool) -> Any:
        _positions, threshold = model_labels(await model_dir_in_use(pool, settings), settings)
        return await run_fill(pool, settings.postgres_table, count, random_share, threshold)

    filled = _with_pool(settings, config, work)
    click.echo(f"queued {filled.uncertain} uncertain and {filled.random} random images")


@label.command()
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder to write.")
@click.option(
    "--holdout-percent",
    type=click.IntRange(0, 100),
    default=None,
    help="Share kept out of training, by image id hash [env PROCESSOR_LABEL_HOLDOUT_PERCENT, default 20].",
)
@label_options
@settings_options
def export(settings: Settings, config: LabelConfig, out: Path, holdout_percent: int | None) -> None:
    """Write final labels as train/ and holdout/ folders (labels.csv + images/) for processor train/evaluate."""
    from tqdm import tqdm

    from .export import export as run_export

    percent = config.holdout_percent if holdout_percent is None else holdout_percent
    with tqdm(unit="image", desc="exported") as bar:
        summary = _with_pool(
            settings, config, lambda pool: run_export(pool, settings, out, percent, lambda: bar.update())
        )
    click.echo(
        f"train {summary.train}, hold-out {summary.holdout} ({summary.holdout_random} of them drawn at random), "
        f"failed {len(summary.failed)}; train with: processor train --data {out / 'train'}; "
        f"evaluate with: processor evaluate --data {out / 'holdout'}"
    )
    for image_id, why in sorted(summary.failed.items())[:20]:
        click.echo(f"  failed {image_id!r}: {why}", err=True)


@label.command(name="import")
@click.option(
    "--folder",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Queue every image under this folder (listing: its sub-folder).",
)
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="Queue a CSV's rows: image_id, listing_id (or car_id), and url or file.",
)
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False, exists=True),
    default=None,
    help="Folder the manifest's file column is relative to.",
)
@click.option("--labellers", type=click.IntRange(1), default=None, help="Labellers per image (default: K and N).")
@click.option(
    "--second-share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of images (by id hash) that need two agreeing labellers (with --labellers 1).",
)
@label_options
@settings_options
def import_command(
    settings: Settings,
    config: LabelConfig,
    folder: Path | None,
    manifest: Path | None,
    root: Path | None,
    labellers: int | None,
    second_share: float,
) -> None:
    """Add a folder or a manifest of photos to the labelling queue (a new team's first step)."""
    from .importing import ManifestError, Overlap, import_rows, register_dir, rows_from_folder, rows_from_manifest

    if (folder is None) == (manifest is None):
        raise click.UsageError("give --folder or --manifest")
    try:
        rows = rows_from_folder(folder) if folder is not None else rows_from_manifest(manifest, root)  # type: ignore[arg-type]
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    local = (folder if folder is not None else root or Path()).resolve() if folder or root else None

    async def work(pool: asyncpg.Pool) -> Any:
        if local is not None:
            await register_dir(pool, local)
        return await import_rows(pool, rows, Overlap(labellers, second_share))

    done = _with_pool(settings, config, work)
    click.echo(
        f"queued {done.added} images ({done.double} for two labellers); {done.already_queued} were queued already"
    )


@label.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@label_options
@settings_options
def agreement(settings: Settings, config: LabelConfig, as_json: bool) -> None:
    """Agreement between labellers who answered the same images: Cohen's kappa per question."""
    import json

    from .agreement import pairwise

    report = _with_pool(settings, config, pairwise)
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    click.echo(f"images with two labels: {report.images}")
    for question in report.questions:
        click.echo(f"  {question.name:<9} agreement {question.observed:.3f}  Cohen's kappa {question.kappa:.3f}")
    for (a, b), n in sorted(report.disagreements.items(), key=lambda kv: -kv[1])[:15]:
        click.echo(f"  position {a} vs {b}: {n}")
    click.echo("the model's suggestion (labels that agree with the model / with the final label):")
    for s in report.suggestion:
        click.echo(
            f"  {SUGGESTION_DRAWS[s.draw]:<34} {s.answers:>6} labels  with the model {_pct(s.with_model, s.answers)}"
            f"  with the final label {_pct(s.with_final, s.decided)}"
        )


SUGGESTION_DRAWS = {"shown": "shown", "hidden": "hidden on a draw", "random": "random sample (never shown)"}


def _pct(part: int, whole: int) -> str:
    return f"{part / whole:6.1%} ({part} of {whole})" if whole else "     - (0 of 0)"


def _client_options(command: Command) -> Command:
    options = [
        click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="The labelling app."),
        click.option("--user", "username", required=True, help="Your user name."),
        click.option("--password-stdin", is_flag=True, help="Read the password from standard input."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@label.command()
@_client_options
@click.option("--count", default=16, show_default=True, help="Photos on the sheet.")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder for sheets.")
@click.option("--columns", default=4, show_default=True)
@click.option("--cell-px", default=400, show_default=True, help="Width of one photo on the sheet.")
def sheet(url: str, username: str, password_stdin: bool, count: int, out: Path, columns: int, cell_px: int) -> None:
    """Claim a page of photos and write it as a numbered contact sheet (answer it with ``label submit``)."""
    from .sheets import AppClient, claim_sheet

    password = _read_password(password_stdin)

    async def run() -> tuple[Path, int]:
        async with AppClient(url) as client:
            await client.sign_in(username, password)
            return await claim_sheet(client, count, out, columns, cell_px)

    path, n = asyncio.run(run())
    click.echo(f"{n} photos: {path}" if n else "nothing left to label")


@label.command()
@_client_options
@click.option("--sheet", "sheet_json", type=click.Path(path_type=Path, dir_okay=False, exists=True), required=True)
@click.option("--answers", type=click.File(), required=True, help="Answer lines (see processor.labelling.sheets).")
def submit(url: str, username: str, password_stdin: bool, sheet_json: Path, answers: Any) -> None:
    """Send the answers to a contact sheet."""
    from .sheets import AppClient, Sheet, SheetError, parse_answers

    password = _read_password(password_stdin)
    try:
        parsed = parse_answers(answers.read(), Sheet.load(sheet_json))
    except SheetError as exc:
        raise click.ClickException(str(exc)) from None

    async def run() -> dict[str, Any]:
        async with AppClient(url) as client:
            await client.sign_in(username, password)
            return await client.submit(parsed)

    reply = asyncio.run(run())
    click.echo(f"saved {reply['saved']} of {len(parsed)}")
    for error in reply["errors"]:
        click.echo(f"  {error['image_id']}: {error['error']}", err=True)
    if reply["errors"]:
        raise SystemExit(1)


@label.command()
@label_options
@settings_options
def redecide(settings: Settings, config: LabelConfig) -> None:
    """Decide open images again with the current K, N and team (e.g. after lowering N or a labeller left)."""
    from .tasks import redecide as run_redecide

    moved = _with_pool(settings, config, lambda pool: run_redecide(pool, config))
    click.echo(f"{moved['final']} images became final, {moved['review']} went to review")
