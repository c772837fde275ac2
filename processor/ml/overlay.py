"""A high-resolution overlay branch on a trained model (``processor train-overlay``).

Dealer overlays as published (a phone's date stamp, a site's faint watermark, a logo number plate) are a
few pixels at the size the position model sees. The branch looks at the photo at twice that size: the
ImageNet stem of EfficientNet-Lite0 (frozen) and four small trainable depthwise-separable stages, max- and
average-pooled, so a small local mark counts. Its features add a correction to the base model's banner
logit (zero at first); the base model's positions are untouched (it sees the same photo, halved in the
graph).

The combined model takes uint8 photos at the larger size, so the worker, the runtimes and the model
server need nothing new: only ``input_size`` in metadata.json changes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..model import METADATA_FILE, MODEL_FILE, ONNX_FILE, ModelInfo
from .dataset import Labelled, data_hash, load_arrays, read_labels
from .report import best_threshold, build_report, write_report

STAGES = (32, 64, 96, 128)  # filters of the trainable stride-2 stages after the frozen stem
STEM_END = "block0_project_bn"  # Lite0's stem and first block: stride 2, 16 channels, ImageNet edges


@dataclass(frozen=True, slots=True)
class OverlayOptions:
    """How to train the branch."""

    scale: int = 2  # the branch sees the photo at this many times the base model's size
    epochs: int = 12
    batch_size: int = 32
    seed: int = 1
    version: str | None = None
    verbose: int = 1


def has_branch(info: ModelInfo) -> bool:
    """Whether a model directory's model carries an overlay branch."""
    return "overlay_branch" in info.raw


def _stem(size: int) -> Any:
    import keras

    from . import backbone

    lite = backbone.load_sized(size)
    stem = keras.Model(lite.input, lite.get_layer(STEM_END).output, name="overlay_stem")
    stem.trainable = False
    return stem


def _head(stem_shape: tuple[int, ...]) -> Any:
    """The trainable stages over the stem's feature map, pooled: a vector per photo."""
    import keras
    from keras import layers

    maps = keras.Input(stem_shape, name="stem_map")
    x = maps
    for filters in STAGES:
        x = layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
        x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    pooled = layers.Concatenate()([layers.GlobalMaxPooling2D()(x), layers.GlobalAveragePooling2D()(x)])
    return keras.Model(maps, layers.Dropout(0.3)(pooled), name="overlay_head")


def _base_parts(base: Any) -> tuple[Any, Any, Any, Any]:
    """The base model's frozen blocks, its tuned blocks up to the pooled features, and its two heads."""
    import keras

    top = base.get_layer("tuned_top")
    pooled = keras.Model(top.input, top.get_layer("avg_pool").output, name="tuned_pool")
    return base.get_layer("frozen"), pooled, top.get_layer("banner"), top.get_layer("position")


def _banner_logit(features: int, base_banner: Any) -> tuple[Any, Any]:
    """The base's banner logit (frozen, its weights) and the branch's correction (zeros at first): the new
    banner score starts as the base's and moves only as far as the branch earns."""
    from keras import layers

    kernel, bias = base_banner.get_weights()
    base_logit = layers.Dense(1, name="base_banner_logit", trainable=False)
    base_logit.build((None, kernel.shape[0]))
    base_logit.set_weights([kernel, bias])
    correction = layers.Dense(1, kernel_initializer="zeros", name="overlay_logit")
    correction.build((None, features))
    return base_logit, correction


def _combined(base: Any, stem: Any, head: Any, logits: tuple[Any, Any], size: int, base_size: int) -> Any:
    """One model: uint8 photos at ``size`` in; the base's positions and the corrected banner score out."""
    import keras
    from keras import layers

    frozen, tuned_pool, _, position = _base_parts(base)
    inputs = keras.Input((size, size, 3), dtype="uint8", name="image")
    scaled = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0)(inputs)  # backbone.preprocess
    halved = layers.Resizing(base_size, base_size, interpolation="bilinear")(scaled)  # 2x: a 2x2 box average
    pooled = tuned_pool(frozen(halved))
    logit = layers.Add()([logits[0](pooled), logits[1](head(stem(scaled)))])
    banner = layers.Activation("sigmoid", name="banner")(logit)
    return keras.Model(inputs, {"banner": banner, "position": position(pooled)}, name="listing_image_overlay")


def train_overlay(
    base_dir: Path, data: list[Path], validation: Path, out: Path, opts: OverlayOptions | None = None
) -> dict[str, Any]:
    """Add an overlay branch to the tuned model in ``base_dir``; write the combined model to ``out``.

    Two steps: the branch learns to find banners on its own (``data``, augmented); then how much its
    logit adds to the base's is fitted on ``validation`` (a weight and an offset, ``fit_mix``), so a
    branch that does not help ends up weighing nothing."""
    import keras
    import tensorflow as tf
    from keras import layers

    from .train import _augment

    opts = opts or OverlayOptions()
    info = ModelInfo.read(base_dir)
    if has_branch(info) or info.raw.get("tune_from") is None:
        raise ValueError(f"{base_dir}: train-overlay takes a tuned EfficientNet-Lite0 model without a branch")
    keras.utils.set_random_seed(opts.seed)
    base_size = info.input_size[0]
    size = base_size * opts.scale
    base = keras.models.load_model(base_dir / MODEL_FILE, compile=False, safe_mode=True)
    items = [item for folder in data for item in read_labels(folder)]
    val_items = read_labels(validation)
    x, x_val = load_arrays(items, (size, size)), load_arrays(val_items, (size, size))
    y = np.array([i.banner for i in items], np.float32)
    y_val = np.array([i.banner for i in val_items], np.float32)
    share = float(y.mean())  # both banner classes weigh half
    weight = np.where(y == 1, 0.5 / max(share, 1e-3), 0.5 / max(1 - share, 1e-3)).astype(np.float32)

    stem = _stem(size)
    head = _head(stem.output.shape[1:])
    logits = _banner_logit(head.output.shape[-1], _base_parts(base)[2])
    image = keras.Input((size, size, 3), dtype="uint8", name="image")
    branch_logit = keras.Model(image, logits[1](head(stem(layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0)(image)))))
    trainer = keras.Model(image, layers.Activation("sigmoid")(branch_logit.output))
    trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy", metrics=["AUC"])
    logits[1].set_weights([np.random.default_rng(opts.seed).normal(0, 0.01, (head.output.shape[-1], 1)), np.zeros(1)])

    tf.random.set_seed(opts.seed)
    train_ds = (
        tf.data.Dataset.from_tensor_slices((x, y, weight))
        .shuffle(len(x), seed=opts.seed)
        .map(lambda img, label, w: (_augment(img, 0, 0)[0], label, w), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(opts.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    trainer.fit(
        train_ds,
        validation_data=(x_val, y_val),
        epochs=opts.epochs,
        verbose=opts.verbose,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=[
            keras.callbacks.EarlyStopping(monitor="val_AUC", mode="max", patience=3, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(monitor="val_AUC", mode="max", patience=1, factor=0.3),
        ],
    )
    base_val = np.asarray(logits[0](_base_features(base, x_val, base_size)), np.float64).reshape(-1)
    branch_val = np.asarray(branch_logit.predict(x_val, batch_size=64, verbose=0), np.float64).reshape(-1)
    weight_on_branch, offset = fit_mix(base_val, branch_val, y_val)
    kernel, bias = logits[1].get_weights()
    logits[1].set_weights([kernel * weight_on_branch, bias * weight_on_branch + offset])
    model = _combined(base, stem, head, logits, size, base_size)
    mix = {"weight_on_branch": round(weight_on_branch, 4), "offset": round(offset, 4)}
    return _write(model, info, data, validation, items, val_items, x_val, out, opts, size, mix)


def fit_mix(base: NDArray[np.float64], branch: NDArray[np.float64], y: NDArray[np.float32]) -> tuple[float, float]:
    """The weight w >= 0 and offset c that make sigmoid(base + w * branch + c) the best-calibrated banner
    score on labelled photos (logistic loss, both classes weighing half; Newton's method on two numbers)."""
    share = float(np.mean(y))
    sample = np.where(y == 1, 0.5 / max(share, 1e-3), 0.5 / max(1 - share, 1e-3))
    features = np.stack([branch, np.ones_like(branch)], axis=1)
    params = np.zeros(2)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(base + features @ params)))
        gradient = features.T @ (sample * (p - y))
        hessian = features.T @ (features * (sample * p * (1 - p))[:, None]) + 1e-6 * np.eye(2)
        params -= np.linalg.solve(hessian, gradient)
        params[0] = max(params[0], 0.0)
    return float(params[0]), float(params[1])


def _base_features(base: Any, x: NDArray[np.uint8], base_size: int) -> NDArray[np.float32]:
    """The base model's pooled features for photos at twice its size, halved as the combined model halves them."""
    import tensorflow as tf

    frozen, tuned_pool, _, _ = _base_parts(base)
    out = []
    for start in range(0, len(x), 64):
        small = tf.image.resize(tf.cast(x[start : start + 64], tf.float32), (base_size, base_size), "bilinear")
        out.append(np.asarray(tuned_pool(frozen(small / 128.0 - 127.0 / 128.0, training=False), training=False)))
    return np.concatenate(out).astype(np.float32)


def _write(
    model: Any,
    info: ModelInfo,
    data: list[Path],
    validation: Path,
    items: list[Labelled],
    val_items: list[Labelled],
    x_val: NDArray[np.uint8],
    out: Path,
    opts: OverlayOptions,
    size: int,
    mix: dict[str, float],
) -> dict[str, Any]:
    pred = model.predict(x_val, batch_size=64, verbose=0)
    scores = np.asarray(pred["banner"], np.float64).reshape(-1)
    threshold = best_threshold(scores, np.array([i.banner for i in val_items]))
    version = opts.version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M")
    positions = info.positions
    report = build_report(
        {"name": info.name, "version": version, "dir": str(out)},
        threshold,
        positions,
        val_items,
        scores,
        [positions[k] for k in np.argmax(pred["position"], axis=1)],
        f"validation split: {len(val_items)} images",
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_FILE).unlink(missing_ok=True)
    model.save(out / MODEL_FILE)
    metadata = {
        **{k: v for k, v in info.raw.items() if k not in ("onnx", "threshold_chosen_on")},
        "version": version,
        "input_size": [size, size],
        "preprocessing": "RGB uint8, resized (stretched) to input_size; the model rescales to [-1, 1] and "
        f"halves the photo for positions ({info.input_size[0]} px)",
        "banner_threshold": threshold,
        "overlay_branch": {
            "base": f"{info.name} {info.version}",
            "base_input_size": list(info.input_size),
            "stages": list(STAGES),
            "mix": mix,  # fitted on the validation set
            "validation": str(validation),
            "data": [str(folder) for folder in data],
            "data_hash": data_hash(items),
            "images": len(items),
            "seed": opts.seed,
            "trained_at": datetime.now(UTC).isoformat(),
        },
        "metrics": {
            "validation_images": len(val_items),
            "banner_accuracy": report["banner"]["accuracy"],
            "position_accuracy": report["position"]["accuracy"] if "position" in report else None,
        },
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    write_report(out, report)
    return metadata


def base_size(info: ModelInfo) -> tuple[int, int]:
    """The size the model's position part sees: half the input where there is a branch."""
    size = info.raw["overlay_branch"]["base_input_size"] if has_branch(info) else info.input_size
    return (int(size[0]), int(size[1]))


def tuned_weights(model: Any) -> dict[str, list[Any]]:
    """The tuned blocks' and both heads' weights by layer name, of a tuned model with or without a branch
    (the branch's base banner logit is the base's banner head)."""
    if "tuned_top" in {layer.name for layer in model.layers}:
        return {layer.name: layer.get_weights() for layer in model.get_layer("tuned_top").layers if layer.weights}
    weights = {layer.name: layer.get_weights() for layer in model.get_layer("tuned_pool").layers if layer.weights}
    weights["banner"] = model.get_layer("base_banner_logit").get_weights()
    weights["position"] = model.get_layer("position").get_weights()
    return weights


def reattach(tuned: Any, init_dir: Path) -> Any:
    """``tuned``, a base just fine-tuned from the model in ``init_dir``, with that model's branch as it was."""
    import keras

    info = ModelInfo.read(init_dir)
    initial = keras.models.load_model(init_dir / MODEL_FILE, compile=False, safe_mode=True)
    kept = initial.get_layer("overlay_logit").get_weights()
    logits = _banner_logit(kept[0].shape[0], _base_parts(tuned)[2])
    logits[1].set_weights(kept)
    stem, head = initial.get_layer("overlay_stem"), initial.get_layer("overlay_head")
    return _combined(tuned, stem, head, logits, info.input_size[0], base_size(info)[0])
