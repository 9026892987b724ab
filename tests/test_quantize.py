"""Post-training quantization through the CLI and the library, with numbers asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import files_in
from edgekit.core.fsutil import sha256_file
from edgekit.core.tflite_file import read_tflite


def _quantize(runner, cli, tiny, out, *extra):
    args = ["quantize", str(tiny["model"]), "-o", str(out), "--scale", "1/255", *extra]
    return runner.invoke(cli, args)


@pytest.mark.parametrize(
    ("mode", "io_type", "in_dtype", "weight_dtype"),
    [
        ("float32", "float", "float32", "FLOAT32"),
        ("float16", "float", "float32", "FLOAT16"),
        ("dynamic", "float", "float32", "INT8"),
        ("int8", "int8", "int8", "INT8"),
        ("int8", "uint8", "uint8", "INT8"),
        ("int8", "float", "float32", "INT8"),
        ("int16x8", "float", "float32", "INT8"),
    ],
)
def test_modes_produce_expected_dtypes(runner, cli, tiny, tmp_path, mode, io_type, in_dtype, weight_dtype):
    out = tmp_path / f"m_{mode}_{io_type}.tflite"
    extra = ["--mode", mode, "--io-type", io_type]
    if mode in ("int8", "int16x8"):
        extra += ["--data", str(tiny["train"]), "--samples", "50"]
    result = _quantize(runner, cli, tiny, out, *extra)
    assert result.exit_code == 0, result.output
    info = read_tflite(out)
    assert info.inputs[0].dtype == in_dtype
    assert info.inputs[0].shape == (1, 8, 8, 1)  # static batch of one
    conv = next(op for op in info.operators if op.op == "CONV_2D")
    filt = info.tensors[conv.inputs[1]]
    if mode == "dynamic":
        # dynamic range quantization leaves small tensors (< 1024 elements, like this conv) in float
        fc = next(op for op in info.operators if op.op == "FULLY_CONNECTED")
        assert info.tensors[fc.inputs[1]].dtype == "INT8"
    elif mode == "float16":
        # float16 weights are stored as FLOAT16 constants dequantized at load time
        assert "FLOAT16" in info.weight_dtypes()
    else:
        assert filt.dtype == weight_dtype
    if mode == "int8":
        assert len(filt.quantization.scales) == 8  # per-channel: one scale per filter
        activ = info.tensors[conv.outputs[0]]
        assert activ.dtype == "INT8"
    if mode == "int16x8":
        assert info.tensors[conv.outputs[0]].dtype == "INT16"
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["artifact"]["sha256"] == sha256_file(out)
    assert manifest["options"]["mode"] == mode
    assert manifest["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert manifest["labels"] == ([f"class_{i}" for i in range(6)] if mode in ("int8", "int16x8") else None)
    assert manifest["versions"]["tensorflow"].startswith("2.")


def test_int8_io_quantization_params_recorded(runner, cli, tiny, tmp_path):
    out = tmp_path / "q.tflite"
    result = _quantize(runner, cli, tiny, out, "--mode", "int8", "--io-type", "int8", "--data", str(tiny["train"]), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    q = payload["inputs"][0]["quantization"]
    # inputs are in [0, 1] after scale 1/255: int8 covers them with scale ~1/255 and zero point -128
    assert q["zero_points"] == [-128]
    assert q["scales"][0] == pytest.approx(1 / 255, rel=0.05)
    assert payload["calibration_samples"] == 100


def test_float32_conversion_matches_keras_above_60db(runner, cli, tiny, tmp_path):
    out = tmp_path / "f32.tflite"
    assert _quantize(runner, cli, tiny, out, "--mode", "float32").exit_code == 0
    result = runner.invoke(cli, ["validate", str(out), "--data", str(tiny["val"]), "--reference", str(tiny["model"]),
                                 "--runs", "5", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cmp = report["comparisons"][0]
    assert cmp["sqnr_db"] == "inf" or cmp["sqnr_db"] > 60
    assert cmp["top1_agreement"] == 100.0
    assert report["accuracy_drop"] == 0.0


def test_seeded_calibration_is_reproducible(tiny, tmp_path):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    a = quantize(tiny["model"], tmp_path / "a.tflite", mode="int8", data=tiny["train"], samples=40, seed=7,
                 preprocessing=Preprocessing(scale=1 / 255))
    b = quantize(tiny["model"], tmp_path / "b.tflite", mode="int8", data=tiny["train"], samples=40, seed=7,
                 preprocessing=Preprocessing(scale=1 / 255))
    assert a.artifact.sha256 == b.artifact.sha256
    c = quantize(tiny["model"], tmp_path / "c.tflite", mode="int8", data=tiny["train"], samples=40, seed=8,
                 preprocessing=Preprocessing(scale=1 / 255))
    assert c.artifact.sha256 != a.artifact.sha256  # another calibration sample: other ranges


def test_existing_output_needs_force(runner, cli, tiny, tmp_path):
    out = tmp_path / "m.tflite"
    assert _quantize(runner, cli, tiny, out, "--mode", "float16").exit_code == 0
    before = out.read_bytes()
    result = _quantize(runner, cli, tiny, out, "--mode", "dynamic")
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert out.read_bytes() == before
    assert _quantize(runner, cli, tiny, out, "--mode", "dynamic", "--force").exit_code == 0
    assert out.read_bytes() != before
    assert files_in(tmp_path) == {"m.tflite", "m.json"}


def test_saved_model_directory_converts(tiny, tmp_path):
    from edgekit import read_tflite
    from edgekit.workflows.quantize import quantize

    export_dir = tmp_path / "saved"
    tiny["keras_model"].export(str(export_dir), verbose=False)
    result = quantize(export_dir, tmp_path / "sm.tflite", mode="dynamic")
    info = read_tflite(result.artifact.path)
    assert info.op_histogram().get("CONV_2D") == 1
    x = np.load(tiny["val"])["x"][:4] / 255.0
    from edgekit.core.models import load_model

    loaded = load_model(export_dir)
    assert loaded.format == "savedmodel"
    np.testing.assert_allclose(loaded.predict(x.astype("float32"))[0], tiny["keras_model"].predict(x, verbose=0), atol=1e-5)


def test_int8_calibration_ignores_float_regression_targets(runner, cli, tiny, tmp_path):
    # calibration never needs labels: float targets (a regressor's) must not be refused
    x = np.load(tiny["train"])["x"][:50]
    data = tmp_path / "reg.npz"
    np.savez(data, x=x, y=np.linspace(-1.5, 2.5, 50).astype("float32"))
    out = tmp_path / "q.tflite"
    result = _quantize(runner, cli, tiny, out, "--mode", "int8", "--data", str(data), "--scale", "1/127.5")
    assert result.exit_code == 0, result.output
    assert out.exists()
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["preprocessing"]["scale"] == pytest.approx(1 / 127.5)  # the later --scale, an expression
