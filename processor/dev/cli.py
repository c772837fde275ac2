"""Commands of the local tooling: ``processor stack`` and ``processor demo``."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from .stack import EmbeddedStack


@click.command()
@click.option("--env", "as_env", is_flag=True, help="Print `export PROCESSOR_...=` lines for eval.")
@click.option("--dir", "root", type=click.Path(path_type=Path), help="Keep the stack's data here.")
@click.option(
    "--durable",
    is_flag=True,
    help="Keep the broker's topics and committed offsets in S3 storage (a moto server), so the broker can be "
    "killed and started again with them intact.",
)
@click.option(
    "--restart-broker-after",
    "restart_after_s",
    type=float,
    default=None,
    help="When the broker dies (say, kill -9 from a fault test), start it again on the same address after this "
    "many seconds. Without it, SIGHUP starts a dead broker again.",
)
def stack(as_env: bool, root: Path | None, durable: bool, restart_after_s: float | None) -> None:
    """Start the embedded broker, Postgres and Redis; stop them on Ctrl-C or SIGTERM."""
    from .stack import EmbeddedStack

    if root is not None:
        root.mkdir(parents=True, exist_ok=True)
    with EmbeddedStack(root, durable=durable) as embedded:
        assert embedded.urls is not None
        for key, value in embedded.urls.env().items():
            click.echo(f"export {key}='{value}'" if as_env else f"{key}={value}")
        if durable:
            click.echo(
                f"# broker: durable (S3 storage); pid {embedded.broker_pid}, log {embedded.root / 'tansu.log'}",
                err=True,
            )
        click.echo("# stack is up; Ctrl-C or SIGTERM stops it", err=True)
        sys.stdout.flush()
        _supervise(embedded, restart_after_s)


def _supervise(embedded: EmbeddedStack, restart_after_s: float | None) -> None:
    """Until SIGINT or SIGTERM: start the broker again when it died, after ``restart_after_s`` or on SIGHUP."""
    received: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    died_at: float | None = None
    while not any(sig != signal.SIGHUP for sig in received):
        time.sleep(0.2)
        if embedded.broker_alive():
            continue
        now = time.monotonic()
        if died_at is None:
            died_at = now
            click.echo(f"# broker exited; {_restart_hint(restart_after_s)}", err=True)
        if signal.SIGHUP in received or (restart_after_s is not None and now - died_at >= restart_after_s):
            received[:] = [sig for sig in received if sig != signal.SIGHUP]
            embedded.start_broker()
            click.echo(f"# broker started again after {now - died_at:.1f} s; pid {embedded.broker_pid}", err=True)
            died_at = None


def _restart_hint(restart_after_s: float | None) -> str:
    if restart_after_s is None:
        return "SIGHUP starts it again"
    return f"starting it again in {restart_after_s:g} s"


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
