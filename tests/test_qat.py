"""Quantization-aware training: per-layer-family int8 graphs, Keras/TFLite agreement, CLI, preserve, bad input."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest

from conftest import files_in

# Ops that may compute in float only next to a layer listed as unsupported (the layer's own
# ops, and the DEQUANTIZE/QUANTIZE pair that brackets it).
_BRACKETS = {"QUANTIZE", "DEQUANTIZE"}
FAMILIES = ("conv_bn_depthwise", "separable_pooling", "conv1d", "dense_bn", "activations", "merges",
            "rescaling_normalization", "nested_sequential", "sequential")


def _families():
    """name -> (builder of a tiny Keras model, ops that must appear in the int8 graph)."""
    import keras

    L = keras.layers

    def conv_bn_depthwise():
        i = keras.Input((10, 10, 3))
        x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv")(i)
        x = L.BatchNormalization(name="bn")(x)
        x = L.ReLU(6.0, name="relu6")(x)
        x = L.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False, name="dw")(x)
        x = L.BatchNormalization(name="dw_bn")(x)
        x = L.ReLU(name="relu")(x)
        x = L.GlobalAveragePooling2D()(x)
        return keras.Model(i, L.Dense(4, activation="softmax")(x))

    def separable_pooling():
        i = keras.Input((10, 10, 3))
        x = L.ZeroPadding2D(1)(i)
        x = L.SeparableConv2D(8, 3, depth_multiplier=2, dilation_rate=2)(x)
        x = L.BatchNormalization()(x)
        x = L.Activation("relu6")(x)
        x = L.MaxPooling2D()(x)
        x = L.AveragePooling2D(2)(x)
        x = L.Flatten()(x)
        x = L.Dropout(0.3)(x)
        return keras.Model(i, L.Dense(4)(x))

    def conv1d():
        i = keras.Input((16, 3))
        x = L.Conv1D(8, 3, padding="causal", activation="relu")(i)
        x = L.Conv1D(8, 3, dilation_rate=2)(x)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.DepthwiseConv1D(3, padding="same")(x)
        x = L.SeparableConv1D(8, 3)(x)
        x = L.GlobalAveragePooling1D()(x)
        return keras.Model(i, L.Dense(4, activation="softmax")(x))

    def dense_bn():
        i = keras.Input((12,))
        x = L.Dense(16)(i)
        x = L.BatchNormalization()(x)
        x = L.ReLU()(x)
        x = L.Reshape((4, 4))(x)
        x = L.Flatten()(x)
        return keras.Model(i, L.Dense(4, activation="softmax")(x))

    def activations():
        i = keras.Input((6, 6, 2))
        x = L.Conv2D(6, 3, activation="silu")(i)
        x = L.Activation("hard_swish")(x)
        x = L.Activation("gelu")(x)
        x = L.LeakyReLU(0.1)(x)
        x = L.PReLU()(x)
        x = L.Activation("tanh")(x)
        x = L.Conv2D(6, 1, activation="sigmoid")(x)
        x = L.Flatten()(x)
        x = L.Dense(4)(x)
        return keras.Model(i, L.Softmax()(x))

    def merges():
        i = keras.Input((8, 8, 4))
        a = L.Conv2D(4, 3, padding="same")(i)
        b = L.Conv2D(4, 1)(i)
        x = L.ReLU()(L.Add()([a, b]))
        gate = L.Conv2D(4, 1, activation="sigmoid")(x)
        m = L.Multiply()([x, gate])
        c = L.Concatenate()([m, L.Subtract()([a, b])])
        x = L.GlobalMaxPooling2D()(c)
        return keras.Model(i, L.Dense(4, activation="softmax")(x))

    def rescaling_normalization():
        i = keras.Input((8, 8, 3))
        x = L.Rescaling(1 / 127.5, offset=-1)(i)
        x = L.Normalization(mean=[0.1, 0.0, -0.1], variance=[0.5, 0.6, 0.7])(x)
        x = L.BatchNormalization()(x)  # not after a conv: an int8 1x1 depthwise multiply-add
        x = L.Conv2D(4, 3)(x)
        x = L.Flatten()(x)
        return keras.Model(i, L.Dense(4)(x))

    def nested_sequential():
        inner = keras.Sequential([keras.Input((8, 8, 4)), L.Conv2D(4, 3, padding="same", use_bias=False),
                                  L.BatchNormalization(), L.ReLU(6.0)], name="inner")
        i = keras.Input((8, 8, 3))
        x = L.Conv2D(4, 1)(i)
        x = inner(x)
        x = L.GlobalAveragePooling2D()(x)
        return keras.Model(i, L.Dense(4)(x))

    def sequential():
        return keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(4, 3, activation="relu"), L.MaxPooling2D(),
                                 L.Flatten(), L.Dense(4, activation="softmax")])

    return {
        "conv_bn_depthwise": (conv_bn_depthwise, {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"}),
        "separable_pooling": (separable_pooling, {"DEPTHWISE_CONV_2D", "CONV_2D", "PAD", "MAX_POOL_2D", "AVERAGE_POOL_2D"}),
        "conv1d": (conv1d, {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN"}),
        "dense_bn": (dense_bn, {"FULLY_CONNECTED", "SOFTMAX"}),
        "activations": (activations, {"LOGISTIC", "HARD_SWISH", "GELU", "LEAKY_RELU", "PRELU", "TANH", "SOFTMAX"}),
        "merges": (merges, {"ADD", "MUL", "SUB", "CONCATENATION", "REDUCE_MAX"}),
        "rescaling_normalization": (rescaling_normalization, {"DEPTHWISE_CONV_2D", "CONV_2D", "FULLY_CONNECTED"}),
        "nested_sequential": (nested_sequential, {"CONV_2D", "MEAN"}),
        "sequential": (sequential, {"CONV_2D", "MAX_POOL_2D", "SOFTMAX"}),
    }


def _randomize_bn(model, rng):
    import keras

    def layers_of(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from layers_of(layer)
            else:
                yield layer

    for layer in layers_of(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.2, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))


def _qat_tiny(model, seed=0, samples=64, preserve=None, epochs=1):
    """Builds, calibrates and trains the QAT graph on random data; returns (qat model, x, flatbuffer)."""
    import keras

    from edgekit.passes.qat import build_qat_model, calibrate, export_tflite

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (samples, *model.inputs[0].shape[1:])).astype("float32")
    y = rng.integers(0, int(model.outputs[0].shape[-1]), samples)
    model(x[:1])
    _randomize_bn(model, rng)
    qm = build_qat_model(model, preserve=preserve)
    calibrate(qm, x, batch_size=32, batches=2)
    # a few eager training steps (no tf.function tracing: fast): gradients flow through every layer
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    for step in range(2 * epochs):
        batch = slice(32 * (step % 2), 32 * (step % 2) + 32)
        with tf.GradientTape() as tape:
            loss = loss_fn(y[batch], qm.model(x[batch], training=True))
        variables = qm.model.trainable_variables
        grads = tape.gradient(loss, variables)
        assert all(g is not None for g in grads), [v.path for v, g in zip(variables, grads) if g is None]
        optimizer.apply(grads, variables)
    qm.finalize()
    return qm, x, export_tflite(qm)


@functools.cache
def _converted(family: str):
    """The QAT model, inputs and int8 flatbuffer of a family, built once per test session."""
    import keras

    keras.utils.set_random_seed(0)
    return _qat_tiny(_families()[family][0]())


def _run_tflite(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i: i + 1])
        interp.invoke()
        results.append(interp.get_tensor(out["index"]).copy())
    return np.concatenate(results).reshape(len(x), -1)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_layer_family_converts_to_all_int8_and_matches_keras(family):

    from edgekit.core.tflite_file import parse_tflite_bytes
    from edgekit.passes.qat import float_ops

    assert set(_families()) == set(FAMILIES)
    expected_ops = _families()[family][1]
    qm, x, flatbuffer = _converted(family)
    info = parse_tflite_bytes(flatbuffer)
    assert qm.plan.unsupported == []
    assert float_ops(info) == []
    ops = info.op_histogram()
    assert expected_ops <= set(ops), ops
    # every activation tensor between the input QUANTIZE and the output DEQUANTIZE is int8 (int32 for biases/shapes)
    for op in info.operators:
        if op.op in _BRACKETS:
            continue
        for t in (info.tensors[i] for i in op.inputs + op.outputs if i >= 0):
            assert t.dtype in ("INT8", "INT32"), (family, op.op, t.name, t.dtype)
    # ReLU/ReLU6 fused into the conv/dense/add before them, BatchNormalization folded (no MUL)
    assert not {"RELU", "RELU6"} & set(ops), ops
    assert "MUL" not in ops or family in ("merges", "activations"), ops
    # Keras (fake-quant) and TFLite (int8) agree on the same inputs
    keras_out = qm.model.predict(x[:24], verbose=0).reshape(24, -1)
    tflite_out = _run_tflite(flatbuffer, x[:24])
    out_scale = info.outputs[0].quantization.scales[0] if info.outputs[0].quantization else None
    step = out_scale or float(np.abs(keras_out).max()) / 127
    assert np.abs(keras_out - tflite_out).max() <= 3 * step + 1e-6, (family, np.abs(keras_out - tflite_out).max(), step)
    assert (keras_out.argmax(1) == tflite_out.argmax(1)).mean() >= 0.9


@pytest.mark.slow
def test_fused_relu6_and_per_channel_weights_for_conv_bn():

    from edgekit.core.tflite_file import parse_tflite_bytes

    qm, _, flatbuffer = _converted("conv_bn_depthwise")
    info = parse_tflite_bytes(flatbuffer)
    convs = [op for op in info.operators if op.op in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    assert [op.fused_activation for op in convs] == ["RELU6", "RELU"]
    for op in convs:
        weights = info.tensors[op.inputs[1]]
        assert weights.dtype == "INT8" and len(weights.quantization.scales) == 8  # per channel
        assert set(weights.quantization.zero_points) == {0}
    fc = next(op for op in info.operators if op.op == "FULLY_CONNECTED")
    assert len(info.tensors[fc.inputs[1]].quantization.scales) == 1  # Dense: per tensor
    folded = {p.name: p.treatment for p in qm.plan.layers}
    assert folded["bn"] == "folded" and folded["dw_bn"] == "folded"
    assert folded["conv"] == "weights-per-channel"


@pytest.mark.slow
def test_unsupported_layer_stays_float_and_is_listed():
    import keras

    from edgekit.core.tflite_file import parse_tflite_bytes
    from edgekit.passes.qat import float_ops

    keras.utils.set_random_seed(0)
    L = keras.layers
    i = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, name="conv")(i)
    x = L.LayerNormalization(name="ln")(x)
    x = L.Activation("elu", name="elu")(x)
    x = L.Flatten()(x)
    qm, _, flatbuffer = _qat_tiny(keras.Model(i, L.Dense(4, name="fc")(x)))
    assert [p.name for p in qm.plan.unsupported] == ["ln", "elu"]
    info = parse_tflite_bytes(flatbuffer)
    leftover = {name.split("#")[0] for name in float_ops(info)}
    layer_norm_ops = {"MEAN", "SQUARED_DIFFERENCE", "RSQRT", "MUL", "ADD", "SUB", "NEG", "ELU", "RESHAPE"}
    assert leftover and leftover <= layer_norm_ops | _BRACKETS, leftover
    for op in info.operators:
        if op.op in ("CONV_2D", "FULLY_CONNECTED"):
            assert {info.tensors[i].dtype for i in op.inputs if i >= 0} <= {"INT8", "INT32"}


# --- CLI end to end ---------------------------------------------------------------------------


def _qat_cli(runner, cli, tiny, out, *extra):
    args = ["qat", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255",
            "-o", str(out), *extra]
    return runner.invoke(cli, args)


@pytest.mark.slow
def test_cli_qat_writes_int8_model_manifest_and_report(runner, cli, tiny, tmp_path):
    from edgekit.core.models import load_model
    from edgekit.core.tflite_file import read_tflite

    out = tmp_path / "model_qat.tflite"
    result = _qat_cli(runner, cli, tiny, out, "--epochs", "2", "--io-type", "int8", "--keep-keras", str(tmp_path / "tuned.keras"),
                      "--lr", "5e-4", "--batch-size", "32")
    assert result.exit_code == 0, result.output
    assert files_in(tmp_path) == {"model_qat.tflite", "model_qat.json", "model_qat.qat.report.json", "tuned.keras"}
    info = read_tflite(out)
    assert info.inputs[0].dtype == "int8" and info.outputs[0].dtype == "int8"
    assert {t.dtype for t in info.tensors if t.is_constant} <= {"INT8", "INT32"}
    manifest = json.loads((tmp_path / "model_qat.json").read_text())
    assert manifest["options"]["mode"] == "qat-int8" and manifest["options"]["epochs"] == 2
    assert manifest["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert manifest["labels"] == [f"class_{i}" for i in range(6)]
    report = json.loads((tmp_path / "model_qat.qat.report.json").read_text())
    rows = {r["variant"]: r for r in report["comparison"]}
    assert set(rows) == {"float", "ptq-int8", "qat-int8", "qat-keras"}
    assert report["validation"]["samples"] == 200 and report["training"]["samples"] == 600
    assert len(report["training"]["history"]) == 2
    # the blobs task is easy: the int8 QAT model keeps the float accuracy within a few points
    assert rows["qat-int8"]["top1"] >= rows["float"]["top1"] - 3.0
    assert rows["qat-int8"]["agreement_with_float"] >= 90.0
    assert report["float_ops"] == [] and report["unsupported_layers"] == []
    for word in ("float", "ptq-int8", "qat-int8", "top-1"):
        assert word in result.output
    tuned = load_model(tmp_path / "tuned.keras")  # plain Keras layers: loads in safe mode
    assert tuned.parameter_count == tiny["keras_model"].count_params()


@pytest.mark.slow
def test_cli_json_and_held_out_validation(runner, cli, tiny, tmp_path):
    out = tmp_path / "m.tflite"
    result = runner.invoke(cli, ["qat", str(tiny["model"]), "--data", str(tiny["train"]), "--scale", "1/255", "--epochs", "1",
                                 "-o", str(out), "--no-ptq", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["validation"]["samples"] == 60 and payload["training"]["samples"] == 540  # 10% held out
    assert [r["variant"] for r in payload["comparison"]] == ["float", "qat-int8", "qat-keras"]
    assert payload["io_type"] == "float"


@pytest.mark.slow
def test_preserve_sparsity_keeps_zeros_in_exported_int8_weights(tiny, tmp_path):
    import keras

    from edgekit.workflows.qat import qat

    model = keras.saving.load_model(tiny["model"])
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            w = np.asarray(layer.kernel)
            layer.kernel.assign(np.where(np.abs(w) < np.quantile(np.abs(w), 0.7), 0, w))
    pruned = tmp_path / "pruned.keras"
    model.save(pruned)
    result = qat(pruned, tmp_path / "p.tflite", data=tiny["train"], val=tiny["val"], epochs=1, learning_rate=1e-3,
                 preprocessing=tiny_scale(), preserve="sparsity", keep_keras=tmp_path / "p.keras", compare_ptq=False)
    assert result.preserved["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert result.preserved["exported_int8_zero_fraction"] >= 0.69
    tuned = keras.saving.load_model(tmp_path / "p.keras")
    for before, after in zip(model.layers, tuned.layers):
        if hasattr(before, "kernel"):
            assert np.array_equal(np.asarray(before.kernel) == 0, np.asarray(after.kernel) == 0)
            assert not np.array_equal(np.asarray(before.kernel), np.asarray(after.kernel))  # the rest trained


@pytest.mark.slow
def test_preserve_clusters_keeps_each_kernel_on_its_centroids(tiny, tmp_path):
    import keras

    from edgekit.core.tflite_file import read_tflite
    from edgekit.workflows.qat import qat

    model = keras.saving.load_model(tiny["model"])
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            w = np.asarray(layer.kernel)
            centroids = np.linspace(w.min(), w.max(), 6)
            layer.kernel.assign(centroids[np.abs(w[..., None] - centroids).argmin(-1)])
    clustered = tmp_path / "clustered.keras"
    model.save(clustered)
    out = tmp_path / "c.tflite"
    result = qat(clustered, out, data=tiny["train"], val=tiny["val"], epochs=1, learning_rate=1e-3, preprocessing=tiny_scale(),
                 preserve="clusters", keep_keras=tmp_path / "c.keras", compare_ptq=False)
    assert len(result.preserved["clustered_kernels"]) == 3
    tuned = keras.saving.load_model(tmp_path / "c.keras")
    for before, after in zip(model.layers, tuned.layers):
        if hasattr(before, "kernel"):
            assert len(np.unique(np.asarray(after.kernel))) <= 6
            assert not np.allclose(np.asarray(before.kernel), np.asarray(after.kernel))  # centroids trained
    # per channel, the int8 conv weights take at most 6 values
    info = read_tflite(out)
    assert any(t.dtype == "INT8" and t.is_constant for t in info.tensors)


def tiny_scale():
    from edgekit.core.datatypes import Preprocessing

    return Preprocessing(scale=1 / 255)


# --- bad input, rejected before any training ---------------------------------------------------


def _only_unsupported_model(path):
    import keras

    i = keras.Input((6,))
    x = keras.layers.LayerNormalization(name="ln")(i)
    keras.Model(i, keras.layers.UnitNormalization(name="unit")(x)).save(path)


@pytest.mark.parametrize(
    ("case", "code", "words"),
    [
        ("no-data", 2, "needs training data"),
        ("zero-epochs", 2, "--epochs must be at least 1"),
        ("only-unsupported", 3, "no layer QAT can quantize"),
        ("no-labels", 4, "has no labels"),
        ("nothing-to-preserve", 3, "no sparsity to keep"),
        ("not-clustered", 3, "so it is not clustered"),
        ("bad-output-suffix", 2, "should end with .tflite"),
        ("negative-lr", 2, "--learning-rate must be a positive number"),
    ],
)
def test_bad_input_fails_before_training(runner, cli, tiny, tmp_path, case, code, words):
    args = ["qat", str(tiny["model"]), "--data", str(tiny["train"]), "--epochs", "1", "--scale", "1/255", "-o", str(tmp_path / "o.tflite")]
    if case == "no-data":
        args.remove("--data")
        args.remove(str(tiny["train"]))
    elif case == "zero-epochs":
        args[args.index("--epochs") + 1] = "0"
    elif case == "only-unsupported":
        _only_unsupported_model(tmp_path / "ln.keras")
        np.savez(tmp_path / "vec.npz", x=np.random.default_rng(0).normal(size=(20, 6)).astype("float32"), y=np.arange(20) % 6)
        args = ["qat", str(tmp_path / "ln.keras"), "--data", str(tmp_path / "vec.npz"), "--epochs", "1", "-o", str(tmp_path / "o.tflite")]
    elif case == "no-labels":
        np.save(tmp_path / "x.npy", np.zeros((20, 8, 8, 1), np.uint8))
        args[args.index("--data") + 1] = str(tmp_path / "x.npy")
    elif case == "nothing-to-preserve":
        args += ["--preserve", "sparsity"]
    elif case == "not-clustered":
        args += ["--preserve", "clusters"]
    elif case == "bad-output-suffix":
        args[-1] = str(tmp_path / "o.keras")
    elif case == "negative-lr":
        args += ["--lr", "-1"]
    before = files_in(tmp_path)
    result = runner.invoke(cli, args)
    assert result.exit_code == code, result.output
    assert words in result.output
    assert "epoch 1" not in result.output  # nothing trained
    assert len([ln for ln in result.output.strip().splitlines() if ln.startswith("error:")]) == 1
    assert files_in(tmp_path) == before


def test_qat_help_does_not_import_tensorflow(runner, cli):
    import subprocess
    import sys

    probe = ("import sys, json; from click.testing import CliRunner; from edgekit.cli import cli; "
             "r = CliRunner().invoke(cli, ['qat', '--help']); "
             "print(json.dumps([r.exit_code, sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    code, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    assert code == 0 and heavy == []
