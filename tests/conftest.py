"""Shared fixtures: tiny real models and data built in code (seeded), and a CLI runner."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from click.testing import CliRunner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fashion_mnist"


def make_blobs(n: int, seed: int = 0, classes: int = 6, shape=(8, 8, 1)) -> tuple[np.ndarray, np.ndarray]:
    """Learnable synthetic images: each class is a fixed random pattern plus noise, as uint8."""
    rng = np.random.default_rng(seed)
    patterns = np.random.default_rng(1234).uniform(0, 255, (classes, *shape))
    y = rng.integers(0, classes, n)
    x = patterns[y] * 0.7 + rng.uniform(0, 255, (n, *shape)) * 0.3
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def build_tiny_cnn(classes: int = 6, shape=(8, 8, 1)):
    import keras

    inputs = keras.Input(shape, name="pixels")
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="tiny_cnn")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A trained tiny CNN (.keras) with train/val .npz files (uint8, preprocess with scale 1/255)."""
    import keras

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("tiny")
    x, y = make_blobs(600, seed=0)
    xv, yv = make_blobs(200, seed=1)
    model = build_tiny_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x / 255.0, y, epochs=8, batch_size=32, verbose=0)
    model.save(root / "model.keras")
    labels = np.array([f"class_{i}" for i in range(6)])
    np.savez(root / "train.npz", x=x, y=y, labels=labels)
    np.savez(root / "val.npz", x=xv, y=yv, labels=labels)
    return {
        "dir": root,
        "model": root / "model.keras",
        "train": root / "train.npz",
        "val": root / "val.npz",
        "keras_model": model,
    }


@pytest.fixture()
def runner():
    return CliRunner()


@pytest.fixture()
def cli():
    from edgekit.cli import cli as group

    return group


def files_in(path: Path) -> set[str]:
    """Names of all files below ``path`` (to assert nothing was written)."""
    return {str(p.relative_to(path)) for p in Path(path).rglob("*") if p.is_file()}


def int8_kernels(path) -> dict[str, tuple[np.ndarray, int]]:
    """{tensor name: (values, number of scales)} of the constant int8 tensors of 2+ dimensions
    (the quantized kernels) of a .tflite file: constants found by edgekit's reader, values read
    through LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.core.tflite_file import read_tflite

    constant = {t.index for t in read_tflite(path).tensors if t.is_constant and t.dtype == "INT8" and len(t.shape) >= 2}
    interp = Interpreter(model_path=str(path))
    return {t["name"]: (np.asarray(interp.get_tensor(t["index"])), int(t["quantization_parameters"]["scales"].size))
            for t in interp.get_tensor_details() if t["index"] in constant}


def default_sigint() -> None:
    """``preexec_fn`` for children a test interrupts: SIGINT back to its default, so Python installs its
    handler there even when pytest itself runs in the background (``cmd &`` starts with SIGINT ignored)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
