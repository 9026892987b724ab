"""Issue #14's table: every kind of model through every command, from the CLI.

For each of classification, binary, multilabel, regression, segmentation, a two-input model, a
two-output model (class logits + box regression), an LSTM text classifier on int32 tokens and a
Conv1D+GRU keyword spotter (tiny models trained in code, tests/model_zoo.py): ``quantize`` int8,
``validate --reference`` with the task's metrics, ``prune``, ``cluster``, ``qat``, ``distill --width
0.5`` and ``optimize --effort quick`` all succeed, and int8's primary-metric drop is measured.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from edgekit.core.tflite_file import read_tflite

sys.path.insert(0, str(Path(__file__).parent))
import model_zoo  # noqa: E402

PRIMARY = {"classification": "top1", "binary": "accuracy", "multilabel": "accuracy", "regression": "mae",
           "segmentation": "mean_iou", "two_input": "top1", "two_output": "top1", "lstm_text": "top1", "keyword_spotter": "top1"}
TASK = {"classification": "classification", "binary": "binary", "multilabel": "multilabel", "regression": "regression",
        "segmentation": "segmentation", "two_input": "classification", "two_output": "classification", "lstm_text": "classification",
        "keyword_spotter": "classification"}


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return {kind: model_zoo.save(kind, root / kind, n=300) for kind in model_zoo.KINDS}


def _ok(result, what):
    assert result.exit_code == 0, f"{what} failed: {result.output[-1500:]}"
    return result


@pytest.mark.slow
@pytest.mark.parametrize("kind", model_zoo.KINDS)
def test_every_command_on_every_kind(zoo, runner, cli, tmp_path, kind):
    model, data, val = (str(p) for p in zoo[kind])
    int8 = tmp_path / "int8.tflite"
    out = _ok(runner.invoke(cli, ["quantize", model, "--mode", "int8", "--data", data, "-o", str(int8)]), "quantize")
    info = read_tflite(int8)
    assert not any(op.op.startswith("FLEX") or op.op == "CUSTOM" for op in info.operators), "no SELECT_TF_OPS"
    if kind == "lstm_text":
        assert info.inputs[0].dtype == "int32" and "unrolled" in out.output
    manifest = json.loads((tmp_path / "int8.json").read_text())
    assert [i["name"] for i in manifest["model_io"]["inputs"]] == (["image", "meta"] if kind == "two_input" else
                                                                   [manifest["model_io"]["inputs"][0]["name"]])

    report = tmp_path / "v.json"
    _ok(runner.invoke(cli, ["validate", str(int8), "--data", val, "--reference", model, "--runs", "3", "--report", str(report)]), "validate")
    rep = json.loads(report.read_text())
    assert rep["tasks"][0]["task"] == TASK[kind]
    assert rep["accuracy"]["metric"] == PRIMARY[kind] and rep["accuracy"]["value"] is not None
    assert rep["accuracy_drop"] is not None  # int8's drop in the primary metric's units
    if kind == "two_output":
        assert [o["output"] for o in rep["accuracy"]["outputs"]] == ["class_logits", "box"]
        assert "mae" in rep["accuracy"]["outputs"][1]["values"]
        assert [c["output"] for c in rep["comparisons"]] == ["class_logits", "box"]

    common = ["--data", data, "--val", val]
    _ok(runner.invoke(cli, ["prune", model, *common, "--sparsity", "0.5", "--epochs", "1", "--runs", "3", "-o", str(tmp_path / "p.keras")]),
        "prune")
    _ok(runner.invoke(cli, ["cluster", model, *common, "--clusters", "8", "--epochs", "1", "--runs", "3", "-o", str(tmp_path / "c.keras")]),
        "cluster")
    _ok(runner.invoke(cli, ["qat", model, *common, "--epochs", "1", "-o", str(tmp_path / "q.tflite")]), "qat")
    _ok(runner.invoke(cli, ["distill", "--teacher", model, *common, "--width", "0.5", "--epochs", "1", "--runs", "3",
                            "-o", str(tmp_path / "s.keras")]), "distill")
    distilled = json.loads((tmp_path / "s.distill.report.json").read_text())
    assert distilled["models"]["distilled"]["metric"] == PRIMARY[kind]
    _ok(runner.invoke(cli, ["optimize", model, *common, "--effort", "quick", "--runs", "5", "--rounds", "1", "--no-html",
                            "-o", str(tmp_path / "opt")]), "optimize")
    assert (tmp_path / "opt" / "model.tflite").is_file()
