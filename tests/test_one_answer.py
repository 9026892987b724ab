"""Issue 15, "one answer per question": the same model, data, options and seed give the same int8 model
(same sha256) and the same accuracy through quantize, a recipe's quantize step, qat's PTQ column and optimize.

The artifacts each command writes carry standard metadata naming the command (issue 16), so the model
compared is the converted one: ``quantize``'s manifest records its sha256 (``converted_sha256``)."""

from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.export.tflite_metadata import read_standard_metadata

pytestmark = pytest.mark.slow


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def quantized(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "q.tflite"
    r = CliRunner().invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tiny["train"]), "--scale", "1/255",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    v = CliRunner().invoke(cli, ["validate", str(out), "--data", str(tiny["val"]), "--runs", "1", "--json"])
    assert v.exit_code == 0, v.output
    converted = json.loads(out.with_suffix(".json").read_text())["standard_metadata"]["converted_sha256"]
    return converted, json.loads(v.output)["accuracy"]["top1"]


def test_recipe_quantize_step_is_the_quantize_artifact(tiny, quantized, tmp_path):
    converted, _ = quantized
    r = CliRunner().invoke(cli, ["run", "int8-cpu", "--model", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]),
                                 "--scale", "1/255", "-o", str(tmp_path / "run"), "--quiet"])
    assert r.exit_code in (0, 3), r.output  # 3: a gate failed; the step is still written
    steps = sorted((tmp_path / "run" / "steps").glob("*quantize*.tflite"))
    assert steps, list((tmp_path / "run").rglob("*"))
    assert sha(steps[0]) == converted


def test_optimize_int8_candidate_is_the_quantize_artifact(tiny, quantized, tmp_path):
    converted, _ = quantized
    # no --val: optimize holds out part of --data for accuracy, but calibrates on the same draw from all of it
    r = CliRunner().invoke(cli, ["optimize", str(tiny["model"]), "--data", str(tiny["train"]), "--scale", "1/255",
                                 "--effort", "quick", "--runs", "3", "--rounds", "1", "--allow-slower", "--no-equalize",
                                 "-o", str(tmp_path / "opt"), "--quiet"])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "opt" / "report.json").read_text())
    int8 = next(c for c in report["candidates"] if c["name"] == "int8")
    assert sha(tmp_path / "opt" / "candidates" / int8["path"].split("/")[-1]) == converted
    if (tmp_path / "opt" / "model.tflite").exists():  # the recommended artifact carries standard metadata (issue 16)
        assert read_standard_metadata(tmp_path / "opt" / "model.tflite") is not None


def test_qat_ptq_column_is_the_quantize_artifact(tiny, quantized, tmp_path):
    converted, top1 = quantized
    r = CliRunner().invoke(cli, ["qat", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255",
                                 "--epochs", "1", "-o", str(tmp_path / "qat.tflite")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "qat.qat.report.json").read_text())
    rows = {row["variant"]: row for row in report["comparison"]}
    assert rows["ptq-int8"]["sha256"] == converted
    std = read_standard_metadata(tmp_path / "qat.tflite")
    assert std is not None and "qat" in std.metadata.description
    assert rows["ptq-int8"]["top1"] == pytest.approx(top1, abs=0.005)
