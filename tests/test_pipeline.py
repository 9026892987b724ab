"""`edgekit run`: every bundled recipe end to end on a tiny model, gates, intermediate artifacts, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from recipe_fixtures import write_fixture

from edgekit.cli import cli
from edgekit.core.tflite_file import read_tflite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("tiny"))


def run_cli(*args: str):
    return CliRunner().invoke(cli, ["run", *args, "--quiet"])


def fast_recipe(name: str, folder: Path, **measure) -> Path:
    """A bundled recipe with fewer latency runs (the passes are unchanged), saved under ``folder``."""
    from edgekit.workflows.recipes import load_recipe

    data = load_recipe(name).to_dict()
    data["measure"].update({"runs": 10, "rounds": 1, **measure})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def read_report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def common_checks(out: Path, passes: list[str]) -> dict:
    report = read_report(out)
    for name in ("model.tflite", "model.json", "recipe.yaml", "report.json", "report.html", "steps/00-float32.tflite"):
        assert (out / name).is_file(), name
    assert [s["pass"] for s in report["steps"]] == passes
    # the resolved recipe reruns as is
    from edgekit.workflows.recipes import load_recipe

    assert load_recipe(out / "recipe.yaml").pass_names() == passes
    ref, final = report["candidates"]
    assert ref["role"] == "reference" and final["role"] == "final"
    assert final["bytes"] == (out / "model.tflite").stat().st_size
    assert len(final["latency_samples_ms"]) == 10
    assert report["versions"]["tensorflow"] and report["artifact"]["sha256"]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 2 and "http://" not in html.split("</style>")[1] and "<script" not in html
    return report


def test_int8_cpu(tiny, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(fast_recipe("int8-cpu", tmp_path)), "--model", str(tiny["model"]), "--data", str(tiny["train"]),
                     "--val", str(tiny["val"]), "-o", str(out))
    assert result.exit_code == 0, result.output
    report = common_checks(out, ["quantize", "export"])
    info = read_tflite(out / "model.tflite")
    assert info.weight_dtypes().get("INT8", 0) > 0 and "FLOAT32" not in info.weight_dtypes()
    assert report["gates"][0]["gate"] == "accuracy" and report["gates"][0]["passed"]
    assert report["candidates"][1]["smaller_than_reference"] > 1.5  # tiny model: metadata and headers weigh
    assert [e["layer"] for e in report["layer_errors"] if e["op"] == "FULLY_CONNECTED"] == ["fc1", "fc2", "probs"]
    assert (out / "compatibility.json").is_file() and report["delegates"]["target"] == "cpu"
    assert (out / "steps" / "01-quantize.tflite").is_file()
    assert json.loads((out / "model.json").read_text())["options"]["recipe"] == "int8-cpu"


def test_fp16_gpu_and_npu_int8(tiny, tmp_path):
    for name, passes in (("fp16-gpu", ["quantize", "export"]), ("npu-int8", ["quantize", "export"])):
        out = tmp_path / name
        result = run_cli(str(fast_recipe(name, tmp_path)), "--model", str(tiny["model"]), "--data", str(tiny["train"]),
                         "--val", str(tiny["val"]), "-o", str(out))
        assert result.exit_code == 0, (name, result.output)
        report = common_checks(out, passes)
        info = read_tflite(out / "model.tflite")
        if name == "fp16-gpu":
            assert info.weight_dtypes().get("FLOAT16", 0) > 0
            assert report["delegates"]["target"] == "gpu"
        else:
            assert info.inputs[0].dtype == "int8" and info.outputs[0].dtype == "int8"
            assert report["delegates"]["target"] == "npu" and report["delegates"]["full_coverage"]


def test_prune80_int8_keeps_sparsity(tiny, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(fast_recipe("prune80-int8", tmp_path)), "--model", str(tiny["model"]), "--data", str(tiny["train"]),
                     "--val", str(tiny["val"]), "-o", str(out))
    assert result.exit_code in (0, 8), result.output
    report = common_checks(out, ["prune", "quantize", "export"])
    pruned = [layer for layer in report["steps"][0]["details"]["layers"] if layer["status"] == "pruned"]
    assert pruned and all(abs(layer["sparsity"] - 0.8) < 0.02 for layer in pruned)
    assert (out / "steps" / "01-prune.keras").is_file()
    final = report["candidates"][1]
    assert final["gzip_bytes"] < report["candidates"][0]["gzip_bytes"] / 3  # tiny model: headers weigh
    assert any("gzip" in w for w in report["warnings"])


def test_cluster16_int8_keeps_one_codebook_per_layer(tiny, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(fast_recipe("cluster16-int8", tmp_path)), "--model", str(tiny["model"]), "--data", str(tiny["train"]),
                     "--val", str(tiny["val"]), "-o", str(out))
    assert result.exit_code in (0, 8), result.output
    report = common_checks(out, ["cluster", "quantize", "export"])
    assert report["steps"][1]["details"]["per_channel"] is False  # chosen from the clustered kernels
    from tests.conftest import int8_kernels

    kernels = int8_kernels(out / "model.tflite")
    assert kernels and all(scales == 1 and np.unique(values).size <= 16 for values, scales in kernels.values()), kernels


def test_prune_qat_int8_preserves_zeros(tiny, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(fast_recipe("prune-qat-int8", tmp_path)), "--model", str(tiny["model"]), "--data", str(tiny["train"]),
                     "-o", str(out))  # no --val: held out from --data
    assert result.exit_code in (0, 8), result.output
    report = common_checks(out, ["prune", "qat", "export"])
    assert report["steps"][1]["details"]["preserve"] == "sparsity"
    assert "held-out" in report["val"]["source"]
    from edgekit.passes.qat import int8_weight_zeros

    zeros, total = int8_weight_zeros((out / "model.tflite").read_bytes())
    assert zeros / total > 0.45
    assert read_tflite(out / "model.tflite").weight_dtypes().get("INT8", 0) > 0


def test_distill_int8(tiny, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(fast_recipe("distill-int8", tmp_path)), "--model", str(tiny["model"]), "--data", str(tiny["train"]),
                     "--val", str(tiny["val"]), "-o", str(out))
    assert result.exit_code in (0, 8), result.output
    report = common_checks(out, ["distill", "quantize", "export"])
    details = report["steps"][0]["details"]
    assert details["student_parameters"] < details["teacher_parameters"] / 2.5
    assert report["candidates"][1]["bytes"] < report["candidates"][0]["bytes"] / 2.5  # tiny model: headers weigh


def test_failed_gate_exits_8_and_still_writes(tiny, tmp_path):
    recipe = tmp_path / "tight.yaml"
    recipe.write_text("schema_version: 1\nname: tight\npasses:\n  - pass: quantize\n    mode: dynamic\n"
                      "gates:\n  size: {max_bytes: 100}\n  accuracy: {max_drop: 5}\nmeasure: {runs: 5, rounds: 1}\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["run", str(recipe), "--model", str(tiny["model"]), "--data", str(tiny["train"]),
                                      "--val", str(tiny["val"]), "-o", str(out), "--json"])
    assert result.exit_code == 8
    assert "error: recipe tight: 1 gate(s) failed: size:" in result.output
    report = read_report(out)
    assert report["passed"] is False
    assert [(g["gate"], g["passed"]) for g in report["gates"]] == [("accuracy", True), ("size", False)]
    assert (out / "model.tflite").is_file()


def test_mixed_quantize_keeps_sensitive_layer_in_float(tiny, tmp_path):
    recipe = tmp_path / "mixed.yaml"
    recipe.write_text("schema_version: 1\nname: mixed\npasses:\n  - pass: quantize\n    float_layers: [fc2]\n    keep_sensitive_float: 1\n"
                      "    equalize: true\nmeasure: {runs: 5, rounds: 1}\n")
    out = tmp_path / "out"
    result = run_cli(str(recipe), "--model", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "-o", str(out))
    assert result.exit_code == 0, result.output
    details = read_report(out)["steps"][0]["details"]
    assert [(p["first"], p["second"]) for p in details["equalized"]] == [("fc1", "fc2"), ("fc2", "probs")]
    assert details["float_layers"] == list(dict.fromkeys(["fc2", details["ranked_layers"][0]]))
    info = read_tflite(out / "model.tflite")
    fc = [op for op in info.operators if op.op == "FULLY_CONNECTED"]
    dtypes = [info.tensors[op.outputs[0]].dtype for op in fc]
    assert "FLOAT32" in dtypes and "INT8" in dtypes


def test_bad_input_writes_nothing(tiny, tmp_path):
    out = tmp_path / "out"
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: bad\npasses:\n  - pass: quantise\n")
    result = run_cli(str(bad), "--model", str(tiny["model"]), "--data", str(tiny["train"]), "-o", str(out))
    assert result.exit_code == 9
    assert f"error: invalid recipe {bad}:4: unknown pass 'quantise'; did you mean 'quantize'?" in result.output
    result = run_cli("int8-cpu", "--model", str(tmp_path / "missing.keras"), "--data", str(tiny["train"]), "-o", str(out))
    assert result.exit_code == 2 and "does not exist" in result.output
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.zeros((10, 12, 12, 1), np.float32))
    result = run_cli("prune80-int8", "--model", str(tiny["model"]), "--data", str(unlabelled), "-o", str(out))
    assert result.exit_code == 4 and "has an accuracy gate, but" in result.output
    result = run_cli("prune80-int8", "--model", str(tiny["model"]), "--data", str(unlabelled), "--val", str(tiny["val"]), "-o", str(out))
    assert result.exit_code == 4 and "the prune pass fine-tunes the model and needs labelled training data" in result.output
    assert not out.exists()
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = run_cli("int8-cpu", "--model", str(tiny["model"]), "--data", str(tiny["train"]), "-o", str(out))
    assert result.exit_code == 2 and "is not empty" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".edgekit-tmp-")]


def test_missing_pass_is_a_recipe_error_before_any_work(tiny, tmp_path, monkeypatch):
    from edgekit.passes import registry

    monkeypatch.delitem(registry._PASSES, "distill")  # as if this edgekit had no distill pass
    out = tmp_path / "out"
    result = run_cli("distill-int8", "--model", str(tiny["model"]), "--data", str(tiny["train"]), "-o", str(out))
    assert result.exit_code == 9
    assert "error: unknown pass 'distill'" in result.output
    assert not out.exists()
