"""Train the bundled text example: an LSTM sentiment classifier on int32 token ids.

The data is generated (there is no text corpus on this machine), honestly and reproducibly:
"reviews" of 16 token ids over a 200-word vocabulary (ids 0 = padding, 1 = unknown); each review
mixes neutral words with words that lean positive (ids 2-21) or negative (ids 22-41), and its label
is the side that has more of them, so the model must count words across the sequence, not find
one. Writes, beside this script:

- ``model.keras``: Embedding(200, 16) -> LSTM(24) -> Dense(2, softmax); input ``tokens`` (16 int32);
- ``train.npz``: 1,200 reviews (``tokens``, ``y``) for prune/cluster/qat/distill;
- ``val.npz``: 300 held-out reviews.

Usage::

    python examples/text_sentiment/train.py [--epochs 12] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

VOCAB, LENGTH = 200, 16
POSITIVE, NEGATIVE = range(2, 22), range(22, 42)


def reviews(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    tokens = rng.integers(42, VOCAB, (n, LENGTH))
    y = np.zeros(n, np.int64)
    for i in range(n):
        pos, neg = rng.integers(0, 5, 2)
        if pos == neg:
            pos += 1
        slots = rng.choice(LENGTH, size=pos + neg, replace=False)
        tokens[i, slots[:pos]] = rng.choice(list(POSITIVE), pos)
        tokens[i, slots[pos:]] = rng.choice(list(NEGATIVE), neg)
        y[i] = int(pos > neg)
    pad = rng.integers(0, 4, n)  # some reviews are shorter: padded at the end with 0
    for i, p in enumerate(pad):
        if p:
            tokens[i, LENGTH - p:] = 0
    return tokens.astype(np.int32), y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import keras

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    x_train, y_train = reviews(1200, rng)
    x_val, y_val = reviews(300, rng)
    inp = keras.Input((LENGTH,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(VOCAB, 16)(inp)
    h = keras.layers.LSTM(24)(h)
    out = keras.layers.Dense(2, activation="softmax", name="sentiment")(h)
    model = keras.Model(inp, out, name="text_sentiment")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, validation_data=(x_val, y_val), verbose=2)
    here = Path(__file__).parent
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")  # keep the loss, drop the optimizer's state
    model.save(here / "model.keras")
    labels = np.array(["negative", "positive"])
    np.savez_compressed(here / "train.npz", tokens=x_train, y=y_train, labels=labels)
    np.savez_compressed(here / "val.npz", tokens=x_val, y=y_val, labels=labels)
    print(f"validation accuracy {model.evaluate(x_val, y_val, verbose=0)[1]:.3f}")


if __name__ == "__main__":
    main()
