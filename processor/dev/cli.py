"""Commands of the local tooling: ``processor stack`` and ``processor demo``."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click


@click.command()
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


@click.command()
@click.option("--images", default=500, show_default=True, help="Image events to produce.")
@click.option("--listings", default=40, show_default=True, help="Listings they belong to.")
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, help="Give up after seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--photos",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder of the real-photo corpus (default: data/real-photos/photos; fetched there when missing).",
)
@click.option("--generated", is_flag=True, help="Stream generated drawings instead of real listing photos.")
def demo(
    images: int, listings: int, workers: int, timeout_s: float, as_json: bool, photos: Path | None, generated: bool
) -> None:
    """Run the whole pipeline on the embedded stack with real listing photos (or generated ones)."""
    from ..ml.corpus import PHOTOS_DIR
    from .demo import print_summary, run_demo

    source = None if generated else photos or PHOTOS_DIR
    summary = run_demo(images, min(listings, images), workers, timeout_s, not as_json, source)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    sys.exit(0 if summary["accounted"] else 1)
