"""The ``processor`` command line."""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from .settings import Settings

# Commands of the model-building and local-tooling packages, imported only when they run (or --help
# lists them), so that `processor worker` never loads processor.ml or processor.dev.
LAZY_COMMANDS = {
    "backbone": "processor.ml.cli:backbone",
    "backfill": "processor.backfill:backfill",
    "dlq": "processor.redrive:dlq",
    "calibrate": "processor.ml.cli:calibrate",
    "corpus": "processor.ml.corpus_cli:corpus",
    "demo": "processor.dev.cli:demo",
    "evaluate": "processor.ml.cli:evaluate",
    "evaluate-real": "processor.ml.cli:evaluate_real",
    "export-onnx": "processor.ml.cli:export_onnx",
    "real-cars": "processor.ml.cli:real_cars",
    "quantize": "processor.ml.cli:quantize",
    "render": "processor.ml.cli:render",
    "serve-model": "processor.serving.cli:serve_model",
    "soup": "processor.ml.cli:soup",
    "export-triton": "processor.serving.cli:export_triton",
    "stack": "processor.dev.cli:stack",
    "synth": "processor.ml.cli:synth",
    "train": "processor.ml.cli:train",
}

SettingsCommand = Callable[..., Any]


def settings_options(command: SettingsCommand) -> SettingsCommand:
    """Add one ``--flag`` per Settings field; given flags override PROCESSOR_* variables."""
    for name, field in reversed(Settings.model_fields.items()):
        command = click.option(
            f"--{name.replace('_', '-')}",
            name,
            default=None,
            show_default=False,
            help=f"{field.description} [env PROCESSOR_{name.upper()}]",
        )(command)

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        overrides = {n: kwargs.pop(n) for n in Settings.model_fields if n in kwargs}
        settings = Settings().with_overrides(**overrides)
        logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return command(settings=settings, **kwargs)

    return wrapper


class LazyGroup(click.Group):
    """A group whose commands named in LAZY_COMMANDS are imported on first use (click's documented pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in LAZY_COMMANDS:
            module, name = LAZY_COMMANDS[cmd_name].split(":")
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="listing-image-processor")
def main() -> None:
    """Classify marketplace images as they stream in: banner / no banner, and car position."""


@main.command()
@settings_options
def worker(settings: Settings) -> None:
    """Run a worker of the consumer group against the configured broker, Postgres and Redis."""
    from .app import run_worker

    if settings.create_topics:
        asyncio.run(_create_topics(settings))
    run_worker(settings)


async def _create_topics(settings: Settings) -> list[str]:
    from .topics import ensure_topics, topic_configs

    return await ensure_topics(
        settings.broker_url,
        settings.topics,
        settings.topic_partitions,
        settings.topic_replication_factor,
        settings.topic_retention_ms,
        configs=topic_configs(settings),
    )


@main.command()
@click.argument("listing_id")
@settings_options
def listing(settings: Settings, listing_id: str) -> None:
    """Print a listing's state (hero image, coverage, banner-free feed) as JSON, from Postgres."""
    import asyncpg

    from .listings import ListingStore

    async def run() -> dict[str, Any] | None:
        pool = await asyncpg.create_pool(settings.postgres_dsn, min_size=1, max_size=1)
        try:
            state = await ListingStore(pool, settings.listing_rules(), table=settings.listings_table).get(listing_id)
        finally:
            await pool.close()
        return None if state is None else state.to_output()

    state = asyncio.run(run())
    if state is None:
        click.echo(f"no state for listing {listing_id!r} (unknown listing, or its images are not classified yet)")
        sys.exit(1)
    click.echo(json.dumps(state, indent=2))


@main.group()
def topics() -> None:
    """Kafka topics of the processor."""


@topics.command("create")
@settings_options
def topics_create(settings: Settings) -> None:
    """Create every topic the workers read and write, with the configured partitions, replication and
    retention, listing-updates compacted (existing topics are left as they are: a setting that differs is
    reported with the command that changes it). Run it once per environment, before the workers."""
    from .topics import config_drift, topic_configs

    created = asyncio.run(_create_topics(settings))
    drift = asyncio.run(config_drift(settings.broker_url, topic_configs(settings)))
    for name in settings.topics:
        click.echo(f"{name}: {'created' if name in created else 'exists'}")
        for key, (actual, wanted) in drift.get(name, {}).items():
            click.echo(
                f"  {key} is {actual or 'the broker default'}, wanted {wanted}: kafka-configs.sh --bootstrap-server"
                f" BROKER --alter --entity-type topics --entity-name {name} --add-config {key}={wanted}"
            )


@main.command()
@click.argument("file", type=click.File("rb"), default="-")
@settings_options
def produce(settings: Settings, file: Any) -> None:
    """Send JSON-lines events from FILE (or stdin) to the input topic, keyed by listing_id."""
    from .topics import ensure_topics, produce_lines

    lines = [line.rstrip(b"\r\n") for line in file]
    asyncio.run(ensure_topics(settings.broker_url, [settings.input_topic], settings.topic_partitions))
    sent = asyncio.run(produce_lines(settings.broker_url, settings.input_topic, lines))
    click.echo(f"sent {sent} events to {settings.input_topic}", err=True)


@main.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image.")
@settings_options
def classify(settings: Settings, targets: tuple[str, ...], as_json: bool) -> None:
    """Classify image files or URLs directly and print the labels."""
    from .classify import classify_targets

    failed = False
    for target, result in asyncio.run(classify_targets(settings, list(targets))):
        failed |= "error" in result
        if as_json:
            click.echo(json.dumps({"target": target, **result}))
        elif "error" in result:
            click.echo(f"{target}: error {result['error']['kind']}: {result['error']['detail']}")
        else:
            click.echo(
                f"{target}: {'BANNER' if result['has_banner'] else 'no banner'} "
                f"({result['banner_score']:.3f}), {result['position']} "
                f"({max(result['position_scores'].values()):.3f})"
            )
    sys.exit(1 if failed else 0)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command()
@settings_options
def migrate(settings: Settings) -> None:
    """Create or migrate the tables (workers also do this on start)."""
    from .store import PostgresStore

    async def run() -> int:
        store = PostgresStore(settings.postgres_dsn, settings.postgres_table)
        await store.start()
        try:
            return await store.migrate()
        finally:
            await store.close()

    click.echo(f"{settings.postgres_table}: schema version {asyncio.run(run())}")


# The labelling app and the model registry's commands (issue #15), loaded the same lazy way.
LAZY_COMMANDS.update(label="processor.labelling.cli:label", model="processor.rollout:model")
LAZY_COMMANDS.update(reclassify="processor.rollout:reclassify")

if __name__ == "__main__":
    main()
