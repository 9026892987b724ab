"""Microcontrollers: TFLite Micro op check, tensor arena, MCU-kernel accuracy, the C array (the ``mcu`` extra)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from conftest import EXAMPLE
from edgekit.core.errors import GateFailed, ModelError
from edgekit.core.extras import missing_extra_reason
from edgekit.export.mcu import (
    check_mcu_budget,
    check_mcu_ops,
    compare_with_litert,
    measure_arena,
    tflm_op_table,
    write_c_array,
)

needs_mcu = pytest.mark.skipif(bool(missing_extra_reason("mcu")), reason=str(missing_extra_reason("mcu")))


def test_the_tflm_table_names_real_builtin_ops():
    from ai_edge_litert import schema_py_generated as schema

    builtins = {name for name in vars(schema.BuiltinOperator) if not name.startswith("_")}
    table = tflm_op_table()
    assert len(table) > 80 and set(table) <= builtins
    assert table["CONV_2D"] == "AddConv2D" and table["UNIDIRECTIONAL_SEQUENCE_LSTM"] == "AddUnidirectionalSequenceLSTM"
    assert "TOPK_V2" not in table


def test_budget_gate():
    ok = check_mcu_budget(40_000, 250_000, max_arena_kb=64, max_flash_kb=512)
    assert ok.ok and ok.to_dict()["failures"] == []
    over = check_mcu_budget(70_000, 600_000, max_arena_kb=64, max_flash_kb=512)
    assert over.failures == ("tensor arena 68.4 KiB exceeds max_arena_kb 64", "model 585.9 KiB exceeds max_flash_kb 512")
    with pytest.raises(GateFailed, match="tensor arena 68.4 KiB exceeds max_arena_kb 64; model 585.9 KiB"):
        over.raise_if_failed()


@pytest.fixture(scope="module")
def example_int8():
    from edgekit.core.models import load_model
    from edgekit.export.convert import Conversion, convert_model

    with np.load(EXAMPLE / "calib.npz") as calib:
        calibration = calib["x"][:100].astype(np.float32) / 255.0
    return convert_model(load_model(EXAMPLE / "model.keras"), Conversion(mode="int8", io_type="int8"), calibration=calibration).flatbuffer


@needs_mcu
@pytest.mark.slow
def test_bundled_example_on_tflm_ops_arena_accuracy_and_c_array(example_int8, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    ops = check_mcu_ops(example_int8)
    assert ops.ok and ops.missing == {}
    assert ops.resolver_calls == ("AddConv2D", "AddFullyConnected", "AddMaxPool2D", "AddReshape", "AddSoftmax")

    arena = measure_arena(example_int8)
    assert 4_000 < arena.used_bytes < 64_000
    # the recording allocator and the smallest working arena agree (to alignment padding)
    assert abs(arena.minimum_bytes - arena.used_bytes) <= 0.05 * arena.used_bytes
    assert arena.recommended_bytes >= 1.2 * max(arena.used_bytes, arena.minimum_bytes) and arena.recommended_bytes % 16 == 0

    with np.load(EXAMPLE / "val.npz") as val:
        x, y = val["x"][:300].astype(np.float32) / 255.0, val["y"][:300]
    interp = Interpreter(model_content=example_int8)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = inp["quantization"], out["quantization"]
    litert = []
    for sample in x:
        interp.set_tensor(inp["index"], np.clip(np.round(sample[None] / s_in + z_in), -128, 127).astype(np.int8))
        interp.invoke()
        litert.append((interp.get_tensor(out["index"]).astype(np.float32) - z_out) * s_out)
    accuracy = compare_with_litert(example_int8, x, y, np.concatenate(litert), arena_size=arena.recommended_bytes)
    assert accuracy.samples == 300 and accuracy.tflm_top1 > 80.0
    assert abs(accuracy.drop_points) <= 0.5  # the MCU kernels give LiteRT's int8 answers
    assert accuracy.top1_agreement >= 99.0

    cc, h = write_c_array(example_int8, tmp_path, arena_bytes=arena.recommended_bytes, resolver_calls=ops.resolver_calls)
    assert f"constexpr size_t kTensorArenaSize = {arena.recommended_bytes};" in h.read_text()
    assert "alignas(16) const unsigned char g_model_data[]" in cc.read_text()
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is missing: the C array was written but not compiled")
    (tmp_path / "model.tflite").write_bytes(example_int8)
    (tmp_path / "main.cc").write_text(
        '#include "model_data.h"\n#include <cstdio>\n#include <cstdint>\n'
        "struct Resolver { int n = 0;\n"
        + "".join(f"  int {call}() {{ ++n; return 0; }}\n" for call in ops.resolver_calls)
        + "};\n"
        "int main() {\n  Resolver r; if (!RegisterModelOps(r) || r.n != kModelOpCount) return 3;\n"
        '  FILE* f = std::fopen("model.tflite", "rb"); unsigned int i = 0; int c;\n'
        "  while ((c = std::fgetc(f)) != EOF) { if (i >= g_model_data_len || g_model_data[i] != c) return 1; ++i; }\n"
        "  if (i != g_model_data_len || reinterpret_cast<std::uintptr_t>(g_model_data) % 16 != 0) return 2;\n"
        '  std::printf("%u %zu\\n", g_model_data_len, kTensorArenaSize); return 0;\n}\n')
    subprocess.run([compiler, "-std=c++17", "-O0", "-o", str(tmp_path / "check"), str(tmp_path / "main.cc"), str(cc)],
                   check=True, capture_output=True, timeout=300)
    run = subprocess.run([str(tmp_path / "check")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.split() == [str(len(example_int8)), str(arena.recommended_bytes)]


@needs_mcu
def test_an_op_tflm_lacks_is_named(tmp_path):
    import keras

    from edgekit.export.convert import Conversion, convert_model

    inputs = keras.Input((16,), name="features")
    values, _ = keras.ops.top_k(keras.layers.Dense(8, name="fc")(inputs), 3)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(values))
    calibration = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    flatbuffer = convert_model(model, Conversion(mode="int8", io_type="int8"), calibration=calibration).flatbuffer
    check = check_mcu_ops(flatbuffer)
    assert list(check.missing) == ["TOPK_V2"] and "application code" in check.missing["TOPK_V2"]
    with pytest.raises(ModelError, match="TFLite Micro has no kernel for TOPK_V2"):
        check.raise_if_missing()
    with pytest.raises(ModelError, match="TFLite Micro has no kernel for TOPK_V2"):
        measure_arena(flatbuffer)


def test_a_float_model_is_not_full_int8(tiny):
    from edgekit.export.convert import Conversion, convert_model

    flatbuffer = convert_model(tiny["keras_model"], Conversion(mode="float32")).flatbuffer
    check = check_mcu_ops(flatbuffer, confirm=False)
    assert check.missing == {} and check.float_tensors
    with pytest.raises(ModelError, match="not full-int8"):
        check.raise_if_missing()
