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
