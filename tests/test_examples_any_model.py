"""The README's "Any model" examples, run as written: the LSTM text model and the two-output detector."""

from __future__ import annotations

import json
from pathlib import Path

EX = Path(__file__).resolve().parents[1] / "examples"


def test_text_example_int8_with_int32_tokens(runner, cli, tmp_path):
    art = tmp_path / "text_int8.tflite"
    out = runner.invoke(cli, ["quantize", str(EX / "text_sentiment" / "model.keras"), "--mode", "int8", "--data",
                              str(EX / "text_sentiment" / "train.npz"), "-o", str(art)])
    assert out.exit_code == 0, out.output
    assert "unrolled over its 16 steps" in out.output and "I/O int32 -> float32" in out.output
    rep = tmp_path / "r.json"
    res = runner.invoke(cli, ["validate", str(art), "--data", str(EX / "text_sentiment" / "val.npz"), "--reference",
                              str(EX / "text_sentiment" / "model.keras"), "--runs", "5", "--report", str(rep)])
    assert res.exit_code == 0, res.output
    report = json.loads(rep.read_text())
    assert report["accuracy"]["top1"] > 85 and abs(report["accuracy_drop"]) < 3  # int8 keeps the float model's accuracy


def test_detector_example_two_outputs(runner, cli, tmp_path):
    ex = EX / "detect_fashion"
    art = tmp_path / "detect_int8.tflite"
    out = runner.invoke(cli, ["quantize", str(ex / "model.keras"), "--mode", "int8", "--data", str(ex / "train.npz"), "--scale", "1/255",
                              "-o", str(art)])
    assert out.exit_code == 0 and "warning" not in out.output, out.output
    rep = tmp_path / "r.json"
    res = runner.invoke(cli, ["validate", str(art), "--data", str(ex / "val.npz"), "--reference", str(ex / "model.keras"), "--runs", "5",
                              "--report", str(rep)])
    assert res.exit_code == 0, res.output
    report = json.loads(rep.read_text())
    assert [t["task"] for t in report["tasks"]] == ["classification", "regression"]
    outputs = {o["output"]: o["values"] for o in report["accuracy"]["outputs"]}
    assert outputs["class_logits"]["top1"] > 75 and outputs["box"]["mae"] < 0.08
    student = tmp_path / "student.keras"
    res = runner.invoke(cli, ["distill", "--teacher", str(ex / "model.keras"), "--width", "0.5", "--data", str(ex / "train.npz"), "--val",
                              str(ex / "val.npz"), "--scale", "1/255", "--epochs", "2", "--baseline", "--no-export", "-o", str(student)])
    assert res.exit_code == 0, res.output
    models = json.loads((tmp_path / "student.distill.report.json").read_text())["models"]
    assert models["distilled"]["metric"] == "top1" and models["distilled"]["value"] is not None
