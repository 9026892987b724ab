"""Issue #18: the converter runs in its own (spawned) worker process — a converter crash fails one
command with exit 5 and a clear line, edgekit itself survives, and the bytes are the same as in process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import model_zoo  # noqa: E402

from edgekit.core.datatypes import QuantMode  # noqa: E402
from edgekit.export.convert import Conversion, convert_model  # noqa: E402


def test_worker_and_in_process_give_the_same_bytes(tiny, monkeypatch):
    x = np.load(tiny["train"])["x"][:40].astype(np.float32) / 255.0
    in_worker = convert_model(tiny["keras_model"], Conversion(QuantMode.INT8), calibration=x).flatbuffer
    monkeypatch.setenv("EDGEKIT_CONVERTER", "inprocess")
    in_process = convert_model(tiny["keras_model"], Conversion(QuantMode.INT8), calibration=x).flatbuffer
    assert in_worker == in_process


def test_a_converter_crash_is_one_line_and_edgekit_survives(runner, cli, tmp_path):
    """Int8 calibration of a Keras 3 LSTM kept as TensorList ops (--allow-select-tf-ops skips edgekit's
    unrolling) segfaults TF 2.21's converter. In its worker that is exit 5 and nothing written."""
    model, data, _ = model_zoo.save("lstm_text", tmp_path / "m", n=120)
    out = tmp_path / "lstm.tflite"
    result = runner.invoke(cli, ["quantize", str(model), "--mode", "int8", "--data", str(data), "--allow-select-tf-ops", "-o", str(out)])
    if result.exit_code == 0:  # a converter that no longer crashes here: the file is complete then
        assert out.is_file()
    else:
        assert result.exit_code == 5, result.output
        line = result.output.strip().splitlines()[-1]
        assert "the TFLite converter crashed" in line and "edgekit is unaffected" in line
        assert not out.exists() and not (tmp_path / "lstm.json").exists()
    # the next conversion gets a fresh worker
    again = runner.invoke(cli, ["quantize", str(model), "--mode", "int8", "--data", str(data), "-o", str(tmp_path / "ok.tflite")])
    assert again.exit_code == 0, again.output
