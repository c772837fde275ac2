"""The model as Triton runs it: a Python-backend model that scores with ONNX Runtime.

``processor serve-model`` copies this file as ``model.py`` into each version folder of its model
repository, beside that version's ``model.onnx``. It runs inside Triton's Python-backend stub, so it
imports nothing from the processor. Triton's dynamic batcher hands ``execute`` several requests at
once; they are concatenated into one ONNX Runtime call and the outputs split back.

Tensors cross the stub by DLPack, never ``as_numpy`` / ``Tensor(name, array)``: the stub shipped in
nvidia-pytriton 0.7.0 was built with a pybind11 that predates NumPy 2 and reads a NumPy 2 array's
item size wrongly (the outputs arrive empty).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils  # type: ignore[import-not-found]  # only inside the stub

INPUT = "image"
OUTPUTS = ("banner", "position")
CPU_DEVICE = (1, 0)  # DLPack: kDLCPU, device 0


class _Capsule:
    """A DLPack producer around a stub tensor, for ``np.from_dlpack``."""

    def __init__(self, tensor: Any) -> None:
        self._tensor = tensor

    def __dlpack__(self, **_kwargs: Any) -> Any:
        return self._tensor.to_dlpack()

    def __dlpack_device__(self) -> tuple[int, int]:
        return CPU_DEVICE


class TritonPythonModel:
    """One model version: an ONNX Runtime session over this folder's model.onnx."""

    def initialize(self, args: dict[str, str]) -> None:
        folder = os.path.join(args["model_repository"], args["model_version"])
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            os.path.join(folder, "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        image = self._session.get_inputs()[0]
        self._input = image.name
        self._size = (int(image.shape[1]), int(image.shape[2]))  # height, width

    def _fit(self, batch: np.ndarray) -> np.ndarray:
        """Images sized for another version (only while workers follow a rollout), nearest-neighbour resized."""
        height, width = self._size
        if batch.shape[1:3] == (height, width):
            return batch
        rows = np.arange(height) * batch.shape[1] // height
        cols = np.arange(width) * batch.shape[2] // width
        return batch[:, rows][:, :, cols]

    def execute(self, requests: list[Any]) -> list[Any]:
        batches = [self._fit(np.from_dlpack(_Capsule(pb_utils.get_input_tensor_by_name(r, INPUT)))) for r in requests]
        sizes = [b.shape[0] for b in batches]
        try:
            outputs = self._session.run(list(OUTPUTS), {self._input: np.ascontiguousarray(np.concatenate(batches))})
        except Exception as exc:  # one bad request fails the whole call; Triton reports it to each caller
            return [pb_utils.InferenceResponse(error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))] * len(
                requests
            )
        responses = []
        start = 0
        for size in sizes:
            tensors = [
                pb_utils.Tensor.from_dlpack(name, np.ascontiguousarray(out[start : start + size]))
                for name, out in zip(OUTPUTS, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses

    def finalize(self) -> None:
        self._session = None
