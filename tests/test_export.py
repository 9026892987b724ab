"""``edgekit export``: converter settings per target, the artifact directory, metadata, refusals."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.core.datatypes import IOType, Preprocessing, QuantMode
from edgekit.core.errors import ConversionError, InputError, ModelError
from edgekit.core.tflite_file import parse_tflite_bytes, read_tflite
from edgekit.workflows.export import METADATA_NAME, embed_metadata, export, read_embedded_metadata, resolve_settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
MODEL = EXAMPLE / "model.keras"
VAL = EXAMPLE / "val.npz"
CALIB = EXAMPLE / "calib.npz"
LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SCALE = Preprocessing(scale=1 / 255)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The bundled example exported once per target (library API)."""
    root = tmp_path_factory.mktemp("exports")
    out = {
        "gpu": export(MODEL, "gpu", root / "gpu", data=VAL, preprocessing=SCALE, fp16_samples=40),
        "cpu": export(MODEL, "cpu", root / "cpu", data=CALIB, preprocessing=SCALE, samples=50),
        "nnapi": export(MODEL, "nnapi", root / "nnapi", data=CALIB, preprocessing=SCALE, samples=50, api_level=30),
        "npu": export(MODEL, "npu", root / "npu", data=CALIB, preprocessing=SCALE, samples=50),
    }
    return out


@pytest.fixture(scope="module")
def flex_model(tmp_path_factory) -> Path:
    """A saved Keras model whose keras.ops.erf has no TFLite builtin (needs Flex)."""
    from edgekit.core.tfshim import keras

    k = keras()
    inp = k.Input((16,), name="x")
    hidden = k.layers.Dense(16, name="dense_a")(inp)
    model = k.Model(inp, k.layers.Dense(4, name="head")(k.ops.erf(hidden)), name="flexy")
    path = tmp_path_factory.mktemp("flex") / "flex.keras"
    model.save(path)
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    results = []
    for sample in x:
        interp.set_tensor(inp["index"], sample[None].astype(inp["dtype"]))
        interp.invoke()
        results.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(results)


# -- converter settings per target --------------------------------------------------------------


def test_converter_settings_per_target(exports):
    """Weights and I/O dtypes each target gets by default."""
    expected = {
        "gpu": ("FLOAT16", "float32", "float32", QuantMode.FLOAT16),
        "cpu": ("INT8", "float32", "float32", QuantMode.INT8),
        "nnapi": ("INT8", "int8", "int8", QuantMode.INT8),
        "npu": ("INT8", "int8", "int8", QuantMode.INT8),
    }
    for target, (weights, in_dtype, out_dtype, mode) in expected.items():
        result = exports[target]
        info = read_tflite(result.artifact.path)
        weight_dtypes = info.weight_dtypes()
        assert max(weight_dtypes, key=weight_dtypes.get) == weights, (target, weight_dtypes)
        assert "FLOAT32" not in weight_dtypes, (target, weight_dtypes)
        assert (info.inputs[0].dtype, info.outputs[0].dtype) == (in_dtype, out_dtype), target
        assert result.mode is mode
        if in_dtype == "int8":
            assert info.inputs[0].quantization is not None
            assert abs(info.inputs[0].quantization.scales[0] - 1 / 255) < 1e-3  # inputs span [0, 1]


def test_resolve_settings_overrides_and_refusals():
    assert resolve_settings("gpu", "float32", None, False) == ("gpu", QuantMode.FLOAT32, IOType.FLOAT)
    assert resolve_settings("cpu", "dynamic", None, False) == ("cpu", QuantMode.DYNAMIC, IOType.FLOAT)
    assert resolve_settings("nnapi", "float16", None, False) == ("nnapi", QuantMode.FLOAT16, IOType.FLOAT)
    assert resolve_settings("cpu", None, "int8", True) == ("cpu", QuantMode.INT8, IOType.INT8)
    assert resolve_settings("NPU", None, None, True) == ("npu", QuantMode.INT8, IOType.INT8)
    with pytest.raises(InputError, match="does not suit --target npu"):
        resolve_settings("npu", "float16", None, True)
    with pytest.raises(InputError, match="needs calibration data"):
        resolve_settings("nnapi", None, None, False)
    with pytest.raises(InputError, match="io-type int8 does not go with --mode float16"):
        resolve_settings("gpu", None, "int8", True)


def test_gpu_float32_mode_keeps_float32_weights(tmp_path):
    result = export(MODEL, "gpu", tmp_path / "gpu32", mode="float32", fp16_check=False)
    weights = read_tflite(result.artifact.path).weight_dtypes()
    assert "FLOAT16" not in weights and weights["FLOAT32"] > 200_000
    assert result.report.full_coverage


# -- the artifact directory -------------------------------------------------------------------


def test_artifact_directory_and_manifest(exports):
    result = exports["gpu"]
    out = Path(result.out_dir)
    assert sorted(p.name for p in out.iterdir()) == ["compatibility.json", "fp16_risk.json", "model.json", "model.tflite"]
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["artifact"]["sha256"] == hashlib.sha256((out / "model.tflite").read_bytes()).hexdigest()
    assert manifest["artifact"]["bytes"] == (out / "model.tflite").stat().st_size
    assert manifest["target"] == "gpu" and manifest["options"]["mode"] == "float16"
    assert manifest["labels"] == LABELS
    assert manifest["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert manifest["inputs"][0]["shape"] == [1, 28, 28, 1]
    assert manifest["layers"]["conv1"] == "Conv2D"
    assert manifest["compatibility"]["full_coverage"] is True and manifest["compatibility"]["partitions"] == 1
    assert manifest["fp16_risk"]["risky"] is False
    assert manifest["versions"]["ai_edge_litert"] and manifest["command"]
    report = json.loads((out / "compatibility.json").read_text())
    assert report["target"] == "gpu" and report["unsupported"] == []
    # the int8 exports' quantization parameters are in the manifest
    npu_manifest = json.loads((Path(exports["npu"].out_dir) / "model.json").read_text())
    assert npu_manifest["inputs"][0]["quantization"]["scales"][0] == pytest.approx(1 / 255, rel=1e-3)


def test_inspect_reads_the_embedded_labels(exports):
    path = exports["nnapi"].artifact.path
    result = CliRunner().invoke(cli, ["inspect", path, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["labels"] == LABELS
    meta = info["metadata"][METADATA_NAME]
    assert meta["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert meta["target"] == "nnapi" and meta["inputs"][0]["dtype"] == "int8"
    text = CliRunner().invoke(cli, ["inspect", path])
    assert "Ankle boot" in text.stdout


def test_embedded_metadata_leaves_the_model_unchanged(exports):
    """The exported model (with metadata) computes exactly what the plain conversion does."""
    from edgekit.core.models import load_model
    from edgekit.export.convert import convert

    plain = convert(load_model(MODEL), QuantMode.FLOAT16)
    exported = Path(exports["gpu"].artifact.path)
    assert read_embedded_metadata(parse_tflite_bytes(plain)) is None
    plain_path = exported.parent.parent / "plain_fp16.tflite"
    plain_path.write_bytes(plain)
    x = np.load(VAL)["x"][:20].astype(np.float32).reshape(-1, 28, 28, 1) / 255
    np.testing.assert_array_equal(_run(exported, x), _run(plain_path, x))
    # replacing an entry keeps one entry of that name
    twice = embed_metadata(exported.read_bytes(), {"labels": ["a"]})
    info = parse_tflite_bytes(twice)
    assert read_embedded_metadata(info) == {"labels": ["a"]} and list(info.metadata).count(METADATA_NAME) == 1


def test_nnapi_and_cpu_reports(exports):
    nnapi = exports["nnapi"].report
    assert nnapi.delegate == "nnapi" and nnapi.api_level == 30 and nnapi.full_coverage
    cpu = exports["cpu"].report
    assert cpu.delegate == "xnnpack"
    assert [n.op for n in cpu.unsupported] == ["SOFTMAX"]  # XNNPACK's softmax is float32-only
    assert cpu.summary.flop_share > 0.999
    npu = exports["npu"].report
    assert npu.unsupported == [] and npu.summary.partitions == 1


def test_export_through_the_cli_with_force(tmp_path):
    out = tmp_path / "gpu"
    runner = CliRunner()
    args = ["export", str(MODEL), "--target", "gpu", "-o", str(out), "--mode", "float32", "--no-fp16-check",
            "--labels", ",".join(LABELS), "--json"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    payload = json.loads(first.stdout)
    assert payload["compatibility"]["node_share"] == 1.0 and payload["mode"] == "float32"
    again = runner.invoke(cli, args)
    assert again.exit_code == 2 and "already exists" in again.stderr
    forced = runner.invoke(cli, [*args, "--force"])
    assert forced.exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu"]  # no temp or backup folder left


# -- float16 risk -----------------------------------------------------------------------------


def test_fp16_risk_of_the_example_is_low(exports):
    risk = exports["gpu"].fp16
    assert risk is not None and not risk.risky and risk.per_layer
    assert risk.samples == 40
    worst = risk.worst_layer
    assert worst is not None and worst.relative_error < 0.01
    assert all(lr.max_abs < 65504 for lr in risk.layers)
    assert {lr.layer for lr in risk.layers if lr.layer} >= {"conv1 (Conv2D)", "fc1 (Dense)", "probs (Dense)"}
    assert risk.outputs[0]["top1_agreement"] == 100.0


def _dense_model(kernels, name):
    from edgekit.core.tfshim import keras

    k = keras()
    inp = k.Input((16,), name="x")
    h = inp
    for i, kernel in enumerate(kernels):
        layer = k.layers.Dense(kernel.shape[1], use_bias=False, name=f"dense{i}")
        h = layer(h)
        layer.set_weights([kernel])
    return k.Model(inp, h, name=name)


def test_fp16_risk_flags_activation_overflow(tmp_path):
    """Activations above 65504 are inf on a GPU computing in fp16, even though fp16 weights are exact."""
    model = _dense_model([np.full((16, 8), 300.0, np.float32), np.full((8, 4), 100.0, np.float32)], "hot")
    x = np.random.default_rng(0).random((10, 16), dtype=np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    result = export(model, "gpu", tmp_path / "out", data=tmp_path / "x.npz")
    risk = result.fp16
    assert risk.risky
    overflow = [lr for lr in risk.layers if lr.overflow]
    assert [lr.layer for lr in overflow] == ["dense1 (Dense)"]
    assert overflow[0].max_abs > 65504
    assert any("beyond float16's 65504" in msg and "dense1" in msg for msg in risk.flagged)
    assert any("fp16 risk" in w for w in result.warnings)


def test_fp16_risk_flags_error_growth(tmp_path):
    """Two nearly equal weight sets subtract to a small signal that float16 weights destroy."""
    from edgekit.core.tfshim import keras

    k = keras()
    rng = np.random.default_rng(1)
    inp = k.Input((16,), name="x")
    base = k.layers.Dense(4, use_bias=False, name="base")
    shifted = k.layers.Dense(4, use_bias=False, name="shifted")
    out = k.layers.Subtract(name="diff")([shifted(inp), base(inp)])
    model = k.Model(inp, out)
    base.set_weights([np.ones((16, 4), np.float32)])
    shifted.set_weights([(1.0 + 3e-4 * rng.random((16, 4))).astype(np.float32)])
    np.savez(tmp_path / "x.npz", x=rng.random((20, 16), dtype=np.float32))
    risk = export(model, "gpu", tmp_path / "out", data=tmp_path / "x.npz").fp16
    assert risk.risky
    assert risk.outputs[0]["relative_error"] > 0.5
    assert any("exceeds 0.01" in msg for msg in risk.flagged)
    assert not any(lr.overflow for lr in risk.layers)


# -- bad input --------------------------------------------------------------------------------


def test_unknown_target_writes_nothing(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(MODEL), "--target", "tpu", "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "'tpu' is not one of" in result.output and "mediapipe" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["cpu", "nnapi", "npu"])
def test_int8_target_without_data_writes_nothing(tmp_path, target):
    result = CliRunner().invoke(cli, ["export", str(MODEL), "--target", target, "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert f"--target {target} uses full-int8 quantization, which needs calibration data" in result.stderr
    assert "--data" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("target", ["gpu", "npu"])
def test_flex_ops_are_refused_for_gpu_and_npu(tmp_path, flex_model, target):
    args = ["export", str(flex_model), "--target", target, "-o", str(tmp_path / "out"), "--allow-select-tf-ops"]
    if target == "npu":
        np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((8, 16), dtype=np.float32))
        args += ["--data", str(tmp_path / "calib.npz")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == ModelError.exit_code, result.output
    message = result.stderr.strip()
    assert message.startswith("error: the model needs TensorFlow op(s) Erf that only run through the Flex delegate")
    assert len(message.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_flex_ops_on_cpu_need_the_opt_in(tmp_path, flex_model):
    runner = CliRunner()
    refused = runner.invoke(cli, ["export", str(flex_model), "--target", "cpu", "--mode", "float32", "-o", str(tmp_path / "a")])
    assert refused.exit_code == ConversionError.exit_code and "Erf" in refused.stderr and "--allow-select-tf-ops" in refused.stderr
    allowed = runner.invoke(cli, ["export", str(flex_model), "--target", "cpu", "--mode", "float32", "-o", str(tmp_path / "b"),
                                  "--allow-select-tf-ops", "--json"])
    assert allowed.exit_code == 0, allowed.output
    payload = json.loads(allowed.stdout)
    assert [n["op"] for n in payload["compatibility"]["unsupported"]] == ["FLEX:Erf"]
    assert "Flex delegate" in payload["compatibility"]["unsupported"][0]["why"]


def test_option_misuse_is_refused_before_work(tmp_path):
    runner = CliRunner()
    api = runner.invoke(cli, ["export", str(MODEL), "--target", "gpu", "--api-level", "35", "-o", str(tmp_path / "o")])
    assert api.exit_code == 2 and "--api-level applies to --target nnapi" in api.stderr
    npu = runner.invoke(cli, ["export", str(MODEL), "--target", "gpu", "--npu", "qualcomm", "-o", str(tmp_path / "o")])
    assert npu.exit_code == 2 and "--npu/--soc apply to --target npu" in npu.stderr
    vendor = runner.invoke(cli, ["export", str(MODEL), "--target", "npu", "--data", str(CALIB), "--npu", "acme", "-o", str(tmp_path / "o")])
    assert vendor.exit_code == 2 and "unknown NPU vendor 'acme'" in vendor.stderr
    (tmp_path / "file").write_text("x")
    as_file = runner.invoke(cli, ["export", str(MODEL), "--target", "gpu", "-o", str(tmp_path / "file")])
    assert as_file.exit_code == 2 and "is a file" in as_file.stderr
    inside = runner.invoke(cli, ["export", str(MODEL), "--target", "gpu", "-o", str(MODEL.parent), "--force"])
    assert inside.exit_code == 2 and "contains the input" in inside.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    with pytest.raises(InputError, match="3 labels given but the model's first output has 10 classes"):
        export(MODEL, "gpu", tmp_path / "o", labels=["a", "b", "c"], fp16_check=False)


# -- NPU ahead-of-time compilation --------------------------------------------------------------


def test_npu_aot_names_what_is_missing(tmp_path):
    from edgekit.export.npu import missing_npu_requirements

    missing = missing_npu_requirements("qualcomm")
    if not missing:
        pytest.skip("the Qualcomm SDK is installed here; the missing-SDK path cannot be exercised")
    assert any("ai-edge-litert-sdk-qualcomm" in m for m in missing)
    result = CliRunner().invoke(cli, ["export", str(MODEL), "--target", "npu", "--npu", "qualcomm", "--data", str(CALIB),
                                      "-o", str(tmp_path / "out")])
    assert result.exit_code == ConversionError.exit_code
    assert "NPU ahead-of-time compilation for Qualcomm is not available here" in result.stderr
    assert "pip install ai-edge-litert-sdk-qualcomm" in result.stderr
    assert not (tmp_path / "out").exists()


def test_npu_compile_reports_the_missing_vendor_library(tmp_path, exports):
    """Runs LiteRT's real AOT flow: the bundled plugin loads, the QNN library it needs is absent."""
    from edgekit.export.npu import missing_npu_requirements, npu_compile

    if not missing_npu_requirements("qualcomm"):
        models = npu_compile(exports["npu"].artifact.path, "qualcomm", "SM8650", tmp_path / "npu")
        assert models and models[0]["file"]
        return
    with pytest.raises(ConversionError, match=r"NPU compilation for Qualcomm SM8650 failed: the vendor library libQnn\w*\.so is missing"):
        npu_compile(exports["npu"].artifact.path, "qualcomm", "SM8650", tmp_path / "npu")
