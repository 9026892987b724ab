"""The quantize and export passes on a tiny model: what they return, what they check, what they leave alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from conftest import build_tiny_cnn, files_in, make_blobs
from edgekit.core.datatypes import Preprocessing
from edgekit.core.errors import InputError
from edgekit.core.tflite_file import parse_tflite_bytes
from edgekit.export.target import METADATA_NAME, read_embedded_metadata
from edgekit.passes.base import ModelState, PassContext
from edgekit.passes.export import ExportConfig, ExportPass
from edgekit.passes.pipeline import run_passes
from edgekit.passes.quantize import QuantizeConfig, QuantizePass
from edgekit.passes.registry import pass_class


@pytest.fixture(scope="module")
def model_and_calibration():
    import keras

    keras.utils.set_random_seed(0)
    x, y = make_blobs(200, seed=0)
    model = build_tiny_cnn()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x / 255.0, y, epochs=1, batch_size=32, verbose=0)
    return model, (x[:40] / 255.0).astype(np.float32)


def test_registered_and_configs_validate_like_recipe_steps():
    assert pass_class("quantize") is QuantizePass and pass_class("export") is ExportPass
    assert QuantizeConfig.model_validate({"pass": "quantize", "mode": "int8", "per_channel": False}).requested_weights == "per-tensor"
    with pytest.raises(ValidationError, match="io_type int8 does not go with mode float16"):
        QuantizeConfig(mode="float16", io_type="int8")
    with pytest.raises(ValidationError, match="calibration_samples must be at least 1"):
        QuantizeConfig(calibration_samples=0)
    with pytest.raises(ValidationError, match="not both"):
        QuantizeConfig(per_channel=True, weights="per-tensor")
    with pytest.raises(ValidationError, match="api_level applies to target nnapi only"):
        ExportConfig(target="gpu", api_level=30)
    with pytest.raises(ValidationError):
        QuantizeConfig.model_validate({"pass": "quantize", "mdoe": "int8"})


def test_quantize_pass_int8_with_layer_errors_leaves_the_model_alone(model_and_calibration, tmp_path):
    model, calibration = model_and_calibration
    before = [w.copy() for w in model.get_weights()]
    ctx = PassContext(calibration=calibration)
    done = run_passes([QuantizePass(QuantizeConfig(mode="int8", calibration_samples=30))], ModelState(keras=model), ctx)
    step = done.steps[0]
    info = parse_tflite_bytes(done.state.tflite)
    assert done.state.kind == "int8" and info.inputs[0].dtype == "float32"
    conv = next(op for op in info.operators if op.op == "CONV_2D")
    assert info.tensors[conv.inputs[1]].dtype == "INT8" and len(info.tensors[conv.inputs[1]].quantization.scales) == 8
    assert step.details["calibration_samples"] == 30 and step.details["weights"] == "per-channel"
    errors = step.details["layer_errors"]
    assert {"conv", "fc", "probs"} <= {e["layer"] for e in errors} and all("sqnr_db" in e for e in errors)
    json.dumps(step.details)  # JSON-ready
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert files_in(tmp_path) == set()


def test_quantize_pass_mixed_keeps_the_most_sensitive_layer_float(model_and_calibration):
    model, calibration = model_and_calibration
    cfg = QuantizeConfig(mode="int8", keep_sensitive_float=1, per_channel=False)
    out = QuantizePass(cfg).apply(ModelState(keras=model), PassContext(calibration=calibration))
    assert out.state.kind == "int8-mixed" and out.details["float_layers"] == out.details["ranked_layers"][:1]
    assert out.details["weights"] == "per-tensor"
    info = parse_tflite_bytes(out.state.tflite)
    assert any(t.dtype == "FLOAT32" and not t.is_constant for t in info.tensors if t.name not in {i.name for i in info.inputs})


def test_quantize_pass_checks_before_any_work(model_and_calibration):
    model, _ = model_and_calibration
    with pytest.raises(InputError, match="mode int8 needs calibration data") as err:
        QuantizePass(QuantizeConfig(mode="int8")).check(ModelState(keras=model), PassContext())
    assert err.value.settings == ("mode",)
    with pytest.raises(InputError, match="float_layers entry 'nope' matches no layer"):
        QuantizePass(QuantizeConfig(float_layers=["nope"])).check(ModelState(keras=model), PassContext(calibration=np.zeros((2, 8, 8, 1))))
    with pytest.raises(InputError, match="--weights per-tensor applies to modes with int8 weights"):
        QuantizePass(QuantizeConfig(mode="float16", weights="per-tensor")).check(ModelState(keras=model), PassContext())


def test_export_pass_returns_report_and_metadata_and_writes_nothing(model_and_calibration, tmp_path):
    model, calibration = model_and_calibration
    ctx = PassContext(calibration=calibration, preprocessing=Preprocessing(scale=1 / 255), labels=tuple(f"c{i}" for i in range(6)))
    passes = [QuantizePass(QuantizeConfig(mode="float16")), ExportPass(ExportConfig(target="gpu"))]
    outputs = []
    done = run_passes(passes, ModelState(keras=model), ctx, on_step=lambda _i, _p, output, _s: outputs.append(output))
    exported = outputs[1]
    assert set(exported.files) == {"compatibility.json"}
    report = json.loads(exported.files["compatibility.json"])
    assert report["target"] == "gpu" and report["full_coverage"] is True and report["summary"]["nodes"] > 0
    assert exported.details["full_coverage"] is True and exported.details["metadata"] == METADATA_NAME
    meta = read_embedded_metadata(parse_tflite_bytes(done.state.tflite))
    assert meta["target"] == "gpu" and meta["mode"] == "float16" and meta["labels"][0] == "c0"
    assert meta["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert files_in(tmp_path) == set()


def test_export_pass_converts_with_the_target_defaults(model_and_calibration):
    model, calibration = model_and_calibration
    out = ExportPass(ExportConfig(target="nnapi", api_level=30)).apply(ModelState(keras=model), PassContext(calibration=calibration))
    info = parse_tflite_bytes(out.state.tflite)
    assert out.state.kind == "int8" and info.inputs[0].dtype == "int8"  # nnapi: int8 with int8 I/O
    assert out.details["converted"] == "int8" and json.loads(out.files["compatibility.json"])["api_level"] == 30
    with pytest.raises(InputError, match="needs calibration data"):
        ExportPass(ExportConfig(target="npu")).check(ModelState(keras=model), PassContext())
