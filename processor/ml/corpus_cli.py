"""``processor corpus ...``: fetch the real photos, queue them for labelling, take the labels back, write splits."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import asyncpg
import click

from .corpus import (
    MANIFEST,
    RAW_GITHUB,
    apply_labels,
    check_splits,
    photo_file,
    read_export,
    read_manifest,
    read_sources,
    write_manifest,
    write_split_folders,
)

manifest_option = click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    default=MANIFEST,
    show_default=True,
    help="The corpus manifest.",
)
photos_option = click.option(
    "--photos",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Folder of the fetched photos (<image_id>.jpg).",
)


@click.group()
def corpus() -> None:
    """The real-photo corpus: provenance and labels in a manifest, photos fetched from their sources."""


@corpus.command(name="fetch")
@manifest_option
@photos_option
@click.option("--base-url", default=RAW_GITHUB, show_default=True, help="Where <repo>/<commit>/<path> is served.")
@click.option("--concurrency", default=16, show_default=True)
def fetch_command(manifest: Path, photos: Path, base_url: str, concurrency: int) -> None:
    """Download every photo of the manifest from its repository at its commit (SHA-256 checked)."""
    from tqdm import tqdm

    from .corpus import fetch

    rows = read_manifest(manifest)
    with tqdm(total=len(rows), unit="photo", desc="fetched") as bar:
        report = asyncio.run(fetch(rows, photos, base_url, concurrency, lambda: bar.update()))
    failed = report.failed
    click.echo(f"fetched {report.fetched}, already there {report.present}, failed {len(failed)}")
    for image_id, why in sorted(failed.items())[:20]:
        click.echo(f"  {image_id}: {why}", err=True)
    if failed:
        raise SystemExit(1)


@corpus.command(name="queue")
@manifest_option
@photos_option
@click.option("--second-share", default=0.25, show_default=True, help="Share of photos for a second labeller.")
@click.option("--unlabelled-only", is_flag=True, help="Queue only photos without labels (a later batch).")
def queue_command(manifest: Path, photos: Path, second_share: float, unlabelled_only: bool) -> None:
    """Add the fetched photos to the labelling app's queue (one labeller each, two on a share)."""
    from ..labelling.cli import _with_pool
    from ..labelling.config import LabelConfig
    from ..labelling.importing import Imported, ImportRow, Overlap, import_rows, register_dir
    from ..settings import Settings

    root = photos.resolve()
    rows = [
        ImportRow(p.image_id, p.car_id, photo_file(root, p).as_uri())
        for p in read_manifest(manifest)
        if photo_file(root, p).exists() and not (unlabelled_only and p.labelled)
    ]

    async def work(pool: asyncpg.Pool) -> Imported:
        await register_dir(pool, root)
        return await import_rows(pool, rows, Overlap(1, second_share))

    done = _with_pool(Settings(), LabelConfig(), work)
    click.echo(f"queued {done.added} photos ({done.double} for two labellers); {done.already_queued} already queued")


@corpus.command(name="apply-labels")
@manifest_option
@click.option("--export", "export_dir", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True)
@click.option(
    "--keep-unlisted",
    is_flag=True,
    help="Photos the export does not list keep their labels (an export of a later batch only).",
)
def apply_labels_command(manifest: Path, export_dir: Path, keep_unlisted: bool) -> None:
    """Write the labels of a ``processor label export`` into the manifest, and each car's split."""
    photos = apply_labels(read_manifest(manifest), read_export(export_dir), keep_unlisted)
    write_manifest(photos, manifest)
    labelled = [p for p in photos if p.labelled]
    click.echo(f"{len(labelled)} of {len(photos)} photos labelled")


@corpus.command()
@manifest_option
@photos_option
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True, help="Folder to write.")
@click.option(
    "--hold-out-sources",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="A file of repositories (owner/name, one a line, # comments): their photos leave every split for "
    "other-sources/, to measure the model on sources it never saw.",
)
def splits(manifest: Path, photos: Path, out: Path, hold_out_sources: Path | None) -> None:
    """Write train/, calibration/ and test/ (labels.csv each) for processor train / calibrate / evaluate."""
    rows = read_manifest(manifest)
    mixed = check_splits(rows)
    if mixed:
        raise click.ClickException(f"cars in two splits: {mixed[:5]}")
    held_out = frozenset(read_sources(hold_out_sources)) if hold_out_sources else frozenset()
    unknown = held_out - {p.repo for p in rows}
    if unknown:
        raise click.ClickException(f"--hold-out-sources names repositories the manifest does not: {sorted(unknown)}")
    counts = write_split_folders(rows, photos, out, held_out)
    for split, by_position in counts.items():
        click.echo(f"{split}: {sum(by_position.values())} photos  {dict(sorted(by_position.items()))}")


@corpus.command()
@manifest_option
@click.option("--json", "as_json", is_flag=True)
def stats(manifest: Path, as_json: bool) -> None:
    """Counts by split, position, banner, source and licence (the datasheet's figures)."""
    rows = [p for p in read_manifest(manifest) if p.labelled]
    report = {
        "photos": len(rows),
        "cars": len({p.car_id for p in rows}),
        "sources": len({p.repo for p in rows}),
        "by_split": {
            s: {"photos": sum(p.split == s for p in rows), "cars": len({p.car_id for p in rows if p.split == s})}
            for s in ("train", "calibration", "test")
        },
        "by_position": dict(Counter(p.position for p in rows).most_common()),
        "banner": sum(p.banner == "1" for p in rows),
        "by_licence": dict(Counter(p.licence for p in rows).most_common()),
        "by_source": dict(Counter(p.repo for p in rows).most_common()),
    }
    click.echo(json.dumps(report, indent=2))


@corpus.command(name="add")
@manifest_option
@photos_option
@click.option(
    "--provenance",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    required=True,
    help="JSON lines: repo, commit, path, licence, file (relative to this file's folder).",
)
@click.option(
    "--car-per",
    type=click.Choice(["folder", "photo"]),
    default="folder",
    show_default=True,
    help="How the source groups photos of one car.",
)
@click.option("--car-pattern", default=None, help="A regular expression whose first group names the car in a path.")
@click.option("--max", "most", type=int, default=None, help="Take at most this many, spread over the cars.")
@click.option("--mixed", is_flag=True, help="The source keeps many cars in one folder: its photos go to train.")
def add_command(
    manifest: Path,
    photos: Path,
    provenance: Path,
    car_per: str,
    car_pattern: str | None,
    most: int | None,
    mixed: bool,
) -> None:
    """Add photos extracted from a source repository (with their provenance) to the manifest."""
    from .corpus import Candidate, add_photos, car_of, spread

    candidates = []
    for line in provenance.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            candidates.append(
                Candidate(row["repo"], row["commit"], row["path"], row["licence"], provenance.parent / row["file"])
            )
    if most is not None:
        candidates = spread(candidates, most, lambda c: car_of(c.path, car_per, car_pattern))
    existing = read_manifest(manifest) if manifest.exists() else []
    rows, outcome = add_photos(existing, candidates, photos, car_per, car_pattern, mixed=mixed)
    write_manifest(rows, manifest)
    click.echo(f"{dict(outcome)}; manifest has {len(rows)} photos")


@corpus.command()
@click.option("--split", "split_dir", type=click.Path(path_type=Path, file_okay=False, exists=True), required=True)
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--unseen", is_flag=True, help="Banner styles the generator never draws (for a test set).")
@click.option("--seed", default=1, show_default=True)
@click.option(
    "--subtle-share", default=0.0, show_default=True, help="Share given a small or faint site overlay instead."
)
def stamp(split_dir: Path, out: Path, unseen: bool, seed: int, subtle_share: float) -> None:
    """Write copies of a split's banner-free photos with a drawn banner (the stamped-banner sets)."""
    from .corpus import write_stamped

    click.echo(f"{write_stamped(split_dir, out, unseen, seed, subtle_share)} stamped photos in {out}")
