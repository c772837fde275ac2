"""Write a model directory's ``model.onnx`` for ONNX Runtime (``processor export-onnx``).

The Keras model is converted with tf2onnx (uint8 images in, ``banner`` and ``position`` out, any batch
size). With ``int8``, ONNX Runtime's static quantization (QDQ, int8 weights per channel, uint8
activations) calibrates its activation ranges on labelled images: calibration data, never a test set.
Either way the export is checked against the Keras model on those images, and the agreement is recorded
in metadata.json under ``onnx``, so a quantized model's cost in accuracy is on record beside it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..model import METADATA_FILE, MODEL_FILE, ONNX_FILE, Classifier, ModelInfo
from .dataset import Labelled, data_hash, load_arrays, read_labels

OPSET = 17
BATCH = 32


def export_onnx(
    model_dir: Path, calibration: Sequence[Path] = (), int8: bool = False, images: int = 512, seed: int = 1
) -> dict[str, Any]:
    """Write ``model_dir/model.onnx`` (int8 when asked), compare it with model.keras on up to ``images``
    calibration images (or generated noise when none are given) and record the result in metadata.json."""
    if int8 and not calibration:
        raise ValueError("int8 needs calibration images (--calibration DIR)")
    info = ModelInfo.read(model_dir)
    items = sample(calibration, images, seed)
    if items:
        pixels = load_arrays(items, info.input_size)
    else:
        rng = np.random.default_rng(seed)
        pixels = rng.integers(0, 256, (64, info.input_size[1], info.input_size[0], 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain.onnx"
        _convert(model_dir / MODEL_FILE, info.input_size, plain)
        if int8:
            _quantize(plain, model_dir / ONNX_FILE, pixels)
        else:
            (model_dir / ONNX_FILE).write_bytes(plain.read_bytes())
    check = compare(model_dir, pixels)
    record: dict[str, Any] = {
        "file": ONNX_FILE,
        "opset": OPSET,
        "int8": int8,
        "checked_on": {
            "data": [str(folder) for folder in calibration] or ["random noise"],
            "images": len(pixels),
            **({"data_hash": data_hash(items)} if items else {}),
        },
        "agreement_with_keras": check,
    }
    meta = {**info.raw, "onnx": record}
    (model_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return record


def sample(calibration: Sequence[Path], images: int, seed: int) -> list[Labelled]:
    """Up to ``images`` labelled photos of the calibration folders, drawn at random (in their order)."""
    items = [item for folder in calibration for item in read_labels(folder)]
    chosen = sorted(np.random.default_rng(seed).choice(len(items), size=min(images, len(items)), replace=False))
    return [items[i] for i in chosen]


def compare(model_dir: Path, pixels: NDArray[np.uint8]) -> dict[str, float]:
    """How closely the ONNX model follows the Keras one (``agreement``)."""
    return agreement(Classifier(model_dir, runtime="keras"), Classifier(model_dir, runtime="onnx"), pixels)


def agreement(reference: Classifier, other: Classifier, pixels: NDArray[np.uint8]) -> dict[str, float]:
    """Same banner decision, same top position, and the largest score difference, over ``pixels``."""
    a, b = _scores(reference, pixels), _scores(other, pixels)
    threshold = reference.banner_threshold
    return {
        "banner_same": round(float(np.mean((a[0] >= threshold) == (b[0] >= threshold))), 4),
        "position_same": round(float(np.mean(a[1].argmax(1) == b[1].argmax(1))), 4),
        "max_score_difference": round(float(max(np.abs(a[0] - b[0]).max(), np.abs(a[1] - b[1]).max())), 4),
    }


def _scores(classifier: Classifier, pixels: NDArray[np.uint8]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    banner, position = [], []
    for start in range(0, len(pixels), BATCH):
        for p in classifier.predict(list(pixels[start : start + BATCH])):
            banner.append(p.banner_score)
            position.append(list(p.position_scores.values()))
    return np.array(banner), np.array(position)


def _convert(keras_file: Path, size: tuple[int, int], out: Path) -> None:
    import keras
    import tensorflow as tf
    import tf2onnx

    model = keras.models.load_model(keras_file, compile=False, safe_mode=True)
    spec = (tf.TensorSpec((None, size[1], size[0], 3), tf.uint8, name="image"),)
    forward = tf.function(lambda x: model(x, training=False))
    tf2onnx.convert.from_function(forward, input_signature=spec, opset=OPSET, output_path=str(out))


def _quantize(plain: Path, out: Path, pixels: NDArray[np.uint8]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches: Iterator[NDArray[np.uint8]] = (pixels[i : i + BATCH] for i in range(0, len(pixels), BATCH))

        def get_next(self) -> dict[str, NDArray[np.uint8]] | None:
            batch = next(self._batches, None)
            return None if batch is None else {"image": batch}

    quantize_static(
        str(plain),
        str(out),
        Batches(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
