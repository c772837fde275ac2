"""``processor serve-model`` and ``processor export-triton`` (imported only when they run)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from ..cli import settings_options
from ..model import ModelInfo
from ..settings import Settings
from .repository import CONFIG_FILE, DEFAULT_MODEL_NAME, Batching, parse_config, write_version


@click.command(name="serve-model")
@settings_options
def serve_model(settings: Settings) -> None:
    """Serve the model to workers over the Open Inference Protocol (Triton from nvidia-pytriton, ONNX Runtime).

    Listens on --model-server-host (127.0.0.1 unless set) for HTTP, gRPC and Triton's metrics; follows the
    model registry (processor model promote) unless --follow-registry false. Workers use it with
    PROCESSOR_INFERENCE_URL=http://HOST:PORT.
    """
    from .server import ModelServer

    sys.exit(asyncio.run(ModelServer(settings).run()))


@click.command(name="export-triton")
@click.argument("out", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--model-dir",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    default=None,
    help="Model directory with model.onnx (default: the shipped model).",
)
@click.option("--name", default=DEFAULT_MODEL_NAME, show_default=True, help="The model's name on the server.")
@click.option(
    "--version",
    "number",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Version folder to write; a higher one beside the others is a rollout (Triton's poll or explicit mode).",
)
@click.option("--generation", type=click.IntRange(min=0), default=0, help="Registry promotion this version is.")
@click.option("--kind", type=click.Choice(["gpu", "cpu"]), default="gpu", show_default=True, help="Instance kind.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True, help="Instances per device.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option(
    "--preferred-batch-sizes", default="8,16,32", show_default=True, help="The dynamic batcher's preferred sizes."
)
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True)
def export_triton(
    out: Path,
    model_dir: Path | None,
    name: str,
    number: int,
    generation: int,
    kind: str,
    instances: int,
    max_batch_size: int,
    preferred_batch_sizes: str,
    max_queue_delay_us: int,
) -> None:
    """Write a Triton model repository (ONNX Runtime backend) for NVIDIA's tritonserver image into OUT."""
    directory = model_dir or Settings().model_dir
    batching = Batching(
        max_batch_size=max_batch_size,
        preferred_batch_sizes=tuple(int(b) for b in preferred_batch_sizes.split(",") if b.strip()),
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        kind=kind,
    )
    try:
        folder = write_version(out, name, directory, number, generation, batching, backend="onnxruntime")
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    config = parse_config((folder / CONFIG_FILE).read_text())
    info = ModelInfo.read(directory)
    click.echo(
        f"{folder}: {info.name} {info.version} as version {number} "
        f"(backend {config.backend}, max batch {config.max_batch_size}, "
        f"preferred {list(config.dynamic_batching.preferred_batch_size)}); "
        f"serve with: tritonserver --model-repository={out}"
    )
