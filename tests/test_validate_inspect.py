"""validate and inspect through the CLI on real artifacts."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def int8_artifact(tiny, tmp_path_factory):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    out = tmp_path_factory.mktemp("art") / "tiny_int8.tflite"
    quantize(tiny["model"], out, mode="int8", data=tiny["train"], preprocessing=Preprocessing(scale=1 / 255), io_type="int8")
    return out


def test_validate_reports_accuracy_latency_size(runner, cli, tiny, int8_artifact):
    result = runner.invoke(cli, ["validate", str(int8_artifact), "--data", str(tiny["val"]), "--reference", str(tiny["model"]),
                                 "--runs", "20", "--warmup", "2"])
    assert result.exit_code == 0, result.output
    assert "top-1" in result.stdout and "p50 / p90 / p99" in result.stdout
    report_path = int8_artifact.with_name("tiny_int8.validate.report.json")
    report = json.loads(report_path.read_text())
    # the preprocessing came from the manifest: without it accuracy would collapse
    assert report["preprocessing"]["scale"] == pytest.approx(1 / 255)
    assert report["samples"] == 200
    assert report["accuracy"]["top1"] > 90.0
    assert report["accuracy"]["top5"] is not None  # 6 classes > 5
    assert report["reference_accuracy"]["top1"] > 90.0
    assert abs(report["accuracy_drop"]) <= 2.0
    cmp = report["comparisons"][0]
    assert cmp["top1_agreement"] >= 97.0
    assert 0.99 < cmp["cosine_similarity"] <= 1.0
    assert 15.0 < cmp["sqnr_db"] < 60.0  # int8: close, but not exact
    lat = report["latency"]
    assert lat["runs"] == 20 and lat["warmup"] == 2 and lat["threads"] == 1
    assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    assert lat["init_ms"] > 0 and lat["first_inference_ms"] > 0
    assert lat["peak_memory_mb"] > 10
    assert lat["runtime"].startswith("ai_edge_litert")
    assert report["size"]["bytes"] == int8_artifact.stat().st_size
    assert 0 < report["size"]["gzip_bytes"] < report["size"]["bytes"] * 1.1
    assert report["labels"] == [f"class_{i}" for i in range(6)]


def test_validate_json_and_samples_and_report_path(runner, cli, tiny, int8_artifact, tmp_path):
    report_path = tmp_path / "r.json"
    result = runner.invoke(cli, ["validate", str(int8_artifact), "--data", str(tiny["val"]), "--samples", "50",
                                 "--runs", "3", "--warmup", "0", "--threads", "2", "--json", "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["samples"] == 50 and payload["latency"]["threads"] == 2
    assert payload["reference"] is None and payload["comparisons"] == []
    assert json.loads(report_path.read_text())["sha256"] == payload["sha256"]


def test_validate_unlabelled_npy_has_no_accuracy(runner, cli, tiny, int8_artifact, tmp_path):
    x = np.load(tiny["val"])["x"][:10]
    np.save(tmp_path / "x.npy", x)
    result = runner.invoke(cli, ["validate", str(int8_artifact), "--data", str(tmp_path / "x.npy"), "--runs", "2",
                                 "--json", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["accuracy"] is None and payload["samples"] == 10


def test_inspect_tflite(runner, cli, int8_artifact):
    result = runner.invoke(cli, ["inspect", str(int8_artifact), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["kind"] == "tflite"
    assert info["op_histogram"]["CONV_2D"] == 1 and info["op_histogram"]["FULLY_CONNECTED"] == 2
    assert info["inputs"][0]["dtype"] == "int8" and info["inputs"][0]["shape"] == [1, 8, 8, 1]
    assert info["outputs"][0]["quantization"]["scales"][0] == pytest.approx(1 / 256)
    # conv 8*9+8, fc 72*16+16, probs 16*6+6
    assert info["parameters"] == 80 + 1168 + 102
    assert sum(info["size_breakdown"].values()) == info["bytes"]
    text = runner.invoke(cli, ["inspect", str(int8_artifact)])
    assert "CONV_2D" in text.stdout and "Size breakdown" in text.stdout


def test_inspect_keras(runner, cli, tiny):
    result = runner.invoke(cli, ["inspect", str(tiny["model"]), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["parameters"] == 1350
    assert [layer["name"] for layer in info["layers"]] == ["pixels", "conv", "pool", "flat", "fc", "probs"]


def test_inspect_foreign_tflite_without_manifest(runner, cli, tmp_path, tiny):
    """A .tflite edgekit did not write (no manifest) is inspected and validated."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(tiny["keras_model"])
    (tmp_path / "foreign.tflite").write_bytes(conv.convert())
    result = runner.invoke(cli, ["inspect", str(tmp_path / "foreign.tflite"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs"][0]["shape"] == [-1, 8, 8, 1]  # dynamic batch shown as -1
    result = runner.invoke(cli, ["validate", str(tmp_path / "foreign.tflite"), "--data", str(tiny["val"]),
                                 "--scale", "1/255", "--runs", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accuracy"]["top1"] > 90
