"""The classifier: a model directory (model.keras + metadata.json, optionally model.onnx), loaded safely.

``Classifier.predict`` takes a list of uint8 images and returns exactly one
prediction per image, or raises; it is called from a worker thread.

Three runtimes run the same model: Keras (any backend; the one for GPU hosts, e.g. JAX), ONNX Runtime
on the ``model.onnx`` that ``processor export-onnx`` writes beside model.keras (about 2x faster on CPUs,
and int8 where the model was quantized), and OpenVINO on the same file (in bfloat16 on CPUs that have it,
about 2x faster again on an AVX-512 BF16 EPYC; real-photo accuracy measured in docs/model/benchmarks.md),
or on ``model-int8.xml`` where ``processor quantize`` wrote one (int8 by NNCF; 1.1-1.3x bf16 there).
``runtime="auto"`` takes OpenVINO, else ONNX Runtime, when the file is there and the package is installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from .errors import ModelError

if TYPE_CHECKING:
    from .settings import Settings

MODEL_FILE = "model.keras"
ONNX_FILE = "model.onnx"
INT8_FILE = "model-int8.xml"  # with model-int8.bin: model.onnx quantized to int8 by NNCF (processor quantize)
METADATA_FILE = "metadata.json"
RUNTIMES = ("auto", "keras", "onnx", "openvino")
UNSURE = "unsure"  # the position when the top score is below the model's position_floor


@dataclass(frozen=True, slots=True)
class Prediction:
    """One image's scores."""

    banner_score: float
    position_scores: dict[str, float]

    @property
    def position(self) -> str:
        return max(self.position_scores, key=self.position_scores.__getitem__)

    def position_at(self, floor: float) -> str:
        """The top position, or UNSURE when its score is below ``floor`` (metadata ``position_floor``)."""
        top = self.position
        return top if self.position_scores[top] >= floor else UNSURE


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What metadata.json says about a model."""

    name: str
    version: str
    positions: tuple[str, ...]
    input_size: tuple[int, int]  # width, height
    banner_threshold: float
    raw: dict[str, Any]
    position_floor: float = 0.0  # below it the position is UNSURE; 0.0 (never) for models without one

    @classmethod
    def read(cls, model_dir: Path) -> ModelInfo:
        meta = json.loads((model_dir / METADATA_FILE).read_text())
        return cls(
            name=meta["name"],
            version=meta["version"],
            positions=tuple(meta["labels"]["position"]),
            input_size=(int(meta["input_size"][0]), int(meta["input_size"][1])),
            banner_threshold=float(meta.get("banner_threshold", 0.5)),
            raw=meta,
            position_floor=float(meta.get("position_floor", 0.0)),
        )


def _compiled_call(model: Any) -> Any:
    """A compiled forward pass: tf.function on TensorFlow (2-6x cheaper per call than
    ``model.predict``; XLA is off, it was slower on CPUs), ``predict_on_batch`` elsewhere."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return model.predict_on_batch
    import tensorflow as tf

    forward = tf.function(lambda x: model(x, training=False), reduce_retracing=True, jit_compile=False)
    return lambda batch: {k: v.numpy() for k, v in forward(tf.constant(batch)).items()}


def _onnx_call(path: Path, threads: int = 0, spin: bool = False) -> Any:
    """A forward pass through ONNX Runtime, outputs by name (``banner``, ``position``).

    ``threads`` 0 is ONNX Runtime's default (one per core). Its threads spin between operators by
    default, which burns the CPU that the worker's decode threads and event loop need; ``spin`` off
    makes them sleep instead."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # A memory pattern is planned and kept for every input shape, so batch sizes 1..32 grow RSS by ~200 MB;
    # without them it grows ~130 MB (the arena, reached at the largest batch) and runs as fast.
    options.enable_mem_pattern = False
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0].name
    names = [output.name for output in session.get_outputs()]
    return lambda batch: dict(zip(names, session.run(names, {image: batch}), strict=True))


def choose_runtime(model_dir: Path, runtime: str = "auto") -> str:
    """``keras``, ``onnx`` or ``openvino`` for this directory: ``auto`` is OpenVINO, else ONNX Runtime,
    where model.onnx and the package are both there, unless another Keras backend was chosen
    (KERAS_BACKEND=jax on a GPU host): then Keras."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose from {RUNTIMES}")
    if runtime != "auto":
        return runtime
    if not (model_dir / ONNX_FILE).exists() or os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        return "keras"
    for package, name in (("openvino", "openvino"), ("onnxruntime", "onnx")):
        if importlib.util.find_spec(package) is not None:
            return name
    return "keras"


def openvino_fixed_batch(core: Any, source: Any, size: int, config: dict[str, Any]) -> Any:
    """``source`` (an OpenVINO model with a dynamic batch) compiled for batches of exactly ``size``."""
    model, shape = source.clone(), source.inputs[0].get_partial_shape()
    shape[0] = size
    model.reshape(shape)
    return core.compile_model(model, "CPU", config)


def _openvino_call(path: Path, threads: int = 0, precision: str = "auto", one_thread_upto: int = 0) -> Any:
    """A forward pass through OpenVINO's CPU plugin, outputs by name. ``precision`` auto is the plugin's
    default: bfloat16 on CPUs with native support (AVX-512 BF16, AMX), else float32.

    Batches are padded to a power of two, and each padded size runs on a compilation of its own with that
    batch size fixed: the plugin picks its kernels for the shape, 1.26-1.35 times the images/s of one
    compilation with a dynamic batch at every size from 1 to 32 (alternated rounds, 2-core Xeon with AMX),
    for the same memory as the dynamic one's per-shape executors (~40 MB a size at 1-8, ~90 at 32). Sizes
    compile on first use (0.2-0.6 s; ``Classifier.warm_up`` does it at start-up). Sizes of at most
    ``one_thread_upto`` images compile with one thread: on a small batch the threads of a two-thread
    compilation mostly wait for each other (2 cores: 60 % more CPU per image at 1-4 images for 1-3 ms less)."""
    import openvino as ov

    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}  # one batch at a time, all cores on it
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision != "auto":
        config["INFERENCE_PRECISION_HINT"] = precision
    core = ov.Core()
    source = core.read_model(str(path))
    names = [output.any_name for output in source.outputs]
    requests: dict[int, Any] = {}

    def request_for(size: int) -> Any:
        if size not in requests:
            one_thread = {"INFERENCE_NUM_THREADS": 1} if size <= one_thread_upto else {}
            requests[size] = openvino_fixed_batch(core, source, size, config | one_thread).create_infer_request()
        return requests[size]

    def call(batch: NDArray[np.uint8]) -> dict[str, Any]:
        n = len(batch)
        padded = 1 << (n - 1).bit_length()
        if padded != n:
            batch = np.concatenate([batch, np.zeros((padded - n, *batch.shape[1:]), batch.dtype)])
        runs = request_for(padded)
        runs.infer({0: batch})
        return {name: np.array(runs.get_output_tensor(i).data[:n]) for i, name in enumerate(names)}  # copies

    return call


class Classifier:
    """A loaded model directory."""

    def __init__(
        self,
        model_dir: Path,
        banner_threshold: float | None = None,
        runtime: str = "auto",
        *,
        threads: int = 0,
        spin: bool = False,
        precision: str = "auto",
        one_thread_upto: int = 0,
    ) -> None:
        self.info = ModelInfo.read(model_dir)
        self.generation = 0  # the registry's promotion order this model runs under (0: not from the registry)
        self.banner_threshold = self.info.banner_threshold if banner_threshold is None else banner_threshold
        self.runtime = choose_runtime(model_dir, runtime)
        self.precision = "f32"  # what the runtime computes in (OpenVINO: see below)
        if self.runtime == "onnx":
            self._model: Any = None
            self._call = _onnx_call(model_dir / ONNX_FILE, threads, spin)
        elif self.runtime == "openvino":
            self._model = None
            has_int8 = (model_dir / INT8_FILE).exists()
            if precision == "int8" and not has_int8:
                raise ModelError(f"{model_dir}: precision int8 needs {INT8_FILE} (processor quantize)")
            int8 = has_int8 and precision in ("auto", "int8")
            self.precision = "int8" if int8 else precision
            path = model_dir / (INT8_FILE if int8 else ONNX_FILE)
            self._call = _openvino_call(path, threads, "auto" if int8 else precision, one_thread_upto)
        else:
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ info logs
            import keras

            self._model = keras.models.load_model(model_dir / MODEL_FILE, compile=False, safe_mode=True)
            self._call = _compiled_call(self._model)
        self._lock = threading.Lock()  # one inference at a time per model object
        blank = np.zeros((self.info.input_size[1], self.info.input_size[0], 3), np.uint8)
        for size in (1, 2, 3):  # trace once, then once more with a relaxed batch dimension
            self.predict([blank] * size)

    @classmethod
    def for_worker(cls, model_dir: Path, settings: Settings) -> Classifier:
        """``model_dir`` as a worker runs it: the threshold, runtime and inference settings of ``settings``."""
        return cls(
            model_dir,
            settings.banner_threshold,
            settings.inference_runtime,
            threads=settings.inference_threads,
            spin=settings.inference_spin,
            precision=settings.inference_precision,
            one_thread_upto=settings.inference_one_thread_upto,
        )

    @property
    def input_size(self) -> tuple[int, int]:
        return self.info.input_size

    def warm_up(self, batch_size: int) -> None:
        """Run batches of every power of two up to ``batch_size``, then ``batch_size`` itself, so the runtime's
        memory (ONNX Runtime's arena, OpenVINO's compilation per batch size) reaches its steady size at start-up
        instead of creeping up during the first minutes of traffic."""
        blank = np.zeros((self.info.input_size[1], self.info.input_size[0], 3), np.uint8)
        size = 1
        while size < batch_size:
            self.predict([blank] * size)
            size *= 2
        self.predict([blank] * batch_size)

    def predict(self, images: list[NDArray[np.uint8]]) -> list[Prediction]:
        """Score a batch; one Prediction per image, in order."""
        if not images:
            return []
        batch = np.stack(images)
        try:
            with self._lock:
                out = self._call(batch)
        except Exception as exc:  # the framework raises anything; callers split and retry
            raise ModelError(f"inference failed on a batch of {len(images)}: {exc}") from exc
        banner = np.asarray(out["banner"], dtype=np.float64).reshape(-1)
        position = np.asarray(out["position"], dtype=np.float64)
        if banner.shape[0] != len(images) or position.shape != (len(images), len(self.info.positions)):
            raise ModelError(f"model returned {banner.shape[0]} results for {len(images)} images")
        return [
            Prediction(float(b), dict(zip(self.info.positions, map(float, p), strict=True)))
            for b, p in zip(banner, position, strict=True)
        ]
