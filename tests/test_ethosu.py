"""Arm Ethos-U: Vela compiles int8 models offline; edgekit reports NPU coverage, memory and cycles (the ``ethos-u`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import EXAMPLE
from edgekit.core.errors import ConversionError, InputError
from edgekit.core.extras import missing_extra_reason
from edgekit.core.tflite_file import parse_tflite_bytes
from edgekit.export.ethosu import TARGETS, resolve_target, run_vela

pytestmark = pytest.mark.skipif(bool(missing_extra_reason("ethos-u")), reason=str(missing_extra_reason("ethos-u")))


@pytest.fixture(scope="module")
def example_int8() -> bytes:
    from edgekit.core.models import load_model
    from edgekit.export.convert import Conversion, convert_model

    with np.load(EXAMPLE / "calib.npz") as calib:
        calibration = calib["x"][:100].astype(np.float32) / 255.0
    return convert_model(load_model(EXAMPLE / "model.keras"), Conversion(mode="int8", io_type="int8"), calibration=calibration).flatbuffer


def test_targets_and_overrides_are_checked():
    assert resolve_target("ethos-u55") == TARGETS["ethos-u55"]
    assert resolve_target("ethos-u85", accelerator="ethos-u85-512").accelerator == "ethos-u85-512"
    with pytest.raises(InputError, match="unknown Ethos-U target 'ethos-u99'"):
        resolve_target("ethos-u99")
    with pytest.raises(InputError, match="not a ethos-u55 configuration.*ethos-u55-32, ethos-u55-64"):
        resolve_target("ethos-u55", accelerator="ethos-u85-256")
    with pytest.raises(InputError, match="unknown Vela system configuration 'Big'.*Ethos_U55_Deep_Embedded"):
        resolve_target("ethos-u55", system_config="Big")
    with pytest.raises(InputError, match="unknown Vela memory mode"):
        resolve_target("ethos-u55", memory_mode="Lots")


@pytest.mark.slow
def test_bundled_example_on_ethos_u55_runs_fully_on_the_npu(example_int8):
    result = run_vela(example_int8, "ethos-u55")
    assert result.target == TARGETS["ethos-u55"]
    ops = parse_tflite_bytes(example_int8).op_histogram()
    assert len(result.layers) == sum(ops.values()) and result.npu_ops == len(result.layers) and result.npu_op_share == 1.0
    assert 1.0 < result.sram_kib < 64.0 and 150.0 < result.flash_kib < 300.0  # feature maps in SRAM, weights in flash
    assert result.cycles_total >= result.npu_cycles > 0 and result.inference_ms > 0
    assert result.inference_ms == pytest.approx(result.cycles_total / result.core_clock_hz * 1000, rel=0.01)
    top = result.top_layers(3)
    assert [layer.cycles for layer in top] == sorted((layer.cycles for layer in result.layers), reverse=True)[:3]
    assert parse_tflite_bytes(result.compiled_model).op_histogram() == {"CUSTOM:ethos-u": 1}
    as_json = result.to_dict()
    assert as_json["npu_op_share"] == 1.0 and as_json["cpu_layers"] == [] and len(as_json["top_layers"]) == 5


def test_u65_u85_and_cpu_fallback_with_its_reason(tiny, tmp_path):
    import keras

    from edgekit.export.convert import Conversion, convert_model

    inputs = keras.Input((16,), name="features")
    values, _ = keras.ops.top_k(keras.layers.Dense(8, name="fc")(inputs), 3)
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(values))
    calibration = np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32)
    flatbuffer = convert_model(model, Conversion(mode="int8", io_type="int8"), calibration=calibration).flatbuffer
    for target in ("ethos-u65", "ethos-u85"):
        result = run_vela(flatbuffer, target)
        assert (result.npu_ops, result.cpu_ops) == (2, 1)
        (cpu,) = [layer for layer in result.layers if layer.target == "CPU"]
        assert cpu.op == "TOPK_V2" and cpu.reason == "Unsupported opType" and cpu.cycles == 0
        assert result.dram_kib > 0  # these systems keep the weights in DRAM
    floats = run_vela(convert_model(tiny["keras_model"], Conversion(mode="float32")).flatbuffer, "ethos-u55")
    assert floats.npu_ops == 0 and "not integer-quantized" in floats.warnings[0]
    assert "unsupported DataType Float32" in floats.layers[0].reason


def test_vela_errors_are_conversion_errors(example_int8):
    # U55 cannot keep its arena off-chip: Vela's own message is quoted
    with pytest.raises(ConversionError, match="Vela failed for ethos-u55-128: .*arena_mem_area"):
        run_vela(example_int8, "ethos-u55", memory_mode="Dedicated_Sram")
