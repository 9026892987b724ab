"""Delegate rule tables and ``edgekit check``: real converted models, exact node lists."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.core.errors import InputError, RecipeError
from edgekit.core.tflite_file import OperatorInfo, parse_tflite_bytes
from edgekit.export.delegates import check_bytes
from edgekit.export.graph import estimate_flops, guess_layer, partition_nodes
from edgekit.export.rules import RULES_DIR, load_rules, parse_rules

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _tf():
    from edgekit.core.tfshim import tensorflow

    return tensorflow()


def _convert_function(fn, signature) -> bytes:
    tf = _tf()
    module = tf.Module()
    module.f = tf.function(fn, input_signature=signature)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.f.get_concrete_function()], module)
    return bytes(converter.convert())


@pytest.fixture(scope="module")
def gpu_hostile(tmp_path_factory) -> Path:
    """TOPK_V2, SEGMENT_SUM and a 5-D branch around GPU-friendly MUL/RESHAPE (builtins only)."""
    tf = _tf()

    def f(x):
        y = tf.nn.relu(x * 2.0)
        values, _ = tf.math.top_k(y, k=4)
        segments = tf.math.segment_sum(tf.reshape(y, [16]), tf.constant([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]))
        five_d = tf.reshape(y, [1, 2, 2, 2, 2]) + 1.0
        return values, segments, tf.reduce_sum(five_d, axis=[1, 2, 3, 4])

    path = tmp_path_factory.mktemp("hostile") / "hostile.tflite"
    path.write_bytes(_convert_function(f, [tf.TensorSpec([1, 16], tf.float32)]))
    return path


@pytest.fixture(scope="module")
def mobilenet_fp16(tmp_path_factory) -> Path:
    from edgekit.core.datatypes import QuantMode
    from edgekit.core.tfshim import keras
    from edgekit.export.convert import convert
    from edgekit.workflows.export import _loaded_from_object

    k = keras()
    k.utils.set_random_seed(0)
    model = k.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)
    path = tmp_path_factory.mktemp("mnv2") / "mobilenetv2_fp16.tflite"
    path.write_bytes(convert(_loaded_from_object(model), QuantMode.FLOAT16))
    return path


# -- rule tables ------------------------------------------------------------------------------


@pytest.mark.parametrize("delegate", ["gpu", "nnapi", "xnnpack"])
def test_bundled_rule_tables_validate(delegate):
    rules = load_rules(delegate)
    assert rules.delegate == delegate
    assert rules.schema_version == 1
    assert len(rules.ops) >= 40
    assert rules.source.repo == "google-ai-edge/LiteRT"


def test_gpu_table_lists_topk_as_unsupported_despite_the_checker():
    gpu = load_rules("gpu")
    assert "TOPK_V2" not in gpu.ops
    assert gpu.unsupported_examples["TOPK_V2"].reason.startswith("checker_only")
    assert gpu.general.max_rank == 4 and gpu.general.max_delegated_partitions == 1
    assert "HARD_SWISH" in gpu.ops and "GELU" in gpu.ops


def test_rule_table_rejects_unknown_keys_and_op_names():
    data = yaml.safe_load((RULES_DIR / "gpu.yaml").read_text())
    data["ops"]["CONV_2D"]["max_versoin"] = 3  # a typo
    with pytest.raises(RecipeError, match=r"ops\.CONV_2D\.max_versoin"):
        parse_rules(data, "typo.yaml")
    data = yaml.safe_load((RULES_DIR / "gpu.yaml").read_text())
    data["ops"]["CONV2D"] = {"max_version": 1}
    with pytest.raises(RecipeError, match="CONV2D"):
        parse_rules(data, "bad-op.yaml")
    data = yaml.safe_load((RULES_DIR / "nnapi.yaml").read_text())
    del data["ops"]["ADD"]["min_api"]
    with pytest.raises(RecipeError, match="min_api"):
        parse_rules(data, "nnapi.yaml")


# -- the must-hold cases ---------------------------------------------------------------------


def test_check_gpu_lists_exactly_the_rejected_nodes(gpu_hostile):
    result = CliRunner().invoke(cli, ["check", str(gpu_hostile), "--target", "gpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    info = parse_tflite_bytes(gpu_hostile.read_bytes())
    five_d = {op.index for op in info.operators
              if any(len(info.tensors[t].shape) == 5 for t in op.inputs + op.outputs if t >= 0)}
    expected = {op.index for op in info.operators if op.op in ("TOPK_V2", "SEGMENT_SUM")} | five_d
    assert {op.op for op in info.operators if op.index in five_d} == {"RESHAPE", "ADD", "SUM"}
    assert {n["index"] for n in report["unsupported"]} == expected
    by_op = {n["op"]: n for n in report["unsupported"]}
    assert "model_builder.cc has no parser" in by_op["TOPK_V2"]["why"]
    assert "rank 5" in by_op["ADD"]["why"] and "rank <= 4" in by_op["ADD"]["why"]
    assert by_op["TOPK_V2"]["suggestion"] and by_op["SEGMENT_SUM"]["suggestion"]
    s = report["summary"]
    assert (s["nodes"], s["supported_nodes"], s["partitions"]) == (7, 2, 1)
    # FLOPs: MUL(+RELU) 16 elements, RESHAPE 0 -> 16 of 16 + 16 (segment) + 16 (add) + 16 (sum) + 16 (top-k)
    assert (s["supported_flops"], s["flops"]) == (16, 80)
    assert report["full_coverage"] is False


def test_check_table_output_names_the_ops(gpu_hostile):
    result = CliRunner().invoke(cli, ["check", str(gpu_hostile), "--target", "gpu"])
    assert result.exit_code == 0
    for op in ("TOPK_V2", "SEGMENT_SUM", "RESHAPE", "ADD", "SUM"):
        assert op in result.stdout
    assert "2/7" in result.stdout


def test_require_full_fails_when_nodes_fall_off_the_delegate(gpu_hostile, mobilenet_fp16):
    result = CliRunner().invoke(cli, ["check", str(gpu_hostile), "--target", "gpu", "--require-full"])
    assert result.exit_code == 8, result.output
    assert "TOPK_V2" in result.stdout  # the report is still shown
    assert "5 of 7 nodes stay off the gpu delegate" in result.output and "full delegation was required" in result.output
    as_json = CliRunner().invoke(cli, ["check", str(gpu_hostile), "--target", "gpu", "--require-full", "--json"])
    assert as_json.exit_code == 8
    full = CliRunner().invoke(cli, ["check", str(mobilenet_fp16), "--target", "gpu", "--require-full"])
    assert full.exit_code == 0, full.output


def test_mobilenetv2_float16_has_full_gpu_coverage(mobilenet_fp16):
    result = CliRunner().invoke(cli, ["check", str(mobilenet_fp16), "--target", "gpu", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unsupported"] == []
    assert report["full_coverage"] is True
    s = report["summary"]
    assert s["node_share"] == 1.0 and s["flop_share"] == 1.0 and s["partitions"] == 1
    ops = {n["op"] for n in report["nodes"]}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE"} <= ops
    # fp16 weight DEQUANTIZE nodes are folded, not computed: 0 FLOPs
    assert all(n["flops"] == 0 for n in report["nodes"] if n["op"] == "DEQUANTIZE")
    text = CliRunner().invoke(cli, ["check", str(mobilenet_fp16), "--target", "gpu"])
    assert "Not on the delegate" not in text.stdout and "All 130 nodes run on the gpu delegate" in text.stdout


def test_mobilenetv2_flops_match_the_architecture(mobilenet_fp16):
    report = check_bytes(mobilenet_fp16.read_bytes(), "gpu")
    by_op: dict[str, int] = {}
    for n in report.nodes:
        by_op[n.op] = by_op.get(n.op, 0) + n.flops
    # conv + depthwise + dense dominate; the 1000-way classifier head alone is 2*1280*1000
    assert by_op["FULLY_CONNECTED"] == 2 * 1280 * 1000
    assert by_op["CONV_2D"] > by_op["DEPTHWISE_CONV_2D"] > 0
    assert 20e6 < report.summary.flops < 30e6


def test_nnapi_api_levels_and_deprecation(mobilenet_fp16):
    runner = CliRunner()
    old = json.loads(runner.invoke(cli, ["check", str(mobilenet_fp16), "--target", "nnapi", "--api-level", "27", "--json"]).stdout)
    # MEAN (global average pooling) needs API 28
    assert [n["op"] for n in old["unsupported"]] == ["MEAN"]
    assert "API 28" in old["unsupported"][0]["why"]
    assert old["summary"]["partitions"] == 2  # MEAN splits the graph
    new = runner.invoke(cli, ["check", str(mobilenet_fp16), "--target", "nnapi", "--api-level", "35", "--json"])
    assert json.loads(new.stdout)["unsupported"] == []
    assert "deprecated" in new.stderr and "--target npu" in new.stderr
    default = json.loads(runner.invoke(cli, ["check", str(mobilenet_fp16), "--target", "nnapi", "--json"]).stdout)
    assert default["api_level"] == 34 and not default["warnings"]


def test_gpu_partition_limit_and_split_graph():
    """An unsupported op in the middle makes two GPU partitions; the delegate takes the larger one."""
    tf = _tf()

    def f(x):
        a = tf.nn.relu(x * 3.0) + 1.0
        b = tf.nn.log_softmax(a)
        return tf.nn.relu(b * 2.0) - 1.0

    report = check_bytes(_convert_function(f, [tf.TensorSpec([1, 8], tf.float32)]), "gpu")
    assert [n.op for n in report.unsupported] == ["LOG_SOFTMAX"]
    assert "SOFTMAX followed by LOG" in report.unsupported[0].suggestion
    s = report.summary
    assert s.partitions == 2 and s.max_delegated_partitions == 1 and s.delegated_partitions == 1
    assert s.delegated_nodes < s.supported_nodes
    assert any("takes only the largest 1" in w for w in report.warnings)


def test_partitioning_joins_independent_branches_like_tflite():
    """TFLite's greedy partitioner puts both supported branches in one subset even when an
    unsupported node sits between them in execution order."""
    ops = [
        OperatorInfo(index=0, subgraph=0, op="ADD", version=1, inputs=(0,), outputs=(1,)),
        OperatorInfo(index=1, subgraph=0, op="TOPK_V2", version=1, inputs=(0,), outputs=(2,)),
        OperatorInfo(index=2, subgraph=0, op="MUL", version=1, inputs=(0,), outputs=(3,)),
        OperatorInfo(index=3, subgraph=0, op="ADD", version=1, inputs=(2, 3), outputs=(4,)),
    ]
    subsets = partition_nodes(ops, [True, False, True, True])
    assert subsets == [(True, [0, 2]), (False, [1]), (True, [3])]


def test_xnnpack_coverage_of_an_int8_softmax_head():
    """XNNPACK runs SOFTMAX in float32 only: an int8 softmax stays on TFLite's CPU kernel."""
    from edgekit.core.datatypes import IOType, QuantMode
    from edgekit.core.tfshim import keras
    from edgekit.export.convert import convert
    from edgekit.workflows.export import _loaded_from_object

    k = keras()
    k.utils.set_random_seed(1)
    inp = k.Input((8, 8, 3))
    h = k.layers.Conv2D(4, 3, activation="relu", name="conv")(inp)
    h = k.layers.GlobalAveragePooling2D(name="gap")(h)
    out = k.layers.Dense(3, activation="softmax", name="head")(h)
    loaded = _loaded_from_object(k.Model(inp, out))
    calib = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)
    report = check_bytes(convert(loaded, QuantMode.INT8, calibration=calib, io_type=IOType.INT8), "cpu",
                         layers={"conv": "Conv2D", "gap": "GlobalAveragePooling2D", "head": "Dense"})
    assert [n.op for n in report.unsupported] == ["SOFTMAX"]
    assert "int8" in report.unsupported[0].reasons[0]
    conv = next(n for n in report.nodes if n.op == "CONV_2D")
    assert conv.layer == "conv (Conv2D)"
    assert conv.flops == 2 * (6 * 6 * 4) * (3 * 3 * 3)
    npu = check_bytes(convert(loaded, QuantMode.INT8, calibration=calib, io_type=IOType.INT8), "npu")
    assert npu.unsupported == []


def test_flops_and_layer_guess_units():
    from edgekit.core.tflite_file import TensorInfo

    def t(i, shape):
        return TensorInfo(index=i, name=f"t{i}", shape=shape, shape_signature=shape, dtype="FLOAT32", buffer=0,
                          constant_bytes=0, quantization=None)

    tensors = (t(0, (1, 10, 10, 8)), t(1, (1, 3, 3, 8)), t(2, (8,)), t(3, (1, 10, 10, 8)), t(4, (1, 10)), t(5, (4, 10)), t(6, (1, 4)))
    dw = OperatorInfo(index=0, subgraph=0, op="DEPTHWISE_CONV_2D", version=1, inputs=(0, 1, 2), outputs=(3,))
    fc = OperatorInfo(index=1, subgraph=0, op="FULLY_CONNECTED", version=1, inputs=(4, 5, -1), outputs=(6,))
    assert estimate_flops(dw, tensors) == 2 * 800 * 9
    assert estimate_flops(fc, tensors) == 2 * 4 * 10
    assert guess_layer("m_1/m_1/relu_1/Relu6;m_1/m_1/conv_1/convolution") == "conv_1"
    assert guess_layer("m_1/m_1/relu_1/Relu6;m_1/m_1/conv_1/convolution", {"conv": "Conv2D"}) == "conv (Conv2D)"
    assert guess_layer("PartitionedCall:0") is None


def test_check_bad_input_through_the_cli(tmp_path, gpu_hostile):
    runner = CliRunner()
    unknown = runner.invoke(cli, ["check", str(gpu_hostile), "--target", "tpu"])
    assert unknown.exit_code == InputError.exit_code
    assert "unknown target 'tpu'" in unknown.stderr and "\n" not in unknown.stderr.strip()
    missing = runner.invoke(cli, ["check", str(tmp_path / "nope.tflite"), "--target", "gpu"])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 64)
    bad = runner.invoke(cli, ["check", str(junk), "--target", "gpu"])
    assert bad.exit_code == 3 and "not a valid TFLite model" in bad.stderr
    api = runner.invoke(cli, ["check", str(gpu_hostile), "--target", "nnapi", "--api-level", "7"])
    assert api.exit_code == 2 and "not an Android API level" in api.stderr


def test_help_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from click.testing import CliRunner; from edgekit.cli import cli; "
            "r1 = CliRunner().invoke(cli, ['check', '--help']); r2 = CliRunner().invoke(cli, ['export', '--help']); "
            "assert r1.exit_code == 0 and r2.exit_code == 0; print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
