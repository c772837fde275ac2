"""Rolling models out: ``processor model promote|list`` and ``processor reclassify``.

Loaded only when one of these commands runs (see ``lazycli``).
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import click

from . import registry
from .cli import settings_options
from .events import version_key
from .reclassify import Selection
from .reclassify import reclassify as run_reclassify
from .settings import Settings

T = TypeVar("T")
EVALUATION_FILE = "evaluation.json"


class PromotionRefused(click.ClickException):
    """The directory is not fit to replace the running model."""


async def _with_pool(settings: Settings, work: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
    pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=2)
    try:
        await registry.migrate(pool)
        return await work(pool)
    finally:
        await pool.close()


def check_loads(model_dir: Path) -> None:
    """Refuse a directory whose model does not load or cannot score an image, in any runtime a worker
    may use: Keras (safe mode) always, ONNX Runtime when the directory has model.onnx."""
    from .model import ONNX_FILE, Classifier

    runtimes = ["keras", "onnx"] if (model_dir / ONNX_FILE).exists() else ["keras"]
    for runtime in runtimes:
        try:
            Classifier(model_dir, runtime=runtime)
        except Exception as exc:  # anything the framework raises means the workers could not load it either
            raise PromotionRefused(
                f"{model_dir}: the model does not load ({runtime}): {type(exc).__name__}: {exc}"
            ) from exc


def check_labels(model_dir: Path, running_dir: Path) -> None:
    """Refuse a model whose label sets differ from the running one's (downstream relies on them)."""
    try:
        new, old = registry.read_metadata(model_dir)["labels"], registry.read_metadata(running_dir)["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise PromotionRefused(f"cannot compare labels: {type(exc).__name__}: {exc}") from exc
    if new != old:
        raise PromotionRefused(f"{model_dir}: labels {new} differ from the running model's {old} ({running_dir})")


def read_evaluation(model_dir: Path, evaluation: Path | None) -> dict[str, Any] | None:
    """The report given, else the directory's own evaluation.json, else None.

    A report that names another model version (a copied directory keeps its parent's evaluation.json) is
    refused: the registry would show the parent's figures as this model's.
    """
    path = evaluation or model_dir / EVALUATION_FILE
    if not path.exists():
        return None
    report: dict[str, Any] = json.loads(path.read_text())
    version = str(registry.read_metadata(model_dir)["version"])
    evaluated = str((report.get("model") or {}).get("version", version))
    if evaluated != version:
        raise click.ClickException(
            f"{path} evaluates version {evaluated}, not this model's {version}: "
            "evaluate this model (processor evaluate --json) and pass --evaluation"
        )
    return report


@click.group()
def model() -> None:
    """The model registry: which model directory the workers run (one active at a time)."""


@model.command()
@click.argument("directory", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option(
    "--evaluation",
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    default=None,
    help="Evaluation report (processor evaluate --json); default: the directory's evaluation.json.",
)
@click.option("--by", "promoted_by", default=None, help="Who promotes it (default: the user name).")
@click.option(
    "--replace", is_flag=True, help="Register DIRECTORY even if another directory holds the same name and version."
)
@settings_options
def promote(
    settings: Settings, directory: Path, evaluation: Path | None, promoted_by: str | None, replace: bool
) -> None:
    """Make DIRECTORY (a model directory) the active model (rollback: promote the old directory again)."""

    async def run(pool: asyncpg.Pool) -> tuple[registry.ModelVersion, list[registry.ModelVersion]]:
        current = await registry.active(pool)
        check_labels(directory, current.model_dir if current is not None else settings.model_dir)
        check_loads(directory)
        report = read_evaluation(directory, evaluation)
        before = {(v.name, v.version): v.generation for v in await registry.history(pool)}
        promoted = await registry.promote(pool, directory, report, promoted_by or getpass.getuser(), replace)
        return promoted, withdrawn_by(promoted, current, before, await registry.history(pool))

    try:
        promoted, withdrawn = asyncio.run(_with_pool(settings, run))
    except registry.RegistryConflict as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"active: {promoted.name} {promoted.version} ({promoted.model_dir}), promotion {promoted.generation}")
    if withdrawn:
        flags = " ".join(f"--model-version {v.version}" for v in withdrawn)
        click.echo(
            f"rolled back over {', '.join(v.version for v in withdrawn)}: their results stand until the images are "
            f"classified again (processor reclassify {flags}); this model's results now win over theirs",
            err=True,
        )


def withdrawn_by(
    promoted: registry.ModelVersion,
    previous: registry.ModelVersion | None,
    generations_before: dict[tuple[str, str], int],
    history: list[registry.ModelVersion],
) -> list[registry.ModelVersion]:
    """The models a promotion rolls back over, whose rows stand until the images are classified again:
    those promoted since this directory last was, or (a model the workers ran without promoting it) the
    previous active model when its version is higher."""
    earlier = generations_before.get((promoted.name, promoted.version))
    if earlier is not None:
        return [v for v in history if earlier < v.generation < promoted.generation]
    if previous is not None and version_key(previous.version) > version_key(promoted.version):
        return [previous]
    return []


@model.command(name="list")
@settings_options
def list_models(settings: Settings) -> None:
    """List registered models, the most recently promoted first; * marks the active one, #N the promotion
    order (for one image, the results of a later promotion replace an earlier one's)."""
    versions = asyncio.run(_with_pool(settings, registry.history))
    if not versions:
        click.echo(f"no model promoted yet: workers run PROCESSOR_MODEL_DIR ({settings.model_dir})")
    for v in versions:
        accuracy = ((v.evaluation or {}).get("banner") or {}).get("accuracy")
        click.echo(
            f"{'*' if v.active else ' '} {v.name} {v.version}  #{v.generation}  promoted "
            f"{v.promoted_at:%Y-%m-%d %H:%M} by "
            f"{v.promoted_by}  banner accuracy {accuracy if accuracy is not None else '-'}  {v.model_dir}"
        )


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None or value.tzinfo is not None else value.replace(tzinfo=UTC)


@click.command()
@click.option("--listing", "listings", multiple=True, help="A listing id (repeatable).")
@click.option("--since", type=click.DateTime(), default=None, help="classified_at at or after (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="classified_at before (UTC).")
@click.option("--model-version-below", default=None, help="Rows classified by a model version below this.")
@click.option(
    "--model-version",
    "model_versions",
    multiple=True,
    help="Rows classified by exactly this version (repeatable): a rolled-back model's.",
)
@click.option("--all", "everything", is_flag=True, help="Every row (the filters above still apply).")
@click.option(
    "--rate",
    "rate_per_s",
    type=click.FloatRange(min=0.1),
    default=100.0,
    show_default=True,
    help="Events per second at most.",
)
@settings_options
def reclassify(
    settings: Settings,
    listings: tuple[str, ...],
    since: datetime | None,
    until: datetime | None,
    model_version_below: str | None,
    model_versions: tuple[str, ...],
    everything: bool,
    rate_per_s: float,
) -> None:
    """Put stored images back onto the input topic so the workers classify them again."""
    from tqdm import tqdm

    selection = Selection(listings, _utc(since), _utc(until), model_version_below, everything, model_versions)
    if selection.is_empty():
        raise click.UsageError(
            "choose images: --listing, --since/--until, --model-version-below, --model-version or --all"
        )
    bar = tqdm(unit="event", desc="re-queued")

    def progress(sent: int, total: int) -> None:
        bar.total = total
        bar.update(sent - bar.n)

    async def run(pool: asyncpg.Pool) -> int:
        return await run_reclassify(
            pool, settings.postgres_table, settings.broker_url, settings.input_topic, selection, rate_per_s, progress
        )

    try:
        sent = asyncio.run(_with_pool(settings, run))
    finally:
        bar.close()
    click.echo(f"re-queued {sent} images onto {settings.input_topic}", err=True)
