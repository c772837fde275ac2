"""Write a model directory's int8 OpenVINO model with NNCF (``processor quantize``).

NNCF's post-training quantization reads ``model.onnx``, sets its int8 ranges on labelled calibration photos
(never a test set) and writes ``model-int8.xml`` and ``.bin``, which the OpenVINO runtime then runs by
default (``PROCESSOR_INFERENCE_PRECISION=auto``). The mixed preset (asymmetric activations) kept position
accuracy on the real-photo calibration split where the symmetric one lost 0.6 points. The result is checked
against the float model on the same photos and the agreement is recorded in metadata.json under
``openvino_int8``, so the cost in accuracy is on record beside the model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..model import INT8_FILE, METADATA_FILE, ONNX_FILE, Classifier, ModelInfo
from .dataset import data_hash, load_arrays
from .onnx_export import agreement, sample


def quantize(model_dir: Path, calibration: Sequence[Path], images: int = 512, seed: int = 1) -> dict[str, Any]:
    """Quantize ``model_dir/model.onnx`` to int8 on up to ``images`` calibration photos, compare it with the
    float model on them and record the result in metadata.json."""
    import nncf
    import openvino as ov

    if not (model_dir / ONNX_FILE).exists():
        raise FileNotFoundError(f"{model_dir}: no {ONNX_FILE}; run processor export-onnx first")
    info = ModelInfo.read(model_dir)
    items = sample(calibration, images, seed)
    if not items:
        raise ValueError("quantize needs labelled calibration photos (--calibration DIR)")
    pixels = load_arrays(items, info.input_size)
    (model_dir / INT8_FILE).unlink(missing_ok=True)  # so that auto loads the float model, the reference below
    float_model = Classifier(model_dir, runtime="openvino")
    quantized = nncf.quantize(
        ov.Core().read_model(str(model_dir / ONNX_FILE)),
        nncf.Dataset([pixels[i : i + 1] for i in range(len(pixels))]),
        subset_size=len(pixels),
        preset=nncf.QuantizationPreset.MIXED,
    )
    ov.save_model(quantized, str(model_dir / INT8_FILE))
    int8_model = Classifier(model_dir, runtime="openvino", precision="int8")
    record = {
        "file": INT8_FILE,
        "tool": f"nncf {nncf.__version__}, preset mixed",
        "checked_on": {
            "data": [str(folder) for folder in calibration],
            "images": len(pixels),
            "data_hash": data_hash(items),
        },
        "agreement_with_float": agreement(float_model, int8_model, pixels),
    }
    meta = {**info.raw, "openvino_int8": record}
    (model_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return record
