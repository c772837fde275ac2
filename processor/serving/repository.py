"""Triton model repositories: the one ``processor serve-model`` serves, and the one ``processor
export-triton`` writes for NVIDIA's own server image.

Layout (Triton's)::

    <repository>/<model>/config.pbtxt            one config for every version (ModelConfig, text format)
    <repository>/<model>/position_labels.txt     the position classes, one a line (classification extension)
    <repository>/<model>/<N>/model.onnx          one folder per version, N = 1, 2, 3...
    <repository>/<model>/<N>/model.py            (serve-model only) the Python-backend model that runs it

Triton versions are integers, the processor's are strings; ``config.pbtxt`` says which is which: one
parameter ``model_metadata:<N>`` per version folder holds that version's name, version, labels, input
size, banner threshold, position floor and registry generation as JSON. Workers read it through the
v2 model-configuration endpoint, so a result names the model version the server answered with. The
config is written through Triton's own protobuf schema (``model_config.proto``, as tritonclient ships
it), and read back before it is kept, so a repository this module writes always parses.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..model import ONNX_FILE, ModelInfo

CONFIG_FILE = "config.pbtxt"
LABELS_FILE = "position_labels.txt"
METADATA_PREFIX = "model_metadata:"
PYTHON_MODEL = Path(__file__).with_name("triton_model.py")
DEFAULT_MODEL_NAME = "listing-image-classifier"


def _pb() -> Any:
    """Triton's ModelConfig protobuf module (tritonclient ships it; the ``serve`` extra)."""
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


@dataclass(frozen=True, slots=True)
class Batching:
    """The server's batching and placement: Triton's dynamic batcher and instance group."""

    max_batch_size: int = 64
    preferred_batch_sizes: tuple[int, ...] = (8, 16, 32)
    max_queue_delay_us: int = 5000
    instances: int = 1
    kind: str = "cpu"  # cpu | gpu
    intra_op_threads: int = 1  # ONNX Runtime threads per instance (serve-model)
    versions_kept: int = 2  # the newest N versions are loaded: events already sent to the previous one finish


@dataclass(frozen=True, slots=True)
class Served:
    """One version as the workers see it (the ``model_metadata:<N>`` parameter)."""

    name: str
    version: str
    positions: tuple[str, ...]
    input_size: tuple[int, int]
    banner_threshold: float
    position_floor: float
    generation: int

    @classmethod
    def of(cls, info: ModelInfo, generation: int) -> Served:
        return cls(
            info.name,
            info.version,
            info.positions,
            info.input_size,
            info.banner_threshold,
            info.position_floor,
            generation,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "labels": {"position": list(self.positions)},
                "input_size": list(self.input_size),
                "banner_threshold": self.banner_threshold,
                "position_floor": self.position_floor,
                "generation": self.generation,
            },
            sort_keys=True,
        )

    @staticmethod
    def parse(text: str) -> tuple[ModelInfo, int]:
        """The ModelInfo and registry generation a ``model_metadata:<N>`` parameter describes."""
        meta = json.loads(text)
        info = ModelInfo(
            name=meta["name"],
            version=meta["version"],
            positions=tuple(meta["labels"]["position"]),
            input_size=(int(meta["input_size"][0]), int(meta["input_size"][1])),
            banner_threshold=float(meta["banner_threshold"]),
            raw=meta,
            position_floor=float(meta.get("position_floor", 0.0)),
        )
        return info, int(meta.get("generation", 0))


def build_config(model: str, backend: str, served: dict[int, Served], batching: Batching, fixed_size: bool) -> Any:
    """The ModelConfig message of a repository with these versions."""
    pb = _pb()
    latest = served[max(served)]
    width, height = latest.input_size
    config = pb.ModelConfig(name=model, backend=backend, max_batch_size=batching.max_batch_size)
    if backend == "onnxruntime":
        config.default_model_filename = ONNX_FILE
    config.input.add(name="image", data_type=pb.TYPE_UINT8, dims=[height, width, 3] if fixed_size else [-1, -1, 3])
    config.output.add(name="banner", data_type=pb.TYPE_FP32, dims=[1])
    config.output.add(name="position", data_type=pb.TYPE_FP32, dims=[len(latest.positions)], label_filename=LABELS_FILE)
    config.dynamic_batching.preferred_batch_size.extend(
        b for b in batching.preferred_batch_sizes if b <= batching.max_batch_size
    )
    config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
    kind = pb.ModelInstanceGroup.KIND_GPU if batching.kind == "gpu" else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=batching.instances)
    config.version_policy.latest.num_versions = batching.versions_kept
    if backend == "python":
        config.parameters["intra_op_threads"].string_value = str(batching.intra_op_threads)
    for number, each in sorted(served.items()):
        config.parameters[f"{METADATA_PREFIX}{number}"].string_value = each.to_json()
    return config


def parse_config(text: str) -> Any:
    """Parse ``config.pbtxt`` text with Triton's schema; raises ``text_format.ParseError`` if it does not fit."""
    from google.protobuf import text_format

    return text_format.Parse(text, _pb().ModelConfig())


def read_served(model_dir: Path) -> dict[int, Served]:
    """The versions a model folder's ``config.pbtxt`` describes (none when there is no config yet)."""
    path = model_dir / CONFIG_FILE
    if not path.exists():
        return {}
    config = parse_config(path.read_text())
    out: dict[int, Served] = {}
    for key, value in config.parameters.items():
        if key.startswith(METADATA_PREFIX):
            info, generation = Served.parse(value.string_value)
            out[int(key.removeprefix(METADATA_PREFIX))] = Served.of(info, generation)
    return out


def _place(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (model files are large), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_version(
    repository: Path,
    model: str,
    model_dir: Path,
    number: int,
    generation: int,
    batching: Batching,
    backend: str = "python",
) -> Path:
    """Add (or replace) version ``number`` of ``model`` from a model directory and rewrite its config;
    versions beyond the newest ``versions_kept`` are removed. Returns the model folder."""
    if number < 1:
        raise ValueError(f"Triton versions start at 1, not {number}")
    if not (model_dir / ONNX_FILE).exists():
        raise FileNotFoundError(f"{model_dir} has no {ONNX_FILE} (processor export-onnx writes it)")
    info = ModelInfo.read(model_dir)
    folder = repository / model
    served = read_served(folder)
    if served and info.positions != served[max(served)].positions:
        raise ValueError(f"{model_dir}: positions {info.positions} differ from the served model's")
    version = folder / str(number)
    version.mkdir(parents=True, exist_ok=True)
    _place(model_dir / ONNX_FILE, version / ONNX_FILE)
    if backend == "python":
        shutil.copyfile(PYTHON_MODEL, version / "model.py")
    served[number] = Served.of(info, generation)
    keep = sorted(served)[-max(batching.versions_kept, 1) :]
    for old in set(served) - set(keep):
        shutil.rmtree(folder / str(old), ignore_errors=True)
        del served[old]
    config = build_config(model, backend, {n: served[n] for n in keep}, batching, fixed_size=backend != "python")
    from google.protobuf import text_format

    text = text_format.MessageToString(config)
    parse_config(text)  # what Triton will read must parse with its schema
    (folder / LABELS_FILE).write_text("".join(f"{p}\n" for p in info.positions))
    tmp = folder / (CONFIG_FILE + ".tmp")
    tmp.write_text(text)
    tmp.replace(folder / CONFIG_FILE)  # Triton (poll mode) never reads half a config
    return folder
