"""Tiny models of every kind a user deploys, built in code, with data they learn from (seeded).

Each builder returns (model, data): ``data`` maps array names to arrays in edgekit's .npz
convention (one array per input named after it, ``y`` or ``y_<output>`` targets). The models
train for a few epochs on data with a real, learnable signal, so metrics mean something.

Used by tests/test_any_model_table.py and bench/bench_any_model.py.
"""

from __future__ import annotations

import numpy as np

KINDS = ("classification", "binary", "multilabel", "regression", "segmentation", "two_input", "two_output", "lstm_text",
         "keyword_spotter")


def _keras():
    import keras

    keras.utils.set_random_seed(0)
    return keras


def _fit(model, data, inputs, outputs, loss, epochs=6, **compile_kw):
    model.compile(optimizer="adam", loss=loss, **compile_kw)
    x = [data[k] for k in inputs] if len(inputs) > 1 else data[inputs[0]]
    y = [data[k] for k in outputs] if len(outputs) > 1 else data[outputs[0]]
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def images(n, rng, size=12, classes=4):
    """Images whose class is the quadrant holding a bright blob; raw 0..255 uint8."""
    y = rng.integers(0, classes, n)
    x = rng.integers(0, 60, (n, size, size, 1)).astype(np.float32)
    half = size // 2
    for i, c in enumerate(y):
        r, col = (c // 2) * half, (c % 2) * half
        x[i, r: r + half, col: col + half, 0] += 150
    return x.clip(0, 255).astype(np.uint8), y


def build(kind: str, n: int = 600, seed: int = 0):
    keras = _keras()
    L = keras.layers
    rng = np.random.default_rng(seed)
    if kind == "classification":
        x, y = images(n, rng)
        inp = keras.Input((12, 12, 1), name="image")
        h = L.Conv2D(8, 3, activation="relu")(L.Rescaling(1 / 255)(inp))
        out = L.Dense(4, activation="softmax", name="probs")(L.Flatten()(L.MaxPooling2D()(h)))
        m = keras.Model(inp, out)
        data = {"image": x, "y": y}
        return _fit(m, data, ["image"], ["y"], "sparse_categorical_crossentropy"), data
    if kind == "binary":
        x, c = images(n, rng)
        y = (c >= 2).astype(np.float32)  # blob in the bottom half
        inp = keras.Input((12, 12, 1), name="image")
        h = L.Conv2D(8, 3, activation="relu")(L.Rescaling(1 / 255)(inp))
        out = L.Dense(1, activation="sigmoid", name="is_bottom")(L.GlobalAveragePooling2D()(h))
        m = keras.Model(inp, out)
        data = {"image": x, "y": y}
        return _fit(m, data, ["image"], ["y"], "binary_crossentropy", epochs=10), data
    if kind == "multilabel":
        x = rng.normal(size=(n, 16)).astype(np.float32)
        w = rng.normal(size=(16, 5))
        y = (x @ w > 0).astype(np.float32)
        inp = keras.Input((16,), name="features")
        out = L.Dense(5, activation="sigmoid", name="tags")(L.Dense(32, activation="relu")(inp))
        m = keras.Model(inp, out)
        data = {"features": x, "y": y}
        return _fit(m, data, ["features"], ["y"], "binary_crossentropy", epochs=10), data
    if kind == "regression":
        x = rng.normal(size=(n, 8)).astype(np.float32)
        y = (x[:, :1] * 2.0 - x[:, 1:2] + 0.5 * np.sin(x[:, 2:3] * 3)).astype(np.float32)
        inp = keras.Input((8,), name="features")
        out = L.Dense(1, name="price")(L.Dense(32, activation="relu")(inp))
        m = keras.Model(inp, out)
        data = {"features": x, "y": y}
        return _fit(m, data, ["features"], ["y"], "mse", epochs=15), data
    if kind == "segmentation":
        x = rng.uniform(0, 0.35, (n, 16, 16, 1)).astype(np.float32)
        masks = np.zeros((n, 16, 16), np.int64)
        for i in range(n):
            r, c = rng.integers(0, 10, 2)
            cls = 1 + int(rng.integers(0, 2))
            masks[i, r: r + 6, c: c + 6] = cls
            x[i, r: r + 6, c: c + 6, 0] = 0.3 + 0.25 * cls + rng.uniform(-0.2, 0.2, (6, 6))  # class 1 dim, class 2 bright
        inp = keras.Input((16, 16, 1), name="image")
        h = L.Conv2D(16, 3, padding="same", activation="relu")(inp)
        h = L.Conv2D(16, 3, padding="same", activation="relu")(h)
        out = L.Conv2D(3, 1, activation="softmax", name="mask")(h)
        m = keras.Model(inp, out)
        data = {"image": x, "y": masks}
        m.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        m.fit(x, masks, epochs=8, batch_size=32, verbose=0)
        return m, data
    if kind == "two_input":
        x, y = images(n, rng)
        meta = rng.normal(size=(n, 3)).astype(np.float32)
        y = (y + (meta[:, 0] > 0.8)) % 4  # the metadata matters for some samples
        img = keras.Input((12, 12, 1), name="image")
        mt = keras.Input((3,), name="meta")
        h = L.Flatten()(L.MaxPooling2D()(L.Conv2D(8, 3, activation="relu")(L.Rescaling(1 / 255)(img))))
        h = L.Concatenate()([h, L.Dense(8, activation="relu")(mt)])
        out = L.Dense(4, activation="softmax", name="probs")(L.Dense(32, activation="relu")(h))
        m = keras.Model([img, mt], out)
        data = {"image": x, "meta": meta, "y": y}
        return _fit(m, data, ["image", "meta"], ["y"], "sparse_categorical_crossentropy", epochs=8), data
    if kind == "two_output":
        x, y = images(n, rng)
        box = np.stack([(y // 2) * 0.5 + 0.25, (y % 2) * 0.5 + 0.25], axis=1).astype(np.float32)
        inp = keras.Input((12, 12, 1), name="image")
        h = L.Flatten()(L.MaxPooling2D()(L.Conv2D(8, 3, activation="relu")(L.Rescaling(1 / 255)(inp))))
        h = L.Dense(32, activation="relu")(h)
        logits = L.Dense(4, name="class_logits")(h)
        boxes = L.Dense(2, name="box")(h)
        m = keras.Model(inp, [logits, boxes])
        data = {"image": x, "y_class_logits": y, "y_box": box}
        m.compile(optimizer="adam", loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"], loss_weights=[1.0, 2.0])
        m.fit(x, [y, box], epochs=8, batch_size=32, verbose=0)
        return m, data
    if kind == "lstm_text":
        vocab, length = 50, 8
        tokens = rng.integers(3, vocab, (n, length)).astype(np.int32)
        y = rng.integers(0, 2, n)
        tokens[y == 1, rng.integers(0, length, int((y == 1).sum()))] = 1  # the "positive" word
        tokens[y == 0, rng.integers(0, length, int((y == 0).sum()))] = 2  # the "negative" word
        inp = keras.Input((length,), dtype="int32", name="tokens")
        h = L.LSTM(16)(L.Embedding(vocab, 16)(inp))
        out = L.Dense(2, activation="softmax", name="sentiment")(h)
        m = keras.Model(inp, out)
        data = {"tokens": tokens, "y": y}
        return _fit(m, data, ["tokens"], ["y"], "sparse_categorical_crossentropy", epochs=8), data
    if kind == "keyword_spotter":
        frames, mels, words = 12, 10, 3
        y = rng.integers(0, words, n)
        x = rng.normal(size=(n, frames, mels)).astype(np.float32) * 0.5
        for i, w in enumerate(y):
            start = int(rng.integers(0, frames - 4))
            x[i, start: start + 4, w * 3: w * 3 + 3] += 2.0
        inp = keras.Input((frames, mels), name="mfcc")
        h = L.Conv1D(16, 3, activation="relu")(inp)
        h = L.GRU(16)(h)
        out = L.Dense(words, activation="softmax", name="keyword")(h)
        m = keras.Model(inp, out)
        data = {"mfcc": x, "y": y}
        return _fit(m, data, ["mfcc"], ["y"], "sparse_categorical_crossentropy", epochs=8), data
    raise ValueError(kind)


def save(kind: str, folder, n: int = 600, seed: int = 0):
    """Builds ``kind``, saves ``model.keras`` and ``data.npz`` (train) / ``val.npz`` in ``folder``; returns the paths."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model, data = build(kind, n + 200, seed)
    model.save(folder / "model.keras")
    train = {k: v[:n] for k, v in data.items()}
    val = {k: v[n:] for k, v in data.items()}
    np.savez(folder / "data.npz", **train)
    np.savez(folder / "val.npz", **val)
    return folder / "model.keras", folder / "data.npz", folder / "val.npz"


def crash_in_worker(job):
    """A job for the converter's worker that dies the way a native converter bug does (SIGSEGV)."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def echo_in_worker(job):
    return "ok", job["x"]
