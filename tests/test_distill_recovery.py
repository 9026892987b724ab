"""Distillation as recovery: `edgekit prune --distill` and `edgekit qat --distill` use the original model as teacher."""

from __future__ import annotations

import json

import numpy as np

from edgekit.core.fsutil import sha256_file


def _prune(runner, cli, tiny, out, *extra):
    return runner.invoke(cli, ["prune", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255",
                               "--sparsity", "0.8", "--epochs", "2", "--batch-size", "32", "--no-export", "-o", str(out), "--json", *extra])


def test_prune_distill_fine_tunes_with_the_original_as_teacher(runner, cli, tiny, tmp_path):
    before = sha256_file(tiny["model"])
    plain = _prune(runner, cli, tiny, tmp_path / "plain.keras")
    distilled = _prune(runner, cli, tiny, tmp_path / "kd.keras", "--distill")
    assert plain.exit_code == 0, plain.output
    assert distilled.exit_code == 0, distilled.output
    kd = json.loads((tmp_path / "kd.prune.report.json").read_text())
    base = json.loads((tmp_path / "plain.prune.report.json").read_text())
    assert kd["config"]["distill"] is True and base["config"]["distill"] is False
    # the masks still hold under the distillation loss
    pruned = [layer for layer in kd["layers"] if layer["status"] == "pruned"]
    assert pruned and all(abs(layer["sparsity"] - 0.8) < 0.01 for layer in pruned)
    # a different loss was minimised (KL to the teacher at T=4 plus 0.1 x labels), over the same epochs
    assert len(kd["history"]["loss"]) == len(base["history"]["loss"]) == 2
    assert not np.allclose(kd["history"]["loss"], base["history"]["loss"])
    # it matched the original's hidden features (conv, fc) as well as its outputs
    assert len(kd["history"]["hint_loss"]) == 2 and kd["history"]["hint_loss"][-1] > 0
    assert 0 <= kd["top1"]["after"] <= 100 and kd["top1"]["before"] == base["top1"]["before"]
    assert sha256_file(tiny["model"]) == before  # the teacher file is untouched


def test_qat_distill_fine_tunes_with_the_float_model_as_teacher(runner, cli, tiny, tmp_path):
    out = tmp_path / "m.tflite"
    result = runner.invoke(cli, ["qat", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]), "--scale", "1/255",
                                 "--epochs", "1", "--distill", "--no-ptq", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["options"]["distill"] is True
    history = payload["training"]["history"]
    assert len(history) == 1 and np.isfinite(history[0]["loss"]) and "accuracy" in history[0]
    top1 = {row["variant"]: row["top1"] for row in payload["comparison"]}
    assert top1["qat-int8"] >= top1["float"] - 10
