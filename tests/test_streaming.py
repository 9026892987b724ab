"""Issue 19: data larger than memory — TFRecord files through tf.data, large arrays kept on disk,
training and the teacher's pass reading batches as they are needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fashion_mnist"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def write_tfrecords(folder: Path, x: np.ndarray, y: np.ndarray, shards: int = 2) -> Path:
    """``x``/``y`` as TFRecord shards (image bytes raw, label int64) and the spec file that reads them."""
    import tensorflow as tf

    per = int(np.ceil(len(x) / shards))
    for shard in range(shards):
        with tf.io.TFRecordWriter(str(folder / f"train-{shard:02d}.tfrecord")) as writer:
            for i in range(shard * per, min(len(x), (shard + 1) * per)):
                feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[x[i].astype(np.uint8).tobytes()])),
                           "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[int(y[i])]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    spec = folder / "train.tfdata.yaml"
    spec.write_text("tfrecord: [train-*.tfrecord]\n"
                    f"records: {len(x)}\n"
                    "inputs:\n  image: {dtype: uint8, shape: [28, 28, 1], encoded: raw}\n"
                    "targets:\n  label: {dtype: int64, shape: []}\n"
                    f"labels: {json.dumps(LABELS)}\n")
    return spec


def _edgekit(*args: str, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "EDGEKIT_STREAM_MB"}
    full.update({"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", **env})
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, env=full, timeout=600)


@pytest.mark.slow
def test_tfrecords_train_the_same_model_as_the_npz(tmp_path):
    """The same samples as TFRecord shards give the byte-identical QAT model; kept on disk and streamed
    (EDGEKIT_STREAM_MB below the data's size), training reads batches and lands within a point."""
    with np.load(EXAMPLE / "calib.npz") as d:
        x, y = d["x"], d["y"]
    spec = write_tfrecords(tmp_path, x, y)
    common = [f"{EXAMPLE}/model.keras", "--val", f"{EXAMPLE}/val.npz", "--scale", "1/255", "--epochs", "1", "--no-ptq", "--json"]
    runs = {
        "npz": _edgekit("qat", *common, "--data", f"{EXAMPLE}/calib.npz", "-o", str(tmp_path / "npz.tflite")),
        "tfrecord": _edgekit("qat", *common, "--data", str(spec), "-o", str(tmp_path / "tfrecord.tflite")),
        "streamed": _edgekit("qat", *common, "--data", str(spec), "-o", str(tmp_path / "streamed.tflite"), EDGEKIT_STREAM_MB="0.2"),
    }
    out = {}
    for name, done in runs.items():
        assert done.returncode == 0, (name, done.stderr[-2000:])
        out[name] = json.loads(done.stdout)
    assert out["tfrecord"]["artifact"]["sha256"] == out["npz"]["artifact"]["sha256"]

    def top1(report: dict) -> float:
        return next(r for r in report["comparison"] if r["variant"] == "qat-int8")["top1"]

    assert abs(top1(out["streamed"]) - top1(out["npz"])) <= 1.5, (top1(out["streamed"]), top1(out["npz"]))
    distilled = _edgekit("distill", "--teacher", f"{EXAMPLE}/model.keras", "--width", "0.5", "--data", str(spec), "--scale", "1/255",
                         "--epochs", "1", "--no-export", "-o", str(tmp_path / "student.keras"), "--json", EDGEKIT_STREAM_MB="0.2")
    assert distilled.returncode == 0, distilled.stderr[-2000:]  # the teacher ran over the on-disk data chunk by chunk
    assert json.loads(distilled.stdout)["train_samples"] == len(x)


def test_a_large_array_is_preprocessed_on_disk(tmp_path, monkeypatch):
    from edgekit.core.data import load_dataset
    from edgekit.core.datatypes import Preprocessing, Signature
    from edgekit.core.diskarray import is_on_disk

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (500, 16, 16), dtype=np.uint8)  # no channel axis: added on the way
    y = rng.integers(0, 4, 500)
    np.savez(tmp_path / "big.npz", x=x, y=y)
    signature = Signature.single((None, 16, 16, 1))
    pre = Preprocessing(scale=1 / 255, mean=(0.5,))
    in_memory = load_dataset(tmp_path / "big.npz", signature=signature, preprocessing=pre)
    monkeypatch.setenv("EDGEKIT_STREAM_MB", "0.1")  # 500 x 16 x 16 x 4 bytes = 0.5 MB
    on_disk = load_dataset(tmp_path / "big.npz", signature=signature, preprocessing=pre)
    assert not is_on_disk(in_memory.x) and isinstance(on_disk.x, np.memmap)
    assert on_disk.x.shape == (500, 16, 16, 1) and on_disk.x.dtype == np.float32
    assert np.array_equal(np.asarray(on_disk.x), in_memory.x)
    half = on_disk.take(np.arange(0, 500, 2))
    assert isinstance(half.x, np.memmap) and np.array_equal(np.asarray(half.x), in_memory.x[::2])
    small = on_disk.take(np.arange(10))
    assert not isinstance(small.x, np.memmap)  # a small selection comes into memory


def test_streamed_training_computes_what_fit_computes(monkeypatch):
    """Batches read from a disk array (no shuffling, to compare) train the same weights as fit on the array in memory."""
    import keras

    from edgekit.core.diskarray import disk_array
    from edgekit.passes import distribute

    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    on_disk = disk_array(x.shape, x.dtype)
    on_disk[:] = x

    def make():
        keras.utils.set_random_seed(5)
        m = keras.Sequential([keras.Input((12,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
        m.compile(optimizer=keras.optimizers.SGD(0.3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return m

    monkeypatch.setenv("EDGEKIT_STREAM_MB", "0.001")
    assert distribute.streams(on_disk, y) and not distribute.streams(x, y)
    fitted, streamed = make(), make()
    fitted.fit(x, y, batch_size=50, epochs=2, shuffle=False, verbose=0)
    history = distribute.train(streamed, on_disk, y, batch_size=50, epochs=2, shuffle=False)
    assert len(history.history["loss"]) == 2
    for a, b in zip(fitted.get_weights(), streamed.get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-5)
    assert np.allclose(distribute.predict(streamed, on_disk), streamed.predict(x, verbose=0), atol=1e-6)


def test_bad_tfrecord_specs_are_one_line_data_errors(tiny, tmp_path):
    import tensorflow as tf

    cases = {
        "not-a-spec.yaml": "inputs: {image: {dtype: uint8}}\n",
        "missing.yaml": "tfrecord: [nothere.tfrecord]\ninputs: {image: {dtype: uint8, shape: [8, 8, 1], encoded: raw}}\n",
        "bad-dtype.yaml": "tfrecord: [r.tfrecord]\ninputs: {image: {dtype: complex64, shape: [8, 8, 1]}}\n",
        "wrong-shape.yaml": "tfrecord: [r.tfrecord]\ninputs: {image: {dtype: uint8, shape: [9, 9, 1], encoded: raw}}\n"
                            "targets: {label: {dtype: int64}}\n",
        "corrupt.yaml": "tfrecord: [corrupt.tfrecord]\ninputs: {image: {dtype: uint8, shape: [8, 8, 1], encoded: raw}}\n",
    }
    with tf.io.TFRecordWriter(str(tmp_path / "r.tfrecord")) as writer:
        feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[bytes(64)])),
                   "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))}
        writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    (tmp_path / "corrupt.tfrecord").write_bytes(b"\x00" * 40 + b"not a record")
    expect = {"not-a-spec.yaml": "not a TFRecord spec", "missing.yaml": "not a file", "bad-dtype.yaml": "inputs.image.dtype",
              "wrong-shape.yaml": "cannot be read", "corrupt.yaml": "cannot be read"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        done = _edgekit("prune", str(tiny["model"]), "--data", str(tmp_path / name), "--sparsity", "0.5", "--no-export",
                        "-o", str(tmp_path / "out.keras"))
        assert done.returncode == 4, (name, done.stderr)
        assert expect[name] in done.stderr and "Traceback" not in done.stderr, (name, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (name, done.stderr)
        assert not (tmp_path / "out.keras").exists()


def test_a_large_image_folder_is_decoded_to_disk(tmp_path, monkeypatch):
    from PIL import Image

    from edgekit.core.data import load_dataset
    from edgekit.core.datatypes import Preprocessing, Signature

    rng = np.random.default_rng(3)
    for cls in ("cat", "dog"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (12, 12), dtype=np.uint8)).save(tmp_path / "images" / cls / f"{i}.png")
    signature = Signature.single((None, 12, 12, 1))
    pre = Preprocessing(scale=1 / 255)
    in_memory = load_dataset(tmp_path / "images", signature=signature, preprocessing=pre)
    monkeypatch.setenv("EDGEKIT_STREAM_MB", "0.001")  # 12 images x 12 x 12 x 4 bytes = 6.9 KB
    on_disk = load_dataset(tmp_path / "images", signature=signature, preprocessing=pre)
    assert isinstance(on_disk.x, np.memmap) and not isinstance(in_memory.x, np.memmap)
    assert np.array_equal(np.asarray(on_disk.x), in_memory.x) and np.array_equal(on_disk.y, in_memory.y)
    assert on_disk.sha256 == in_memory.sha256 and on_disk.labels == ("cat", "dog")
