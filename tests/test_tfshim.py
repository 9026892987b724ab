"""Every private TensorFlow/Keras/LiteRT call edgekit makes (core/tfshim.py), called on a tiny model.

These fail when an upgrade removes or reshapes a private attribute, naming the shim to fix.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np
import pytest

from edgekit.core import tfshim


@pytest.fixture(scope="module")
def model():
    k = tfshim.keras()
    k.utils.set_random_seed(0)
    inputs = k.Input((8, 8, 1), name="pixels")
    x = k.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = k.layers.Flatten(name="flat")(x)
    outputs = k.layers.Dense(3, activation="softmax", name="probs")(x)
    return k.Model(inputs, outputs, name="shim_model")


@pytest.fixture(scope="module")
def calibration():
    return np.random.default_rng(0).uniform(0, 1, (16, 8, 8, 1)).astype(np.float32)


def _int8_converter(model, calibration, *, float_fallback=True):
    tf = tfshim.tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for i in range(len(calibration)):
            yield [calibration[i: i + 1]]

    converter.representative_dataset = representative
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8] + ([tf.lite.OpsSet.TFLITE_BUILTINS] if float_fallback else [])
    converter.target_spec.supported_ops = ops
    return converter


def _weight_scales(flatbuffer: bytes, op_name: str) -> int:
    from edgekit.core.tflite_file import parse_tflite_bytes

    info = parse_tflite_bytes(flatbuffer)
    op = next(o for o in info.operators if o.op == op_name)
    return len(info.tensors[op.inputs[1]].quantization.scales)


def test_disable_per_channel_gives_one_scale_per_kernel(model, calibration):
    per_channel = _int8_converter(model, calibration, float_fallback=False)
    assert tfshim.per_channel_disabled(per_channel) is False
    with tfshim.native_output_captured():
        assert _weight_scales(per_channel.convert(), "CONV_2D") == 4
    per_tensor = _int8_converter(model, calibration, float_fallback=False)
    tfshim.disable_per_channel(per_tensor)
    assert tfshim.per_channel_disabled(per_tensor) is True
    with tfshim.native_output_captured():
        assert _weight_scales(per_tensor.convert(), "CONV_2D") == 1


def test_debugger_models_interpreter_ops_and_requantize(model, calibration):
    tf = tfshim.tensorflow()

    def debug_dataset():
        for i in range(4):
            yield [calibration[i: i + 1]]

    with tfshim.native_output_captured():
        models = tfshim.calibrate_with_debugger(_int8_converter(model, calibration), debug_dataset)
    assert isinstance(models.calibrated, bytes) and isinstance(models.debug, bytes)
    interp = tf.lite.Interpreter(model_content=models.debug, experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    ops = tfshim.interpreter_ops(interp)
    assert ops and set(ops[0]) == {"index", "op_name", "inputs", "outputs"}
    names = [op["op_name"] for op in ops]
    assert "CONV_2D" in names and "FULLY_CONNECTED" in names
    verify = [op for op in ops if op["op_name"].upper().replace("_", "") == "NUMERICVERIFY"]
    assert len(verify) >= 2 and all(len(op["inputs"]) >= 2 for op in verify)

    with tfshim.native_output_captured():
        all_int8 = tfshim.requantize(models.calibrated)
        conv_output = next(t["name"] for t in tf.lite.Interpreter(model_content=all_int8).get_tensor_details()
                           if "conv" in t["name"].lower() and t["dtype"] == np.int8 and "Relu" in t["name"])
        mixed = tfshim.requantize(models.calibrated, denylisted_nodes=[conv_output])
        per_tensor = tfshim.requantize(models.calibrated, per_channel=False)
    assert _weight_scales(all_int8, "CONV_2D") == 4 and _weight_scales(per_tensor, "CONV_2D") == 1
    float_conv = [t for t in tf.lite.Interpreter(model_content=mixed).get_tensor_details()
                  if t["name"] == conv_output]
    assert float_conv and float_conv[0]["dtype"] == np.float32  # the denylisted node stayed in float


def test_causal_padding():
    k = tfshim.keras()
    layer = k.layers.Conv1D(2, 3, padding="causal", dilation_rate=2)
    layer.build((None, 10, 1))
    assert tfshim.causal_padding(layer) == [[0, 0], [4, 0], [0, 0]]


def test_keras_graph_shims(model):
    k = tfshim.keras()
    conv, probs = model.get_layer("conv"), model.get_layer("probs")
    assert len(tfshim.inbound_nodes(conv)) == 1 and len(tfshim.outbound_nodes(conv)) == 1
    node = tfshim.inbound_nodes(probs)[0]
    assert tfshim.producing_layer(node.input_tensors[0]) is model.get_layer("flat")
    assert tfshim.producing_layer(model.outputs[0]) is probs
    assert tfshim.producing_layer(np.zeros(2)) is None

    graph = tfshim.functional_graph(model)
    assert graph is model
    ops = [n.operation.name for n in tfshim.graph_nodes(graph) if not n.is_input]
    assert ops == ["conv", "flat", "probs"]  # execution order

    seq = k.Sequential([k.Input((4,)), k.layers.Dense(2, name="d")])
    assert [n.operation.name for n in tfshim.graph_nodes(tfshim.functional_graph(seq)) if not n.is_input] == ["d"]

    class Sub(k.Model):
        def call(self, x):
            return x

    assert tfshim.functional_graph(Sub()) is None


def test_missing_private_attribute_names_the_shim():
    with pytest.raises(tfshim.TfInternalsChanged, match="per-tensor weight switch"):
        tfshim.disable_per_channel(object())
    with pytest.raises(tfshim.TfInternalsChanged, match="op details"):
        tfshim.interpreter_ops(object())


def test_native_output_captured_keeps_fd2_lines_and_hides_stdout(capfd, monkeypatch):
    monkeypatch.delenv("EDGEKIT_VERBOSE", raising=False)
    log: list[str] = []
    with tfshim.native_output_captured(log):
        os.write(2, b"native log line\n")
        os.write(1, b"native stdout\n")
        print("python stdout")
    out, err = capfd.readouterr()
    assert "native log line" in log
    assert "native" not in out and "python stdout" not in out and "native log line" not in err


def test_native_output_captured_verbose_sends_python_stdout_to_stderr(monkeypatch):
    monkeypatch.setenv("EDGEKIT_VERBOSE", "1")
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    with tfshim.native_output_captured():
        print("chatter")
    assert out.getvalue() == "" and "chatter" in err.getvalue()
