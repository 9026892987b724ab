"""Issue #18: the converter runs in its own (spawned) worker process — a converter crash fails one
command with exit 5 and a clear line, edgekit itself survives, and the bytes are the same as in process."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

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


def test_a_crash_in_any_worker_stage_names_the_stage_and_the_next_job_runs():
    from edgekit.core.errors import ConversionError
    from edgekit.export import converter_worker

    with pytest.raises(ConversionError) as caught:
        converter_worker.run_in_worker(model_zoo.crash_in_worker, {}, stage="the per-layer sensitivity analysis", name="m.keras")
    line = caught.value.one_line()
    assert "SIGSEGV" in line and "during the per-layer sensitivity analysis of m.keras" in line and "edgekit is unaffected" in line
    assert converter_worker.run_in_worker(model_zoo.echo_in_worker, {"x": 3}, stage="s", name="n") == ("ok", 3)


def test_qat_export_and_the_sensitivity_analysis_run_in_the_worker(tiny, monkeypatch):
    """Both run native converter code; in the worker they give what they give in process."""
    from ai_edge_litert.interpreter import Interpreter

    from edgekit.core.models import load_model
    from edgekit.export import converter_worker
    from edgekit.export.sensitivity import MixedInt8
    from edgekit.passes.qat.build import build_qat_model, calibrate, export_tflite

    x = np.load(tiny["train"])["x"][:64].astype(np.float32) / 255.0
    qat = build_qat_model(tiny["keras_model"])
    calibrate(qat, x)
    converter_worker._discard_executor(kill=True)
    in_worker = export_tflite(qat)
    assert converter_worker._executor is not None  # the export went to the worker
    loaded = load_model(tiny["model"])
    mixed = MixedInt8(loaded, x[:40])
    assert mixed._in_worker
    worker_errors, worker_bytes = mixed.layer_errors(), mixed.quantize(mixed.ranked_layers()[:1])

    monkeypatch.setenv("EDGEKIT_CONVERTER", "inprocess")
    in_process = export_tflite(qat)
    local = MixedInt8(loaded, x[:40])
    assert not local._in_worker
    assert [e.node for e in local.layer_errors()] == [e.node for e in worker_errors]
    assert [e.sqnr_db for e in local.layer_errors()] == pytest.approx([e.sqnr_db for e in worker_errors])
    assert local.quantize(local.ranked_layers()[:1]) == worker_bytes

    def run(flatbuffer):
        interp = Interpreter(model_content=flatbuffer)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x[:1])
        interp.invoke()
        return interp.get_tensor(interp.get_output_details()[0]["index"])

    assert len(in_worker) == len(in_process)
    np.testing.assert_array_equal(run(in_worker), run(in_process))
