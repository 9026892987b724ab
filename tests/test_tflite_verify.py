"""The structural verifier: every defect of issue 18 is reported naming its tensor/operator, valid
models (hand-built seeds, the bundled example in int8, a MobileNetV2-like network) verify clean."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from fuzz_tflite import DEFECTS, OP, SEEDS, defective_model, pack, seed_model, tensor, unpack

from conftest import EXAMPLE
from edgekit.core.errors import ModelError
from edgekit.core.tflite_verify import (
    MAX_VIOLATIONS,
    VerifyResult,
    read_verified_tflite,
    require_valid_tflite,
    verify_tflite,
    verify_tflite_bytes,
)

OP_NAMES = {OP.WHILE: "WHILE", OP.CONV_2D: "CONV_2D"}


@pytest.mark.parametrize("kind", SEEDS)
def test_seed_models_verify_clean(kind):
    result = verify_tflite_bytes(seed_model(kind), kind)
    assert result.ok, [str(v) for v in result.violations]
    assert result.schema_version == 3 and result.subgraphs == (3 if kind == "while" else 1)
    assert result.tensors > 0 and result.operators > 0


@pytest.mark.parametrize("name", sorted(DEFECTS))
def test_each_defect_is_reported_naming_its_tensor_or_operator(name):
    defect = DEFECTS[name]
    result = verify_tflite_bytes(defective_model(name), f"{name}.tflite")
    assert not result.ok
    hits = [v for v in result.violations if v.check == defect.check]
    assert hits, [str(v) for v in result.violations]
    if defect.tensor is not None:
        assert any(v.tensor_name == defect.tensor and v.tensor is not None for v in hits), [str(v) for v in hits]
    if defect.operator is not None:
        assert any(v.op == OP_NAMES[defect.operator[0]] and v.operator is not None
                   and (defect.subgraph is None or v.subgraph == defect.subgraph) for v in hits), [str(v) for v in hits]
    with pytest.raises(ModelError) as info:
        require_valid_tflite(defective_model(name), f"{name}.tflite")
    assert info.value.exit_code == 3
    text = info.value.one_line()
    assert f"{name}.tflite" in text and "\n" not in text
    if defect.tensor is not None:
        assert repr(defect.tensor) in text
    if defect.operator is not None:
        assert OP_NAMES[defect.operator[0]] in text


def test_exact_messages_for_the_issue_examples():
    huge = verify_tflite_bytes(defective_model("huge_filter")).violations
    assert [str(v) for v in huge] == [
        "subgraph 0 tensor 1 'conv1/filter': buffer 1 holds 576 bytes, shape [16, 3, 3, 1048576] FLOAT32 needs 603979776"]
    scales = verify_tflite_bytes(defective_model("100k_scales")).violations
    assert [v.message for v in scales] == ["100000 scales for dimension 0 of size 16 (expected 1 or 16)"]
    options = verify_tflite_bytes(defective_model("conv_pool_options")).violations
    assert [(v.operator, v.op, v.message) for v in options] == [(0, "CONV_2D", "carries Pool2DOptions, expected Conv2DOptions")]


def test_all_violations_are_listed_in_a_frozen_result():
    model = unpack(seed_model("float"))
    for name in ("huge_filter", "input_type_99", "conv_pool_options", "schema_version_99", "sparsity_order"):
        DEFECTS[name].apply(model)
    tensor(model, "conv2/bias").buffer = 10_000
    result = verify_tflite_bytes(pack(model), "many.tflite")
    checks = sorted(v.check for v in result.violations)
    assert checks == ["buffer", "buffer_size", "enum", "options", "schema_version", "sparsity"], checks
    with pytest.raises(AttributeError):
        result.violations = ()  # type: ignore[misc]
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["ok"] is False and payload["violation_count"] == 6
    assert {"check": "buffer", "message": "refers to buffer 10000, but there are 8", "subgraph": 0, "tensor": 5,
            "tensor_name": "conv2/bias"} in payload["violations"]
    error = result.error(shown=2)
    assert "6 structural problem(s)" in error.message and "(and 4 more)" in error.message


def test_valid_while_models_pass_and_control_flow_without_options_is_recursion():
    model = unpack(seed_model("while"))
    op = model.subgraphs[0].operators[0]
    op.builtinOptionsType, op.builtinOptions = 0, None
    result = verify_tflite_bytes(pack(model))
    assert [(v.check, v.op) for v in result.violations] == [("subgraph", "WHILE"), ("subgraph", "WHILE")]
    assert "default to 0" in result.violations[0].message


def test_read_only_tensors_written_by_the_runtime_are_reported():
    """Found by the structured fuzz run: a constant as a subgraph input or an operator output
    made LiteRT write into read-only memory (SIGSEGV)."""
    model = unpack(seed_model("while"))
    model.subgraphs[1].tensors[0].buffer = 2  # the cond subgraph's input x becomes a constant
    model.subgraphs[0].tensors[1].buffer = 1  # the WHILE's output becomes a constant
    messages = sorted(str(v) for v in verify_tflite_bytes(pack(model)).violations)
    assert messages == [
        "subgraph 0 operator 0 (WHILE): writes its output into tensor 1, which holds constant (read-only) data",
        "subgraph 1 tensor 0 'x': is a subgraph input but holds constant data (read-only; the caller writes into it)",
    ]


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\x00" * 64, b"\x10\x00\x00\x00TFL3" + b"\xff" * 64, seed_model("float")[:200]])
def test_garbage_is_a_violation_not_an_exception(data):
    result = verify_tflite_bytes(data, "junk.tflite")
    assert not result.ok and result.violations[0].check in ("structure", "schema_version", "subgraph", "tensor_index")


def test_violation_list_is_capped(monkeypatch):
    import edgekit.core.tflite_verify as verify

    monkeypatch.setattr(verify, "MAX_VIOLATIONS", 3)
    model = unpack(seed_model("float"))
    for t in model.subgraphs[0].tensors:
        t.type = 99
    result = verify.verify_tflite_bytes(pack(model))
    assert len(result.violations) == 3 and result.omitted == len(model.subgraphs[0].tensors) - 3
    assert result.to_dict()["violation_count"] == len(model.subgraphs[0].tensors)
    assert MAX_VIOLATIONS >= 1000


def test_files(tmp_path):
    good, bad = tmp_path / "good.tflite", tmp_path / "bad.tflite"
    good.write_bytes(seed_model("int8"))
    bad.write_bytes(defective_model("nan_scale"))
    assert verify_tflite(good).ok and isinstance(verify_tflite(good), VerifyResult)
    info = read_verified_tflite(good)
    assert info.op_histogram()["CONV_2D"] == 2
    with pytest.raises(ModelError, match="conv1/filter"):
        read_verified_tflite(bad)


def test_linear_time_on_a_large_flat_model():
    """100,000 scales on one tensor (1.2 MB) and a model of 3,000 tensors verify quickly."""
    start = time.perf_counter()
    verify_tflite_bytes(defective_model("100k_scales"))
    assert time.perf_counter() - start < 1.0
    model = unpack(seed_model("float"))
    sub = model.subgraphs[0]
    sub.tensors.extend([sub.tensors[5]] * 3000)  # packed 3,000 times: conv2/bias, a constant
    data = pack(model)
    start = time.perf_counter()
    result = verify_tflite_bytes(data)
    elapsed = time.perf_counter() - start
    assert result.ok and result.tensors == 13 + 3000
    assert elapsed < 2.0, elapsed


# ------------------------------------------------------------------------------------------------
# Converter output: the bundled example in int8, a MobileNetV2-like network (float and int8)
# ------------------------------------------------------------------------------------------------


def _convert(model, shape, int8: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([rng.uniform(0, 1, (1, *shape)).astype(np.float32)] for _ in range(4))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.fixture(scope="module")
def converted():
    import keras

    example = keras.models.load_model(EXAMPLE / "model.keras")
    mobilenet = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=10)
    return {
        "example_int8": _convert(example, example.input_shape[1:], int8=True),
        "mobilenetv2_float": _convert(mobilenet, (96, 96, 3), int8=False),
        "mobilenetv2_int8": _convert(mobilenet, (96, 96, 3), int8=True),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["example_int8", "mobilenetv2_float", "mobilenetv2_int8"])
def test_converter_output_verifies_clean_and_fast(converted, name):
    data = converted[name]
    start = time.perf_counter()
    result = verify_tflite_bytes(data, name)
    elapsed = time.perf_counter() - start
    assert result.ok, [str(v) for v in result.violations]
    assert result.operators >= (60 if name.startswith("mobilenet") else 5)
    assert elapsed < 1.0, elapsed


@pytest.mark.slow
def test_defects_in_converter_output_are_found(converted):
    """A structural defect in a real int8 MobileNetV2: per-channel scales of a depthwise filter."""
    model = unpack(converted["mobilenetv2_int8"])
    sub = model.subgraphs[0]
    victim = next(i for i, t in enumerate(sub.tensors) if t.quantization is not None and t.quantization.scale is not None
                  and len(t.quantization.scale) > 2 and t.buffer and len(t.shape) == 4)
    q = sub.tensors[victim].quantization
    q.scale, q.zeroPoint = q.scale[:2], q.zeroPoint[:2]
    result = verify_tflite_bytes(pack(model))
    assert [(v.check, v.tensor) for v in result.violations] == [("quantization", victim)]
