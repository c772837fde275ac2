"""Average the weights of models fine-tuned alike into one (``processor soup``).

A *model soup* (Wortsman et al., 2022): models fine-tuned from the same pretrained weights with different
seeds or data land in one basin of the loss, so the mean of their weights is a model as fast as each of
them and often better than any. Weighted, it is WiSE-FT (Wortsman et al., 2022): the shipped model and the
same model fine-tuned on new photos (``processor train --init``), mixed, keep more of the first's robustness.
Runs with different seeds start their heads from different random weights, and their mean was underconfident
here; a model and its own fine-tuned continuation mix smoothly (docs/model/retrain.md).
Only models of one recipe mix: the same backbone, tuned blocks, input size and labels, and the same frozen
(pretrained) weights; anything else is refused, since the mean of unrelated weights is noise. The soup keeps
the first model's banner threshold: choose its own on calibration photos (``processor calibrate --write``),
then export it (``processor export-onnx``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..model import METADATA_FILE, MODEL_FILE, ONNX_FILE, ModelInfo

SAME_RECIPE = ("name", "backbone", "tune_from", "input_size", "labels")  # metadata every ingredient shares


def soup(
    model_dirs: Sequence[Path], out: Path, version: str | None = None, weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """Write the mean of ``model_dirs``' weights (uniform, or weighted by ``weights``) as a model directory
    ``out``; return its metadata."""
    import keras

    if len(model_dirs) < 2:
        raise ValueError("a soup needs at least two model directories")
    share = np.ones(len(model_dirs)) if weights is None else np.asarray(weights, dtype=np.float64)
    if share.shape != (len(model_dirs),) or (share < 0).any() or share.sum() <= 0:
        raise ValueError(f"weights {list(share)}: one non-negative weight per model, not all zero")
    share = share / share.sum()
    infos = [ModelInfo.read(d) for d in model_dirs]
    for key in SAME_RECIPE:
        values = {json.dumps(info.raw.get(key)) for info in infos}
        if len(values) > 1:
            raise ValueError(f"the models differ in {key} ({', '.join(sorted(values))}): only one recipe mixes")
    models = [keras.models.load_model(d / MODEL_FILE, compile=False, safe_mode=True) for d in model_dirs]
    _check_same_start(models, model_dirs)
    mean = [
        np.tensordot(share, np.stack(arrays).astype(np.float64), 1).astype(arrays[0].dtype)
        for arrays in _weights(models)
    ]
    souped = models[0]
    souped.set_weights(mean)
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_FILE).unlink(missing_ok=True)  # an export of an earlier model would be served in its place
    souped.save(out / MODEL_FILE)
    first = infos[0].raw
    meta = {
        **{k: v for k, v in first.items() if k not in ("metrics", "onnx", "openvino_int8", "training")},
        "version": version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M"),
        "soup": {
            "of": [
                {"version": info.version, "dir": str(d), "data_hash": info.raw.get("training", {}).get("data_hash")}
                for info, d in zip(infos, model_dirs, strict=True)
            ],
            "weights": [round(float(w), 4) for w in share],
            "banner_threshold": "the first model's, until processor calibrate --write",
            "made_at": datetime.now(UTC).isoformat(),
        },
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _weights(models: Sequence[Any]) -> list[list[np.ndarray]]:
    """The models' weights, grouped by variable: one list of arrays per variable."""
    per_model = [m.get_weights() for m in models]
    if len({len(w) for w in per_model}) > 1:
        raise ValueError("the models have different numbers of weights: not one architecture")
    grouped = [list(arrays) for arrays in zip(*per_model, strict=True)]
    for arrays in grouped:
        if len({a.shape for a in arrays}) > 1:
            raise ValueError(f"weight shapes differ ({sorted({a.shape for a in arrays})}): not one architecture")
    return grouped


def _check_same_start(models: Sequence[Any], model_dirs: Sequence[Path]) -> None:
    """Refuse models whose frozen weights differ: they did not start from the same pretrained weights."""
    frozen = [[np.asarray(v) for v in m.non_trainable_weights] for m in models]
    for other, where in zip(frozen[1:], model_dirs[1:], strict=True):
        if len(other) != len(frozen[0]) or not all(map(np.array_equal, frozen[0], other)):
            raise ValueError(f"{where}: its frozen weights differ from {model_dirs[0]}'s: not the same start")
