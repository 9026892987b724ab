"""Train the bundled two-output example: find a Fashion-MNIST item on a larger canvas and name it.

Real images: each 28x28 Fashion-MNIST item (Debian ``dataset-fashion-mnist``) is pasted at a random
place on a 36x36 black canvas. The model has two outputs, as a one-object detector does:

- ``class_logits``: 10 class logits (trained with sparse categorical cross-entropy, from logits);
- ``box``: the item's bounding box (x0, y0, x1, y1 as fractions of the canvas), measured from the
  item's own non-zero pixels (trained with mean squared error, weight 4).

Writes, beside this script: ``model.keras``; ``train.npz`` (600 canvases: ``image``,
``y_class_logits``, ``y_box``, ``labels``) and ``val.npz`` (300 canvases from the test set), uint8
pixels (the model expects them scaled by 1/255: pass ``--scale 1/255``).

Usage::

    python examples/detect_fashion/train.py [--epochs 10] [--seed 0] [--data-dir /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

CANVAS = 36
TRAIN_FOR_MODEL = 12000  # images the model trains on (not all checked in)


def place(images: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(images)
    canvas = np.zeros((n, CANVAS, CANVAS, 1), np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    for i, img in enumerate(images):
        r, c = rng.integers(0, CANVAS - 28 + 1, 2)
        canvas[i, r: r + 28, c: c + 28, 0] = img
        rows, cols = np.nonzero(img > 20)
        if rows.size:
            boxes[i] = [(c + cols.min()) / CANVAS, (r + rows.min()) / CANVAS, (c + cols.max() + 1) / CANVAS, (r + rows.max() + 1) / CANVAS]
    return canvas, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent.parent / "fashion_mnist"))
    import keras
    from train import CLASS_NAMES, load_fashion_mnist

    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    pick = rng.choice(len(x_train), TRAIN_FOR_MODEL, replace=False)
    img_train, box_train = place(x_train[pick].reshape(-1, 28, 28), rng)
    cls_train = y_train[pick]
    test_pick = rng.choice(len(x_test), 300, replace=False)
    img_val, box_val = place(x_test[test_pick].reshape(-1, 28, 28), rng)

    layers = keras.layers
    inp = keras.Input((CANVAS, CANVAS, 1), name="image")
    h = inp
    for filters in (16, 32, 48):
        h = layers.Conv2D(filters, 3, padding="same", activation="relu")(h)
        h = layers.MaxPooling2D()(h)
    h = layers.Dense(64, activation="relu")(layers.Flatten()(h))
    logits = layers.Dense(10, name="class_logits")(h)
    box = layers.Dense(4, activation="sigmoid", name="box")(h)
    model = keras.Model(inp, [logits, box], name="detect_fashion")
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"], loss_weights=[1.0, 4.0])
    model.fit(img_train / 255.0, [cls_train, box_train], epochs=args.epochs, batch_size=64, verbose=2)
    here = Path(__file__).parent
    # the training configuration (losses, weights) is kept, the optimizer's state is not: a smaller file
    model.compile(optimizer="adam", loss=[keras.losses.SparseCategoricalCrossentropy(from_logits=True), "mse"], loss_weights=[1.0, 4.0])
    model.save(here / "model.keras")
    labels = np.array(CLASS_NAMES)
    np.savez_compressed(here / "train.npz", image=img_train[:600], y_class_logits=cls_train[:600], y_box=box_train[:600], labels=labels)
    np.savez_compressed(here / "val.npz", image=img_val, y_class_logits=y_test[test_pick], y_box=box_val, labels=labels)
    pred = model.predict(img_val / 255.0, verbose=0)
    print(f"validation top-1 {(pred[0].argmax(1) == y_test[test_pick]).mean():.3f}, box MAE {np.abs(pred[1] - box_val).mean():.4f}")


if __name__ == "__main__":
    main()
