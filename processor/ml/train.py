"""Train a model directory from labelled images.

Layouts accepted under ``--data``: a ``labels.csv`` (file, banner, position) as
``processor synth`` writes, or folders ``banner/`` and ``no_banner/`` (banner label
only), optionally with position sub-folders (``banner/front/x.jpg``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .decode import decode_image
from .model import BACKBONES, METADATA_FILE, MODEL_FILE, ModelInfo, build_model

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}
NO_POSITION = ""
REPORT_FILE = "evaluation.json"
COMPILE: dict[str, Any] = {  # losses and metrics of both heads, for every way of training
    "loss": {"banner": "binary_crossentropy", "position": "sparse_categorical_crossentropy"},
    "metrics": {"banner": ["accuracy"], "position": ["accuracy"]},
}


@dataclass(frozen=True, slots=True)
class Labelled:
    path: Path
    banner: int
    position: str  # NO_POSITION when unknown


def read_labels(data: Path) -> list[Labelled]:
    """Labelled files from labels.csv or the banner/no_banner folder layout."""
    csv_path = data / "labels.csv"
    if csv_path.exists():
        with csv_path.open() as fh:
            return [
                Labelled(data / r["file"], int(r["banner"]), r.get("position") or NO_POSITION)
                for r in csv.DictReader(fh)
            ]
    items = []
    for banner, folder in ((1, "banner"), (0, "no_banner")):
        for path in sorted((data / folder).rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                position = path.parent.name if path.parent != data / folder else NO_POSITION
                items.append(Labelled(path, banner, position))
    if not items:
        raise FileNotFoundError(f"{data}: no labels.csv and no images under banner/ or no_banner/")
    return items


def load_arrays(items: list[Labelled], size: tuple[int, int]) -> NDArray[np.uint8]:
    def one(item: Labelled) -> NDArray[np.uint8]:
        return decode_image(item.path.read_bytes(), size, max_pixels=100_000_000).pixels

    with ThreadPoolExecutor() as pool:
        return np.stack(list(pool.map(one, items)))


def data_hash(items: list[Labelled]) -> str:
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: str(i.path)):
        digest.update(f"{item.path.name}|{item.banner}|{item.position}|{item.path.stat().st_size}\n".encode())
    return "sha256:" + digest.hexdigest()


def best_threshold(scores: NDArray[np.float64], labels: NDArray[np.int64]) -> float:
    """The decision threshold: the middle of the range of thresholds whose accuracy is within one standard
    error of the best. On real photographs accuracy is flat over a wide range and the single best point
    moves with the sample; the middle of that range does not, and a shift of the scores on photographs
    unlike these moves fewer images across it."""
    candidates = np.linspace(0.05, 0.95, 91)
    accuracy = np.array([np.mean((scores >= t) == labels) for t in candidates])
    top = float(accuracy.max())
    tolerance = float(np.sqrt(top * (1 - top) / max(1, len(labels))))
    return round(float(np.median(candidates[accuracy >= top - tolerance - 1e-9])), 3)


def train(
    data: Path | Sequence[Path],
    out: Path,
    *,
    init: Path | None = None,
    epochs: int = 30,
    seed: int = 1,
    input_size: int = 128,
    batch_size: int = 32,
    name: str | None = None,
    version: str | None = None,
    verbose: int = 1,
    backbone: str = "cnn",
    backbone_weights: str | None = None,
) -> dict[str, Any]:
    """Train, pick the banner threshold on a held-out split, write the model directory."""
    import keras
    import tensorflow as tf

    from .evaluate import build_report  # evaluate imports this module

    keras.utils.set_random_seed(seed)
    sources = [data] if isinstance(data, Path) else list(data)
    items = [item for source in sources for item in read_labels(source)]
    positions = tuple(sorted({i.position for i in items if i.position != NO_POSITION})) or ("other",)
    size = (input_size, input_size)
    initialized_from = None
    if init is not None:  # fine-tuning keeps the model's labels and input size
        info = ModelInfo.read(init)
        unknown = {i.position for i in items} - {*info.positions, NO_POSITION}
        if unknown or backbone != "cnn":
            raise ValueError(f"--init {init}: positions {sorted(unknown)} unknown to it, or a backbone was given")
        positions, size, initialized_from = info.positions, info.input_size, f"{info.name} {info.version}"
    x = load_arrays(items, size)
    y_banner = np.array([i.banner for i in items], dtype=np.float32)
    y_pos = np.array([positions.index(i.position) if i.position in positions else 0 for i in items])
    pos_weight = np.array([1.0 if i.position in positions else 0.0 for i in items], dtype=np.float32)

    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = max(1, len(order) // 8)
    val, tr = np.array(order[:n_val]), np.array(order[n_val:])
    share = float(y_banner[tr].mean())  # class balancing: both banner classes weigh half
    banner_weight = np.where(y_banner == 1, 0.5 / max(share, 1e-3), 0.5 / max(1 - share, 1e-3)).astype(np.float32)

    def dataset(idx: NDArray[np.int64], training: bool) -> Any:
        ds = tf.data.Dataset.from_tensor_slices(
            (
                x[idx],
                {"banner": y_banner[idx], "position": y_pos[idx]},
                {"banner": banner_weight[idx], "position": pos_weight[idx]},
            )
        )
        if training:
            ds = ds.shuffle(len(idx), seed=seed).map(_augment, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    if backbone == "cnn":
        if init is None:
            model, learning_rate = build_model(positions, size), 2e-3
        else:
            model = keras.models.load_model(init / MODEL_FILE, compile=False, safe_mode=True)
            learning_rate = 5e-4
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), **COMPILE)
        model.fit(
            dataset(tr, True),
            validation_data=dataset(val, False),
            epochs=epochs,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles
            callbacks=[
                keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True),
                keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.5),
            ],
        )
    else:
        model = train_transfer(
            x,
            y_banner,
            y_pos,
            {"banner": banner_weight, "position": pos_weight},
            tr,
            val,
            positions,
            backbone,
            input_size,
            seed,
            epochs,
            backbone_weights,
            verbose,
        )

    pred = model.predict(x[val], batch_size=64, verbose=0)
    banner_scores = np.asarray(pred["banner"], dtype=np.float64).reshape(-1)
    threshold = best_threshold(banner_scores, y_banner[val].astype(np.int64))
    name = name or ("listing-image-cnn" if backbone == "cnn" else f"listing-image-{backbone}")
    version = version or datetime.now(UTC).strftime("%Y.%m.%d.%H%M")
    report = build_report(
        {"name": name, "version": version, "dir": str(out)},
        threshold,
        positions,
        [items[i] for i in val],
        banner_scores,
        [positions[k] for k in np.argmax(pred["position"], axis=1)],
        f"validation split: {len(val)} images",
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / MODEL_FILE)
    metadata = {
        "name": name,
        "backbone": backbone,
        "version": version,
        "labels": {"banner": ["no_banner", "banner"], "position": list(positions)},
        "input_size": list(size),
        "preprocessing": "RGB uint8, resized (stretched) to input_size; the model rescales to [-1, 1]",
        "banner_threshold": threshold,
        "training": {
            "data": [str(source) for source in sources],
            "initialized_from": initialized_from,
            "data_hash": data_hash(items),
            "images": len(items),
            "seed": seed,
            "epochs": epochs,
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


def write_report(model_dir: Path, report: dict[str, Any]) -> None:
    """The evaluation report of a trained model: REPORT_FILE, plus confusion matrices as a PNG
    when matplotlib is installed."""
    from .evaluate import plot_confusion

    (model_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    with contextlib.suppress(ImportError):
        plot_confusion(report, model_dir / "confusion.png")


def build_backbone(name: str, input_size: int, weights: str | None = None) -> Any:
    """A frozen ImageNet feature extractor taking uint8 RGB: the offline EfficientNet-Lite0 port, or a
    Keras application (``weights``: "imagenet" to download, or a local weights file)."""
    import keras
    from keras import layers

    inputs = keras.Input((input_size, input_size, 3), dtype="uint8", name="image")
    if name == "efficientnet-lite0":
        from . import backbone

        lite = backbone.load()
        features = keras.Model(lite.input, lite.get_layer("avg_pool").output, name="efficientnet_lite0_features")
        x = layers.Rescaling(1 / 128.0, offset=-127.0 / 128.0)(inputs)  # backbone.preprocess
        if input_size != backbone.INPUT_SIZE:
            x = layers.Resizing(backbone.INPUT_SIZE, backbone.INPUT_SIZE)(x)
    elif name == "mobilenetv3small":
        features = keras.applications.MobileNetV3Small(
            input_shape=(input_size, input_size, 3),
            include_top=False,
            pooling="avg",
            weights=weights or "imagenet",
            include_preprocessing=True,
        )
        x = layers.Rescaling(1.0)(inputs)  # uint8 -> float; the application scales 0-255 itself
    else:
        raise ValueError(f"unknown backbone {name!r}; choose from {BACKBONES}")
    features.trainable = False
    return keras.Model(inputs, features(x, training=False), name=f"{name}_features")


def train_transfer(
    x: NDArray[np.uint8],
    y_banner: NDArray[np.float32],
    y_pos: NDArray[np.int64],
    weights_by_head: dict[str, NDArray[np.float32]],
    tr: NDArray[np.int64],
    val: NDArray[np.int64],
    positions: tuple[str, ...],
    backbone_name: str,
    input_size: int,
    seed: int,
    epochs: int,
    weights: str | None,
    verbose: int,
) -> Any:
    """Frozen backbone, new heads: features are computed once (plus mirrored copies as augmentation),
    the heads train on them, and the result is one model from uint8 pixels to both heads."""
    import keras
    from keras import layers

    extractor = build_backbone(backbone_name, input_size, weights)
    feats = extractor.predict(x, batch_size=64, verbose=verbose)
    mirrored = extractor.predict(x[:, :, ::-1], batch_size=64, verbose=verbose)
    inputs = keras.Input((feats.shape[1],), name="features")
    hidden = layers.Dropout(0.3)(layers.Dense(256, activation="relu")(layers.Dropout(0.2)(inputs)))
    heads = keras.Model(
        inputs,
        {
            "banner": layers.Dense(1, activation="sigmoid", name="banner")(hidden),
            "position": layers.Dense(len(positions), activation="softmax", name="position")(hidden),
        },
        name="heads",
    )
    heads.compile(optimizer=keras.optimizers.Adam(1e-3), **COMPILE)
    train_x = np.concatenate([feats[tr], mirrored[tr]])
    twice = np.concatenate([tr, tr])
    heads.fit(
        train_x,
        {"banner": y_banner[twice], "position": y_pos[twice]},
        sample_weight={head: w[twice] for head, w in weights_by_head.items()},
        validation_data=(feats[val], {"banner": y_banner[val], "position": y_pos[val]}),
        epochs=epochs,
        batch_size=64,
        verbose=verbose,
        shuffle=True,
        callbacks=[keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)],
    )
    return keras.Model(extractor.input, heads(extractor.output), name=f"listing_image_{backbone_name}")


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
