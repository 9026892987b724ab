"""Train the bundled Fashion-MNIST example classifier.

Reads the real Fashion-MNIST files installed by the Debian package ``dataset-fashion-mnist``
(``/usr/share/datasets/fashion-mnist``, or ``--data-dir``), trains a small CNN (244k parameters)
and writes, beside this script:

- ``model.keras``: the trained float32 Keras 3 model (input: 28x28x1 floats in [0, 1]);
- ``val.npz``: 1,000 test images (100 per class, uint8 0-255) with labels and class names;
- ``calib.npz``: 300 training images (uint8) for calibrating post-training quantization.

The model expects pixels scaled by 1/255; edgekit records that preprocessing in the manifest
(``--scale 1/255``) so the checked-in data stays uint8.

Usage::

    python examples/fashion_mnist/train.py [--epochs 8] [--seed 0]
"""

from __future__ import annotations

import argparse
import gzip
import os
from pathlib import Path

import numpy as np

CLASS_NAMES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
HERE = Path(__file__).resolve().parent


def read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (gzip-compressed) as a numpy array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_fashion_mnist(data_dir: Path):
    x_train = read_idx(data_dir / "train-images-idx3-ubyte.gz")
    y_train = read_idx(data_dir / "train-labels-idx1-ubyte.gz")
    x_test = read_idx(data_dir / "t10k-images-idx3-ubyte.gz")
    y_test = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz")
    return (x_train[..., None], y_train), (x_test[..., None], y_test)


def build_model():
    """A small CNN (244k parameters) whose int8 form is faster than float32 on x86 XNNPACK too.

    On x86 CPUs without VNNI (AVX2 only), XNNPACK's int8 convolutions are slower than its float32
    ones, most of all a first convolution with one input channel (measured 4.7x slower here; see
    bench/RESULTS.md). A stride-2 first convolution and a fully connected head (memory-bound, where
    4x smaller int8 weights pay off) keep the comparison fair on such machines and on ARM.
    """
    import keras

    inputs = keras.Input((28, 28, 1), name="image")
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    x = keras.layers.Dense(256, activation="relu", name="fc1")(x)
    x = keras.layers.Dense(128, activation="relu", name="fc2")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


def stratified(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=HERE)
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(args.seed)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    model = build_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train / 255.0, y_train, batch_size=128, epochs=args.epochs, validation_split=0.1, verbose=2)
    _, test_acc = model.evaluate(x_test / 255.0, y_test, verbose=0)
    print(f"test accuracy (10k): {test_acc:.4f}; parameters: {model.count_params()}")

    rng = np.random.default_rng(args.seed)
    val_idx = stratified(y_test, 100, rng)
    calib_idx = stratified(y_train, 30, rng)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    # Re-compile so the checked-in file carries the loss but not Adam's state (3x smaller).
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(args.out_dir / "model.keras")
    names = np.array(CLASS_NAMES)
    np.savez_compressed(args.out_dir / "val.npz", x=x_test[val_idx], y=y_test[val_idx], labels=names)
    np.savez_compressed(args.out_dir / "calib.npz", x=x_train[calib_idx], y=y_train[calib_idx], labels=names)
    _, val_acc = model.evaluate(x_test[val_idx] / 255.0, y_test[val_idx], verbose=0)
    print(f"val subset accuracy (1k): {val_acc:.4f}")


if __name__ == "__main__":
    main()
