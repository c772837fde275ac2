"""Train a model directory from labelled images (``processor train``).

Three steps: ``prepare`` decodes the labelled sets into arrays with a train/validation split and
class weights; ``fit_cnn`` or ``fit_transfer`` trains; ``write_model_dir`` writes model.keras,
metadata.json and the validation report.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..model import METADATA_FILE, MODEL_FILE, ONNX_FILE, ModelInfo
from .architecture import BACKBONES, build_backbone, build_model
from .dataset import NO_POSITION, Labelled, data_hash, load_arrays, read_labels
from .report import best_threshold, build_report, write_report

COMPILE: dict[str, Any] = {  # losses and metrics of both heads, for every way of training
    "loss": {"banner": "binary_crossentropy", "position": "sparse_categorical_crossentropy"},
    "metrics": {"banner": ["accuracy"], "position": ["accuracy"]},
}


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """How to train; the defaults train the compact CNN from scratch."""

    init: Path | None = None  # fine-tune this model directory (a cnn or a tuned backbone)
    epochs: int = 30
    seed: int = 1
    input_size: int = 128
    batch_size: int = 32
    name: str | None = None
    version: str | None = None
    verbose: int = 1
    backbone: str = "cnn"
    backbone_weights: str | None = None
    tune_from: int | None = None  # efficientnet-lite0: train its blocks from this index on, not only heads
    validation: Path | None = None  # validate (early stopping, banner threshold) on this set, not a random eighth
    balance_positions: bool = False  # weigh each position class alike (inverse frequency, capped)
    augmented_copies: int = 1  # tuned backbone: flipped and colour-jittered copies of each training photo
    label_smoothing: float = 0.0  # position head: this share of each label spread over all classes
    teacher: Path | None = None  # tuned backbone: distil this model directory's answers into the one trained
    distill: float = 0.5  # with a teacher: the teacher's share of each training target


@dataclass(frozen=True, slots=True)
class Prepared:
    """Decoded training data: pixels, both labels, per-head sample weights and the split."""

    items: list[Labelled]
    positions: tuple[str, ...]
    size: tuple[int, int]
    x: NDArray[np.uint8]
    y_banner: NDArray[np.float32]
    y_position: NDArray[np.int64]
    weights: dict[str, NDArray[np.float32]]
    train_idx: NDArray[np.int64]
    val_idx: NDArray[np.int64]
    initialized_from: str | None


def train(data: Path | Sequence[Path], out: Path, options: TrainOptions | None = None) -> dict[str, Any]:
    """Train, pick the banner threshold on a held-out split, write the model directory; returns its metadata."""
    import keras

    opts = options or TrainOptions()
    if opts.init is not None:  # fine-tuning: the architecture is the initial model's
        raw = ModelInfo.read(opts.init).raw
        opts = replace(opts, backbone=raw.get("backbone", "cnn"), tune_from=raw.get("tune_from"))
        if opts.backbone != "cnn" and opts.tune_from is None:
            raise ValueError(f"--init {opts.init}: fine-tuning takes a cnn or a tuned backbone (--tune-from) model")
    if opts.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {opts.backbone!r}; choose from {BACKBONES}")
    if opts.tune_from is not None and opts.backbone != "efficientnet-lite0":
        raise ValueError("tune_from needs --backbone efficientnet-lite0")
    if opts.teacher is not None and (opts.tune_from is None or opts.label_smoothing):
        raise ValueError("--teacher needs --tune-from, and its answers take the place of --label-smoothing")
    keras.utils.set_random_seed(opts.seed)
    sources = [data] if isinstance(data, Path) else list(data)
    prepared = prepare(sources, opts)
    if opts.backbone == "cnn":
        model = fit_cnn(prepared, opts)
    elif opts.tune_from is not None:
        model = fit_tuned(prepared, opts)
    else:
        model = fit_transfer(prepared, opts)
    return write_model_dir(model, prepared, sources, out, opts)


MAX_CLASS_WEIGHT = 10.0


def position_weights(positions: list[str], train_idx: NDArray[np.int64]) -> NDArray[np.float32]:
    """Inverse-frequency weights over the training split (mean 1 there, at most MAX_CLASS_WEIGHT); 0 if unknown."""
    counts = Counter(positions[i] for i in train_idx if positions[i] != NO_POSITION)
    total, classes = sum(counts.values()), len(counts)
    weight = {c: min(MAX_CLASS_WEIGHT, total / (classes * n)) for c, n in counts.items()}
    return np.array([weight.get(p, 0.0) for p in positions], dtype=np.float32)


def prepare(sources: Sequence[Path], opts: TrainOptions) -> Prepared:
    """Read and decode the labelled sets; validate on ``opts.validation`` or a random eighth; balance classes."""
    items = [item for source in sources for item in read_labels(source)]
    n_train = len(items)
    if opts.validation is not None:
        items += read_labels(opts.validation)
    positions = tuple(sorted({i.position for i in items if i.position != NO_POSITION})) or ("other",)
    size = (opts.input_size, opts.input_size)
    initialized_from = None
    if opts.init is not None:  # fine-tuning keeps the model's labels and input size
        info = ModelInfo.read(opts.init)
        unknown = {i.position for i in items} - {*info.positions, NO_POSITION}
        if unknown:
            raise ValueError(f"--init {opts.init}: positions {sorted(unknown)} unknown to it")
        positions, size, initialized_from = info.positions, info.input_size, f"{info.name} {info.version}"
    y_banner = np.array([i.banner for i in items], dtype=np.float32)
    order = list(range(n_train))
    random.Random(opts.seed).shuffle(order)
    if opts.validation is not None:
        val, tr = np.arange(n_train, len(items)), np.array(order)
    else:
        n_val = max(1, len(order) // 8)
        val, tr = np.array(order[:n_val]), np.array(order[n_val:])
    known = [i.position if i.position in positions else NO_POSITION for i in items]
    position_weight = (
        position_weights(known, tr)
        if opts.balance_positions
        else np.array([1.0 if p != NO_POSITION else 0.0 for p in known], dtype=np.float32)
    )
    share = float(y_banner[tr].mean())  # class balancing: both banner classes weigh half
    banner_weight = np.where(y_banner == 1, 0.5 / max(share, 1e-3), 0.5 / max(1 - share, 1e-3)).astype(np.float32)
    return Prepared(
        items=items,
        positions=positions,
        size=size,
        x=load_arrays(items, size),
        y_banner=y_banner,
        y_position=np.array([positions.index(i.position) if i.position in positions else 0 for i in items]),
        weights={
            "banner": banner_weight,
            "position": position_weight,
        },
        train_idx=tr,
        val_idx=val,
        initialized_from=initialized_from,
    )


def fit_cnn(p: Prepared, opts: TrainOptions) -> Any:
    """Train the compact CNN from scratch, or fine-tune ``opts.init``, with a tf.data pipeline."""
    import keras

    if opts.init is None:
        model, learning_rate = build_model(p.positions, p.size), 2e-3
    else:
        model = keras.models.load_model(opts.init / MODEL_FILE, compile=False, safe_mode=True)
        learning_rate = 5e-4
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), **_compile_args(opts))
    model.fit(
        _dataset(p, p.train_idx, opts, training=True),
        validation_data=_dataset(p, p.val_idx, opts, training=False),
        epochs=opts.epochs,
        verbose=opts.verbose,
        shuffle=False,  # the tf.data pipeline shuffles
        callbacks=[
            keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True),
            keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.5),
        ],
    )
    return model


def fit_transfer(p: Prepared, opts: TrainOptions) -> Any:
    """Frozen backbone, new heads: features are computed once (plus mirrored copies as augmentation),
    the heads train on them, and the result is one model from uint8 pixels to both heads."""
    import keras
    from keras import layers

    extractor = build_backbone(opts.backbone, opts.input_size, opts.backbone_weights)
    feats = extractor.predict(p.x, batch_size=64, verbose=opts.verbose)
    mirrored = extractor.predict(p.x[:, :, ::-1], batch_size=64, verbose=opts.verbose)
    inputs = keras.Input((feats.shape[1],), name="features")
    hidden = layers.Dropout(0.3)(layers.Dense(256, activation="relu")(layers.Dropout(0.2)(inputs)))
    heads = keras.Model(
        inputs,
        {
            "banner": layers.Dense(1, activation="sigmoid", name="banner")(hidden),
            "position": layers.Dense(len(p.positions), activation="softmax", name="position")(hidden),
        },
        name="heads",
    )
    heads.compile(optimizer=keras.optimizers.Adam(1e-3), **_compile_args(opts))
    _fit_on_features(
        heads,
        p,
        opts,
        feats,
        mirrored[p.train_idx],
        [keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
    )
    return keras.Model(extractor.input, heads(extractor.output), name=f"listing_image_{opts.backbone}")


def fit_tuned(p: Prepared, opts: TrainOptions) -> Any:
    """Fine-tune EfficientNet-Lite0 from block ``opts.tune_from`` on: the frozen blocks below run once
    per image (plus one augmented copy), their feature maps are kept, and the upper blocks, initialised
    with the ImageNet weights (batch-norm statistics kept), train with the two heads on them."""
    import keras
    from keras import layers

    from . import backbone

    if opts.backbone != "efficientnet-lite0" or opts.tune_from is None:
        raise ValueError("tune_from needs --backbone efficientnet-lite0")
    if p.size[0] != p.size[1]:
        raise ValueError("tune_from needs a square input size")
    if not 1 <= opts.tune_from < len(backbone.block_specs()):
        raise ValueError(f"tune_from: a block index from 1 to {len(backbone.block_specs()) - 1}")
    if opts.init is None:
        lite = backbone.load_sized(p.size[0])
        frozen = keras.Model(
            lite.input, lite.get_layer(backbone.block_output(opts.tune_from - 1)).output, name="frozen"
        )
        start = {layer.name: layer.get_weights() for layer in lite.layers if layer.weights}
        learning_rate = 3e-4
    else:  # fine-tune a tuned model further (e.g. on photos from the labelling loop)
        initial = keras.models.load_model(opts.init / MODEL_FILE, compile=False, safe_mode=True)
        frozen = initial.get_layer("frozen")
        start = {layer.name: layer.get_weights() for layer in initial.get_layer("tuned_top").layers if layer.weights}
        learning_rate = 1e-4
    frozen.trainable = False
    inputs = keras.Input((p.size[1], p.size[0], 3), dtype="uint8", name="image")
    below = frozen(layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0)(inputs))  # backbone.preprocess
    extractor = keras.Model(inputs, below)

    def features(x: NDArray[np.uint8]) -> NDArray[np.float32]:
        return np.asarray(extractor.predict(x, batch_size=64, verbose=opts.verbose), dtype=np.float32)

    feats = features(p.x)
    augmented = np.concatenate(
        [features(_augmented(p.x[p.train_idx], opts.seed + copy)) for copy in range(opts.augmented_copies)]
    )
    top = _tuned_top(feats.shape[1:], opts.tune_from, len(p.positions))
    for layer in top.layers:
        if layer.name in start:
            layer.set_weights(start[layer.name])
    targets = _targets(p, opts)
    top.compile(optimizer=keras.optimizers.Adam(learning_rate), **_compile_args(opts))
    callbacks = [
        keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(patience=1, factor=0.3),
    ]
    _fit_on_features(top, p, opts, feats, augmented, callbacks, targets)
    shipped = _tuned_top(feats.shape[1:], opts.tune_from, len(p.positions))  # no optimizer state inside
    shipped.set_weights(top.get_weights())
    return keras.Model(inputs, shipped(below), name="listing_image_lite0_tuned")


def _fit_on_features(
    model: Any,
    p: Prepared,
    opts: TrainOptions,
    feats: NDArray[np.float32],
    copies: NDArray[np.float32],
    callbacks: list[Any],
    targets: dict[str, NDArray[Any]] | None = None,
) -> None:
    """Fit on the training split's features plus their (mirrored or augmented) copies, ``copies`` holding
    whole copies of the split one after another; validate on the validation split's. ``targets`` replaces
    the labels (one row per item), e.g. with a teacher's answers mixed in."""
    tr, val = p.train_idx, p.val_idx
    repeated = np.tile(tr, 1 + len(copies) // len(tr))
    y = targets or {"banner": p.y_banner, "position": p.y_position}
    model.fit(
        np.concatenate([feats[tr], copies]),
        {head: labels[repeated] for head, labels in y.items()},
        sample_weight={head: w[repeated] for head, w in p.weights.items()},
        validation_data=(feats[val], {head: labels[val] for head, labels in y.items()}),
        epochs=opts.epochs,
        batch_size=64,
        verbose=opts.verbose,
        shuffle=True,
        callbacks=callbacks,
    )


DISTIL_COMPILE: dict[str, Any] = {  # soft position targets: one probability per class
    "loss": {"banner": "binary_crossentropy", "position": "categorical_crossentropy"},
    "metrics": {"banner": ["accuracy"], "position": ["categorical_accuracy"]},
}


def _targets(p: Prepared, opts: TrainOptions) -> dict[str, NDArray[Any]] | None:
    """With a teacher: each training target is ``1 - distill`` of the label plus ``distill`` of the teacher's
    answer on the photo (its augmented copies take the same); validation keeps the plain labels."""
    if opts.teacher is None:
        return None
    import keras

    info = ModelInfo.read(opts.teacher)
    if tuple(info.positions) != p.positions:
        raise ValueError(f"--teacher {opts.teacher}: positions {info.positions} differ from the data's {p.positions}")
    teacher = keras.models.load_model(opts.teacher / MODEL_FILE, compile=False, safe_mode=True)
    tr = p.train_idx
    answers = teacher.predict(load_arrays([p.items[i] for i in tr], info.input_size), batch_size=64, verbose=0)
    banner, position = p.y_banner.copy(), np.eye(len(p.positions), dtype=np.float32)[p.y_position]
    a = opts.distill
    banner[tr] = (1 - a) * banner[tr] + a * np.asarray(answers["banner"], dtype=np.float32).reshape(-1)
    position[tr] = (1 - a) * position[tr] + a * np.asarray(answers["position"], dtype=np.float32)
    return {"banner": banner, "position": position}


def _compile_args(opts: TrainOptions) -> dict[str, Any]:
    """COMPILE; with a teacher, losses for its soft targets (DISTIL_COMPILE); with ``opts.label_smoothing``,
    the position loss's labels smoothed."""
    if opts.teacher is not None:
        return DISTIL_COMPILE
    if not opts.label_smoothing:
        return COMPILE
    import keras

    smoothing = opts.label_smoothing

    def smoothed_position_loss(y_true: Any, y_pred: Any) -> Any:
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), y_pred.shape[-1])
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=smoothing)

    return COMPILE | {"loss": COMPILE["loss"] | {"position": smoothed_position_loss}}


def _tuned_top(shape: tuple[int, ...], tune_from: int, positions: int) -> Any:
    """Lite0's blocks from ``tune_from`` on and the two heads, over the frozen blocks' feature maps;
    batch normalization keeps its (ImageNet) statistics: small batches of one domain would skew them."""
    import keras
    from keras import layers

    from . import backbone

    maps = keras.Input(shape, name="feature_map")
    pooled = layers.Dropout(0.3)(backbone.blocks_from(maps, tune_from))
    top = keras.Model(
        maps,
        {
            "banner": layers.Dense(1, activation="sigmoid", name="banner")(pooled),
            "position": layers.Dense(positions, activation="softmax", name="position")(pooled),
        },
        name="tuned_top",
    )
    for layer in top.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.trainable = False
    return top


def _augmented(x: NDArray[np.uint8], seed: int) -> NDArray[np.uint8]:
    """One randomly flipped and colour-jittered copy of each image (the CNN's training augmentation)."""
    import tensorflow as tf

    tf.random.set_seed(seed)
    ds = tf.data.Dataset.from_tensor_slices(x).map(
        lambda image: _augment(image, 0, 0)[0], num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return np.concatenate(list(ds.batch(256).as_numpy_iterator()))


def write_model_dir(model: Any, p: Prepared, sources: Sequence[Path], out: Path, opts: TrainOptions) -> dict[str, Any]:
    """Choose the banner threshold on the validation split; write model.keras, metadata.json, the report."""
    val = p.val_idx
    pred = model.predict(p.x[val], batch_size=64, verbose=0)
    banner_scores = np.asarray(pred["banner"], dtype=np.float64).reshape(-1)
    threshold = best_threshold(banner_scores, p.y_banner[val].astype(np.int64))
    name = opts.name or ("listing-image-cnn" if opts.backbone == "cnn" else f"listing-image-{opts.backbone}")
    version = opts.version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M")
    report = build_report(
        {"name": name, "version": version, "dir": str(out)},
        threshold,
        p.positions,
        [p.items[i] for i in val],
        banner_scores,
        [p.positions[k] for k in np.argmax(pred["position"], axis=1)],
        f"validation split: {len(val)} images",
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_FILE).unlink(missing_ok=True)  # an export of an earlier model would be served in its place
    model.save(out / MODEL_FILE)
    metadata = {
        "name": name,
        "backbone": opts.backbone,
        **({"tune_from": opts.tune_from} if opts.tune_from is not None else {}),
        "version": version,
        "labels": {"banner": ["no_banner", "banner"], "position": list(p.positions)},
        "input_size": list(p.size),
        "preprocessing": "RGB uint8, resized (stretched) to input_size; the model rescales to [-1, 1]",
        "banner_threshold": threshold,
        "training": {
            "data": [str(source) for source in sources],
            "validation": str(opts.validation) if opts.validation is not None else "a random eighth of the data",
            "balance_positions": opts.balance_positions,
            "augmented_copies": opts.augmented_copies,
            "label_smoothing": opts.label_smoothing,
            **({"teacher": str(opts.teacher), "distill": opts.distill} if opts.teacher is not None else {}),
            "initialized_from": p.initialized_from,
            "data_hash": data_hash(p.items),
            "images": len(p.items),
            "seed": opts.seed,
            "epochs": opts.epochs,
            "trained_at": datetime.now(UTC).isoformat(),
        },
        "metrics": {
            "validation_images": len(val),
            "banner_accuracy": report["banner"]["accuracy"],
            "position_accuracy": report["position"]["accuracy"] if "position" in report else None,
        },
    }
    (out / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    write_report(out, report)
    return metadata


def _dataset(p: Prepared, idx: NDArray[np.int64], opts: TrainOptions, training: bool) -> Any:
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(
        (
            p.x[idx],
            {"banner": p.y_banner[idx], "position": p.y_position[idx]},
            {head: w[idx] for head, w in p.weights.items()},
        )
    )
    if training:
        ds = ds.shuffle(len(idx), seed=opts.seed).map(_augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(opts.batch_size).prefetch(tf.data.AUTOTUNE)


def _augment(image: Any, labels: Any, weights: Any) -> Any:
    import tensorflow as tf

    image = tf.image.random_flip_left_right(image)
    img = tf.cast(image, tf.float32) / 255.0
    img = tf.image.random_saturation(img, 0.6, 1.4)
    img = tf.image.random_hue(img, 0.05)
    img = tf.image.random_brightness(img, 0.1)
    img = tf.image.random_contrast(img, 0.8, 1.2)
    grey = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(img))  # black-and-white photographs
    img = tf.where(tf.random.uniform(()) < 0.1, grey, img)
    return tf.cast(tf.clip_by_value(img, 0.0, 1.0) * 255.0, tf.uint8), labels, weights
