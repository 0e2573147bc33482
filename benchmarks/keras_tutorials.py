"""The tutorials' own Keras/TensorFlow code (docs/tutorials.md), timed: the bar medsight must beat.

Runs only in ``benchmarks/.venv-keras`` (``benchmarks/setup_keras.sh``); medsight never imports
TensorFlow. Each recipe is written the way its tutorial wrote it:

- (a), (b), (c): ``ImageDataGenerator(...).flow_from_directory`` decodes, resizes (Keras'
  default nearest-neighbour) and augments every image file at every step, then ``model.fit``.
  Keras 3 no longer exports ``ImageDataGenerator`` under ``keras.preprocessing.image``, but
  ``tensorflow.keras.preprocessing.image`` (what the tutorials imported) still has the legacy
  class in Keras 3.15.1, so it is used unchanged.
- (d): every file read once with OpenCV (BGR to RGB, resized to 224x224, /255 into one float64
  array, as the tutorial does), then ``ImageDataGenerator(rotation_range=15).flow``.

Weights are random (``weights=None``): nothing can be downloaded offline, and the compute is the
same. Keras runs with its defaults (one data-loading thread, TensorFlow's own thread pools,
the system allocator), as a tutorial reader would run it.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np
import tensorflow as tf
from keras import layers
from tensorflow.keras.preprocessing.image import ImageDataGenerator

from benchmarks.common import (
    PeakMemory,
    epoch_batch_sizes,
    steps_to_run,
    training_figures,
    write_json,
)


def lenet(size: int) -> keras.Model:
    """(a): Conv8-Pool-Conv16-Pool-Conv32(valid)-Pool-Dense64-Dropout-Dense2."""
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            layers.Conv2D(8, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(64, activation="relu"),
            layers.Dropout(0.5),
            layers.Dense(2, activation="softmax"),
        ]
    )


def covid_scratch(size: int) -> keras.Model:
    """(b): Conv32(5x5)-Pool-Conv64(5x5)-Pool-Dense512-Dense2."""
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            layers.Conv2D(32, 5, strides=1, activation="relu"),
            layers.MaxPooling2D(2, strides=2),
            layers.Conv2D(64, 5, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(512, activation="relu"),
            layers.Dense(2, activation="softmax"),
        ]
    )


def resnet50(size: int) -> keras.Model:
    """(b) transfer: ResNet50 base + global average pooling + Dense2, all layers trained."""
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(size, size, 3))
    out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling2D()(base.output))
    return keras.Model(base.input, out)


def kermany(size: int) -> keras.Model:
    """(c): Conv32-Pool-Conv64-Pool-Conv64-Pool-Dense128(sigmoid)-Dropout-Dense2."""
    return keras.Sequential(
        [
            keras.Input((size, size, 3)),
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="sigmoid"),
            layers.Dropout(0.5),
            layers.Dense(2, activation="softmax"),
        ]
    )


def vgg16_head(size: int) -> keras.Model:
    """(d): frozen VGG16 base + AveragePooling(4x4)-Flatten-Dense64-Dropout-Dense2."""
    base = keras.applications.VGG16(
        weights=None, include_top=False, input_tensor=keras.Input((size, size, 3))
    )
    head = layers.AveragePooling2D(pool_size=(4, 4))(base.output)
    head = layers.Dense(64, activation="relu")(layers.Flatten()(head))
    head = layers.Dense(2, activation="softmax")(layers.Dropout(0.5)(head))
    for layer in base.layers:
        layer.trainable = False
    return keras.Model(base.input, head)


@dataclass(frozen=True)
class Tutorial:
    size: int
    batch: int
    build: Callable[[int], keras.Model]
    optimizer: Callable[[], keras.optimizers.Optimizer]
    loss: str  # as the tutorial wrote it (binary cross-entropy on a softmax in (a) and (d))
    augment: dict[str, Any] = field(default_factory=dict)
    opencv: bool = False  # (d): all files read up front with OpenCV, then .flow


TUTORIALS = {
    "malaria-lenet": Tutorial(
        128,
        32,
        lenet,
        keras.optimizers.Adagrad,
        "binary_crossentropy",
        {"rotation_range": 20, "shear_range": 0.2, "zoom_range": 0.2, "horizontal_flip": True},
    ),
    "covid-scratch": Tutorial(
        128, 5, covid_scratch, lambda: keras.optimizers.Adam(1e-4), "categorical_crossentropy"
    ),
    "covid-resnet50": Tutorial(
        224, 16, resnet50, lambda: keras.optimizers.Adam(1e-4), "categorical_crossentropy"
    ),
    "pneumonia-cnn": Tutorial(
        150,
        50,
        kermany,
        lambda: keras.optimizers.Adam(1e-4),
        "categorical_crossentropy",
        {
            "width_shift_range": 0.1,
            "height_shift_range": 0.1,
            "shear_range": 0.2,
            "horizontal_flip": True,
            "fill_mode": "nearest",
        },
    ),
    "covid-vgg16": Tutorial(
        224,
        8,
        vgg16_head,
        lambda: keras.optimizers.Adam(1e-3),
        "binary_crossentropy",
        {"rotation_range": 15, "fill_mode": "nearest"},
        opencv=True,
    ),
}


def read_opencv(tree: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tutorial (d)'s loading loop: cv2.imread, BGR->RGB, resize, one array scaled to [0, 1]
    (float64, as ``np.array(data) / 255.0`` makes it), one-hot labels."""
    classes = sorted(p.name for p in tree.iterdir() if p.is_dir())
    data, labels = [], []
    for index, name in enumerate(classes):
        for path in sorted((tree / name).iterdir()):
            image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
            data.append(cv2.resize(image, (size, size)))
            labels.append(index)
    return np.array(data) / 255.0, keras.utils.to_categorical(labels, len(classes))


def train_flow(spec: Tutorial, tree: Path):
    """The tutorial's training iterator (shuffled, augmented)."""
    if spec.opencv:
        images, labels = read_opencv(tree, spec.size)
        return ImageDataGenerator(**spec.augment).flow(images, labels, batch_size=spec.batch)
    generator = ImageDataGenerator(rescale=1.0 / 255, **spec.augment)
    return generator.flow_from_directory(
        str(tree), target_size=(spec.size, spec.size), batch_size=spec.batch, shuffle=True
    )


class StepClock(keras.callbacks.Callback):
    """The time each training step ends; stops training after ``total`` steps."""

    def __init__(self, total: int):
        super().__init__()
        self.total, self.ends = total, []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())
        if len(self.ends) >= self.total:
            self.model.stop_training = True


def measure_train(recipe: str, tree: Path, warmup: int, steps: int) -> dict[str, Any]:
    spec = TUTORIALS[recipe]
    keras.utils.set_random_seed(42)
    with PeakMemory() as memory:
        start = time.perf_counter()
        flow = train_flow(spec, tree)
        prepare_s = time.perf_counter() - start
        model = spec.build(spec.size)
        model.compile(optimizer=spec.optimizer(), loss=spec.loss, metrics=["accuracy"])
        epoch_steps, images = len(flow), flow.n
        total = steps_to_run(warmup, steps, epoch_steps)
        clock = StepClock(total)
        fit_start = time.perf_counter()
        epochs = -(-total // epoch_steps)
        model.fit(flow, epochs=epochs, steps_per_epoch=epoch_steps, callbacks=[clock], verbose=0)
    sizes = epoch_batch_sizes(images, spec.batch, total)
    figures = training_figures(
        prepare_s, fit_start, clock.ends, sizes, epoch_steps, images, warmup, steps
    )
    return {**figures, **memory.figures(), "batch_size": spec.batch}


def predict_files(model: keras.Model, spec: Tutorial, tree: Path) -> np.ndarray:
    """Files to probabilities, as the tutorial predicts its test images."""
    if spec.opencv:
        images, _ = read_opencv(tree, spec.size)
        return model.predict(images, batch_size=spec.batch, verbose=0)
    flow = ImageDataGenerator(rescale=1.0 / 255).flow_from_directory(
        str(tree), target_size=(spec.size, spec.size), batch_size=spec.batch, shuffle=False
    )
    return model.predict(flow, verbose=0)


def measure_predict(recipe: str, tree: Path) -> dict[str, Any]:
    spec = TUTORIALS[recipe]
    with PeakMemory() as memory:
        model = spec.build(spec.size)
        model.predict(np.zeros((spec.batch, spec.size, spec.size, 3)), verbose=0)  # tracing
        start = time.perf_counter()
        probs = predict_files(model, spec, tree)
        seconds = time.perf_counter() - start
    return {
        "predict_img_s": round(len(probs) / seconds, 2),
        "predict_images": len(probs),
        "predict_s": round(seconds, 3),
        "batch_size": spec.batch,
        **memory.figures(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["train", "predict", "versions"])
    parser.add_argument("--recipe", choices=sorted(TUTORIALS))
    parser.add_argument("--data", type=Path, help="class-folder tree of the recipe's images")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = parser.parse_args()
    if args.phase == "versions":
        result = {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "opencv": cv2.__version__,
        }
    elif args.phase == "train":
        result = measure_train(args.recipe, args.data, args.warmup, args.steps)
    else:
        result = measure_predict(args.recipe, args.data)
    write_json(args.out, result)


if __name__ == "__main__":
    main()
