"""Tiny seeded models and data for the recipe, pipeline and optimize tests (built in seconds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

CLASSES = 4
SIDE = 12


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 12, 12, 1) in [0, 1]: each class brightens its own quadrant, plus noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n)
    x = rng.normal(0.3, 0.15, size=(n, SIDE, SIDE, 1))
    half = SIDE // 2
    for i, label in enumerate(y):
        r, c = divmod(int(label), 2)
        x[i, r * half:(r + 1) * half, c * half:(c + 1) * half, 0] += 0.5
    return np.clip(x, 0, 1).astype(np.float32), y.astype(np.int64)


def build_model(seed: int = 0):
    """Conv -> Dense(fc1) -> Dense(fc2) -> softmax(probs), compiled with its loss (so passes can fine-tune)."""
    from edgekit.core.tfshim import keras

    k = keras()
    k.utils.set_random_seed(seed)
    inputs = k.Input((SIDE, SIDE, 1), name="image")
    h = k.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv1")(inputs)
    h = k.layers.Flatten(name="flatten")(h)
    h = k.layers.Dense(16, activation="relu", name="fc1")(h)
    h = k.layers.Dense(16, activation="relu", name="fc2")(h)
    outputs = k.layers.Dense(CLASSES, activation="softmax", name="probs")(h)
    model = k.Model(inputs, outputs, name="tiny")
    model.compile(optimizer=k.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def write_fixture(folder: Path, *, outlier: float | None = None) -> dict[str, Path]:
    """Trains the tiny model and writes model.keras, train.npz, val.npz (and, with ``outlier``,
    outlier.keras: two fc1 units scaled by ``outlier``, fc2 compensating, so float outputs are
    unchanged but int8 activations of fc1 lose the small units)."""
    x, y = make_data(400, 1)
    xv, yv = make_data(200, 2)
    model = build_model()
    model.fit(x, y, epochs=6, batch_size=32, verbose=0)
    paths = {"model": folder / "model.keras", "train": folder / "train.npz", "val": folder / "val.npz"}
    model.save(paths["model"])
    np.savez(paths["train"], x=x, y=y)
    np.savez(paths["val"], x=xv, y=yv)
    if outlier is not None:
        paths["outlier"] = folder / "outlier.keras"
        scale_units(model, "fc1", "fc2", [0, 1], outlier).save(paths["outlier"])
    return paths


def scale_units(model, producer: str, consumer: str, units: list[int], factor: float):
    """A copy of ``model`` whose ``producer`` units are ``factor`` times larger and ``consumer`` compensates."""
    from edgekit.core.tfshim import keras

    k = keras()
    copy = k.models.clone_model(model)
    copy.set_weights(model.get_weights())
    w, b = copy.get_layer(producer).get_weights()
    w2, b2 = copy.get_layer(consumer).get_weights()
    for u in units:
        w[:, u] *= factor
        b[u] *= factor
        w2[u, :] /= factor
    copy.get_layer(producer).set_weights([w, b])
    copy.get_layer(consumer).set_weights([w2, b2])
    copy.compile(optimizer=k.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy
