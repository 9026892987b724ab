"""Issue 16: standard TFLite metadata on every artifact edgekit writes, read back by inspect and validate."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.export.tflite_metadata import describe_model, read_standard_metadata, write_standard_metadata
from edgekit.runtime.local import run_local

LABELS = [f"class_{i}" for i in range(6)]


@pytest.fixture(scope="module")
def quantized(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("std") / "m.tflite"
    r = CliRunner().invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tiny["train"]), "--scale", "1/255",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_quantize_writes_standard_metadata_and_the_model_runs_the_same(quantized, tiny):
    from edgekit.core.data import calibration_sample, load_dataset
    from edgekit.core.datatypes import Preprocessing, QuantMode
    from edgekit.core.models import load_model
    from edgekit.export.convert import Conversion, convert_model

    std = read_standard_metadata(quantized)
    assert std is not None and std.labels() == LABELS
    meta = std.metadata
    assert meta.name == "model" and meta.version and "int8" in meta.description and meta.author == "edgekit"
    assert meta.inputs[0].normalization.mean == (0.0,) and meta.inputs[0].normalization.std == pytest.approx((255.0,))
    assert meta.inputs[0].content == "image" and meta.inputs[0].color_space == "grayscale"
    # the graph is the converted one: same bytes before metadata, same outputs in LiteRT
    manifest = json.loads(quantized.with_suffix(".json").read_text())
    loaded = load_model(tiny["model"])
    ds = load_dataset(tiny["train"], input_shape=loaded.input_shape, preprocessing=Preprocessing(scale=1 / 255), limit=100, seed=0)
    raw = convert_model(loaded, Conversion(QuantMode.INT8), calibration=calibration_sample(ds, 100, 0)).flatbuffer
    import hashlib

    assert hashlib.sha256(raw).hexdigest() == manifest["standard_metadata"]["converted_sha256"]
    raw_path = quantized.parent / "raw.tflite"
    raw_path.write_bytes(raw)
    x = np.load(tiny["val"])["x"][:50].astype(np.float32) / 255.0
    assert np.array_equal(run_local(quantized, x, runs=1).outputs[0], run_local(raw_path, x, runs=1).outputs[0])


def test_inspect_lists_labels_and_normalization(quantized):
    r = CliRunner().invoke(cli, ["inspect", str(quantized), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    std = info["standard_metadata"]
    assert std["labels"] == LABELS and info["labels"] == LABELS
    assert std["inputs"][0]["normalization"] == {"mean": [0.0], "std": [pytest.approx(255.0)]}
    assert std["files"] == {"labels.txt": len("\n".join(LABELS)) + 1}
    text = CliRunner().invoke(cli, ["inspect", str(quantized)])
    assert "Standard metadata" in text.output and "labels.txt" in text.output and "std 255" in text.output


def test_inspect_reads_a_third_party_file(quantized, tmp_path):
    """A file edgekit did not write: its own name, normalization (mean 127.5, std 127.5) and labels."""
    from edgekit.core.datatypes import Preprocessing
    from edgekit.core.tflite_file import parse_tflite_bytes

    raw = (quantized.parent / "raw.tflite").read_bytes() if (quantized.parent / "raw.tflite").exists() else quantized.read_bytes()
    meta, files = describe_model(parse_tflite_bytes(raw), name="ThirdPartyNet", version="7", description="someone else's",
                                 preprocessing=Preprocessing(mean=(127.5,), std=(127.5,)), labels=["a", "b", "c", "d", "e", "f"])
    other = tmp_path / "third_party.tflite"
    other.write_bytes(write_standard_metadata(raw, meta, files))
    r = CliRunner().invoke(cli, ["inspect", str(other), "--json"])
    assert r.exit_code == 0, r.output
    std = json.loads(r.output)["standard_metadata"]
    assert std["name"] == "ThirdPartyNet" and std["version"] == "7"
    assert std["labels"] == ["a", "b", "c", "d", "e", "f"]
    assert std["inputs"][0]["normalization"] == {"mean": [127.5], "std": [127.5]}


def test_validate_without_manifest_uses_the_standard_normalization(quantized, tiny, tmp_path):
    copy = tmp_path / "copy.tflite"
    shutil.copy(quantized, copy)  # no manifest beside it
    with_manifest = CliRunner().invoke(cli, ["validate", str(quantized), "--data", str(tiny["val"]), "--runs", "1", "--json",
                                             "--report", str(tmp_path / "a.json")])
    without = CliRunner().invoke(cli, ["validate", str(copy), "--data", str(tiny["val"]), "--runs", "1", "--json"])
    assert with_manifest.exit_code == 0 and without.exit_code == 0, without.output
    a, b = json.loads(with_manifest.output), json.loads(without.output)
    assert b["accuracy"]["top1"] == a["accuracy"]["top1"] > 50
    assert b["preprocessing"]["std"] == [pytest.approx(255.0)]


def test_export_and_run_artifacts_carry_standard_metadata(tiny, tmp_path):
    r = CliRunner().invoke(cli, ["export", str(tiny["model"]), "--target", "cpu", "--data", str(tiny["train"]), "--scale", "1/255",
                                 "-o", str(tmp_path / "cpu")])
    assert r.exit_code == 0, r.output
    std = read_standard_metadata(tmp_path / "cpu" / "model.tflite")
    assert std is not None and std.labels() == LABELS and "cpu" in std.metadata.description
    r = CliRunner().invoke(cli, ["run", "int8-cpu", "--model", str(tiny["model"]), "--data", str(tiny["train"]), "--scale", "1/255",
                                 "-o", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code in (0, 8), r.output
    std = read_standard_metadata(tmp_path / "run" / "model.tflite")
    assert std is not None and std.labels() == LABELS and "int8-cpu" in std.metadata.description
