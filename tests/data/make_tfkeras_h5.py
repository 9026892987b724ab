"""Writes tfkeras_cnn.h5 with tf-keras (Keras 2) and its reference I/O (tfkeras_cnn_io.npz).

Run once with tf-keras installed (``pip install tf-keras==2.21.0``):
``python tests/data/make_tfkeras_h5.py``. The outputs are checked in (a few KB), so the tests
that load a Keras 2 file need no tf-keras.
"""

import os
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np  # noqa: E402
import tf_keras as keras  # noqa: E402

HERE = Path(__file__).parent
keras.utils.set_random_seed(3)
model = keras.Sequential([
    keras.layers.InputLayer(input_shape=(8, 8, 1)),
    keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
    keras.layers.BatchNormalization(name="bn"),
    keras.layers.Flatten(name="flat"),
    keras.layers.Dense(5, activation="softmax", name="probs"),
])
model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
model.save(HERE / "tfkeras_cnn.h5")
x = np.random.default_rng(0).uniform(0, 1, (4, 8, 8, 1)).astype("float32")
np.savez(HERE / "tfkeras_cnn_io.npz", x=x, y=model.predict(x, verbose=0))
print(keras.__version__)
