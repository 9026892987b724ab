"""int4 weights and per-layer mixed precision through litert-quantizer (the ``quantizer`` extra)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import EXAMPLE
from edgekit.core.errors import ConversionError, InputError
from edgekit.core.extras import EXTRAS, Extra, import_extra, missing_extra_reason
from edgekit.export.quantizer import (
    int4_recipe,
    load_rules,
    parse_rules,
    quantize_int4,
    quantize_selective,
)

needs_quantizer = pytest.mark.skipif(bool(missing_extra_reason("quantizer")), reason=str(missing_extra_reason("quantizer")))


def test_a_missing_extra_is_a_one_line_error_naming_the_install(monkeypatch):
    monkeypatch.setitem(EXTRAS, "quantizer", Extra("quantizer", "edgekit_no_such_module", "litert-quantizer", "int4 quantization"))
    with pytest.raises(InputError) as err:
        import_extra("quantizer")
    assert err.value.one_line() == ("int4 quantization needs the optional package litert-quantizer, which is not installed "
                                    "(edgekit_no_such_module); pip install 'edgekit[quantizer]'")
    assert missing_extra_reason("quantizer") == "litert-quantizer is not installed: pip install 'edgekit[quantizer]'"


def test_rule_files_are_validated(tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text("default: int8\nio: float\nrules:\n  - layer: fc\n    precision: int16\n  - layer: probs\n    op: FULLY_CONNECTED\n    precision: float\n")
    rules = load_rules(path)
    assert rules.needs_calibration and [r.precision for r in rules.rules] == ["int16", "float"]
    with pytest.raises(InputError, match=r"rules.0.precision: Input should be 'int8', 'int16', 'float', 'int4' or 'dynamic'"):
        parse_rules({"rules": [{"layer": "fc", "precision": "int3"}]})
    with pytest.raises(InputError, match="rules.0.bits: Extra inputs are not permitted"):
        parse_rules({"rules": [{"layer": "fc", "precision": "int8", "bits": 8}]})
    with pytest.raises(InputError, match="not a regular expression"):
        parse_rules({"rules": [{"layer": "fc[", "precision": "int8"}]})
    with pytest.raises(InputError, match="does not exist"):
        load_rules(tmp_path / "missing.yaml")
    assert not parse_rules({"default": "float", "rules": [{"precision": "int4"}]}).needs_calibration
    with pytest.raises(InputError, match="granularity must be one of channel, block32"):
        int4_recipe("block7")


@pytest.fixture(scope="module")
def tiny_float(tiny) -> bytes:
    from edgekit.export.convert import Conversion, convert_model

    return convert_model(tiny["keras_model"], Conversion(mode="float32")).flatbuffer


def _accuracy(flatbuffer: bytes, x: np.ndarray, y: np.ndarray) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    hits = 0
    for sample, label in zip(x, y):
        interp.set_tensor(inp["index"], sample[None].astype(np.float32))
        interp.invoke()
        hits += int(np.argmax(interp.get_tensor(out["index"])) == label)
    return 100.0 * hits / len(y)


@needs_quantizer
@pytest.mark.filterwarnings("ignore:Warning. Enabling .experimental_preserve_all_tensors")
def test_per_layer_rules_give_int16_float_and_int8_layers(tiny, tiny_float):
    with np.load(tiny["train"]) as train, np.load(tiny["val"]) as val:
        calibration = train["x"][:64] / 255.0
        xv, yv = val["x"] / 255.0, val["y"]
    rules = parse_rules({"default": "int8", "io": "float", "rules": [{"layer": "fc", "precision": "int16"},
                                                                      {"layer": "probs", "op": "FULLY_CONNECTED", "precision": "float"}]})
    result = quantize_selective(tiny_float, rules, calibration)
    by_output = {layer.output: layer for layer in result.layers()}
    conv = next(layer for layer in result.layers() if layer.op == "CONV_2D")
    fc = next(layer for name, layer in by_output.items() if "fc" in name and layer.op == "FULLY_CONNECTED")
    probs = next(layer for name, layer in by_output.items() if "probs" in name and layer.op == "FULLY_CONNECTED")
    assert (conv.activations, conv.weights) == ("INT8", "INT8")
    assert (fc.activations, fc.weights) == ("INT16", "INT8")
    assert (probs.activations, probs.weights) == ("FLOAT32", "FLOAT32")
    assert [t.dtype for t in result.info.inputs] == ["float32"] and [t.dtype for t in result.info.outputs] == ["float32"]
    assert result.calibration_samples == 64 and result.to_dict()["recipe"][-1]["operation"] == "OUTPUT"
    assert _accuracy(result.flatbuffer, xv, yv) >= _accuracy(tiny_float, xv, yv) - 3.0

    int8_io = quantize_selective(tiny_float, parse_rules({"io": "int8"}), calibration)
    assert [t.dtype for t in int8_io.info.inputs] == ["int8"]
    with pytest.raises(InputError, match="need calibration data"):
        quantize_selective(tiny_float, rules, None)
    with pytest.raises(ConversionError, match="needs a float model"):
        quantize_int4(int8_io.flatbuffer)


@needs_quantizer
@pytest.mark.slow
def test_int4_on_the_bundled_example_is_over_6x_smaller_with_a_small_drop():
    from edgekit.core.models import load_model
    from edgekit.export.convert import Conversion, convert_model

    float_model = convert_model(load_model(EXAMPLE / "model.keras"), Conversion(mode="float32")).flatbuffer
    with np.load(EXAMPLE / "val.npz") as val:
        x, y = val["x"][:300] / 255.0, val["y"][:300]
    channel = quantize_int4(float_model)
    assert channel.info.weight_dtypes().get("INT4", 0) > 0.99 * sum(channel.info.weight_dtypes().values())
    assert len(float_model) / len(channel.flatbuffer) >= 6.0
    block = quantize_int4(float_model, "block32")
    layers = {layer.op: layer.weights for layer in block.layers() if layer.weights}
    assert layers == {"CONV_2D": "INT4", "FULLY_CONNECTED": "INT4"}  # convs stay per-channel int4, FCs blockwise
    assert "FLOAT16" in block.info.weight_dtypes()  # the block scales
    assert len(float_model) / len(block.flatbuffer) >= 6.0
    baseline = _accuracy(float_model, x, y)
    for result in (channel, block):
        assert _accuracy(result.flatbuffer, x, y) >= baseline - 2.0


# --- through the CLI and recipes (issue 16 wiring) -----------------------------------------------


@needs_quantizer
def test_cli_int4_and_selective_are_artifacts_like_any_other(tmp_path):
    import json

    from click.testing import CliRunner

    from conftest import EXAMPLE
    from edgekit.cli import cli
    from edgekit.export.tflite_metadata import read_standard_metadata

    runner = CliRunner()
    base = ["--data", str(EXAMPLE / "calib.npz"), "--scale", "1/255"]
    r = runner.invoke(cli, ["quantize", str(EXAMPLE / "model.keras"), "--mode", "float32", *base, "-o", str(tmp_path / "f32.tflite")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["quantize", str(EXAMPLE / "model.keras"), "--mode", "int4", *base, "-o", str(tmp_path / "int4.tflite"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["weights"].get("INT4", 0) > 200_000
    assert (tmp_path / "f32.tflite").stat().st_size / (tmp_path / "int4.tflite").stat().st_size >= 6.0  # must hold: >= 6x smaller
    assert read_standard_metadata(tmp_path / "int4.tflite").labels()[0] == "T-shirt/top"
    v = runner.invoke(cli, ["validate", str(tmp_path / "int4.tflite"), "--data", str(EXAMPLE / "val.npz"), "--reference",
                            str(EXAMPLE / "model.keras"), "--runs", "2", "--json"])
    assert v.exit_code == 0, v.output
    assert abs(json.loads(v.output)["accuracy_drop"]) < 2.0
    rules = tmp_path / "rules.yaml"
    rules.write_text("default: int8\nio: float\nrules:\n  - layer: probs\n    precision: float\n")
    r = runner.invoke(cli, ["quantize", str(EXAMPLE / "model.keras"), "--mode", "int8-selective", "--rules", str(rules), *base,
                            "-o", str(tmp_path / "sel.tflite"), "--json"])
    assert r.exit_code == 0, r.output
    layers = json.loads(r.output)["quantizer"]["layers"]
    assert any(layer["output"].startswith("StatefulPartitionedCall") or "probs" in layer["output"] for layer in layers)
    bad = runner.invoke(cli, ["quantize", str(EXAMPLE / "model.keras"), "--mode", "int8-selective", *base, "-o", str(tmp_path / "x.tflite")])
    assert bad.exit_code == 2 and "needs a rule file" in bad.output and not (tmp_path / "x.tflite").exists()


@needs_quantizer
def test_a_recipe_with_litert_quantize(tiny, tmp_path):
    from click.testing import CliRunner

    from edgekit.cli import cli

    recipe = tmp_path / "int4.yaml"
    recipe.write_text("schema_version: 1\nname: int4-cpu\ndata:\n  preprocessing: {scale: 1/255}\npasses:\n"
                      "  - pass: litert_quantize\n    mode: int4\n  - pass: export\n    target: cpu\n")
    r = CliRunner().invoke(cli, ["run", str(recipe), "--model", str(tiny["model"]), "--data", str(tiny["train"]), "-o", str(tmp_path / "out"),
                                 "--quiet"])
    assert r.exit_code in (0, 8), r.output
    assert (tmp_path / "out" / "model.tflite").is_file()
