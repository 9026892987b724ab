"""Issue 16 through the CLI: export --target mcu (TFLite Micro) and --target ethos-u55/u65/u85 (Vela), device budgets."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import EXAMPLE, files_in
from edgekit.cli import cli
from edgekit.core.extras import missing_extra_reason

needs_mcu = pytest.mark.skipif(bool(missing_extra_reason("mcu")), reason=str(missing_extra_reason("mcu")))
needs_vela = pytest.mark.skipif(bool(missing_extra_reason("ethos-u")), reason=str(missing_extra_reason("ethos-u")))
BASE = ["--data", str(EXAMPLE / "calib.npz"), "--scale", "1/255"]


@needs_mcu
def test_export_mcu_on_the_bundled_example(tmp_path):
    out = tmp_path / "mcu"
    r = CliRunner().invoke(cli, ["export", str(EXAMPLE / "model.keras"), "--target", "mcu", *BASE, "--val", str(EXAMPLE / "val.npz"),
                                 "--device", "arduino-nano-33-ble", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.output)
    d = result["details"]
    assert d["ops"]["ok"] and not d["ops"]["missing"]
    arena = d["arena"]
    assert 0 < arena["used_bytes"] <= arena["recommended_bytes"] and arena["margin"] == 0.2
    acc = d["accuracy"]
    assert acc["samples"] == 200 and abs(acc["drop_points"]) <= 0.5  # TFLM kernels within 0.5 points of LiteRT int8
    assert d["budget"]["ok"] and d["budget"]["device"] == "arduino-nano-33-ble"
    assert result["io_type"] == "int8" and result["mode"] == "int8"
    header = (out / "model_data.h").read_text()
    assert f"constexpr size_t kTensorArenaSize = {arena['recommended_bytes']};" in header
    assert f"g_model_data_len = {(out / 'model.tflite').stat().st_size};" in (out / "model_data.cc").read_text()
    assert json.loads((out / "mcu.json").read_text())["arena"] == arena


@needs_mcu
def test_export_mcu_over_the_board_budget_writes_nothing(tmp_path):
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "tiny-board.yaml").write_text("schema_version: 1\nname: tiny-board\ntransport: mcu\nmax_arena_kb: 4\nmax_flash_kb: 64\n")
    r = CliRunner().invoke(cli, ["export", str(EXAMPLE / "model.keras"), "--target", "mcu", *BASE, "--device", "tiny-board",
                                 "--devices-dir", str(devices), "-o", str(tmp_path / "out")])
    assert r.exit_code == 8, r.output
    assert "exceeds max_arena_kb 4" in r.output and "exceeds max_flash_kb 64" in r.output
    assert not (tmp_path / "out").exists()
    # and the board is no place to run: a one-line refusal
    r = CliRunner().invoke(cli, ["benchmark", str(EXAMPLE / "model.keras"), "--device", "tiny-board", "--devices-dir", str(devices)])
    assert r.exit_code not in (0, 1)


@needs_mcu
def test_export_mcu_names_the_op_tflm_lacks(tmp_path):
    import keras

    inputs = keras.Input((16,), name="features")
    values, _ = keras.ops.top_k(keras.layers.Dense(8, name="fc")(inputs), 3)
    keras.Model(inputs, keras.layers.Dense(4, name="head")(values)).save(tmp_path / "topk.keras")
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).normal(size=(32, 16)).astype(np.float32))
    r = CliRunner().invoke(cli, ["export", str(tmp_path / "topk.keras"), "--target", "mcu", "--data", str(tmp_path / "d.npz"),
                                 "-o", str(tmp_path / "out")])
    assert r.exit_code == 3, r.output
    assert "TFLite Micro has no kernel for TOPK_V2" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "out").exists()


def test_mcu_and_ethos_need_data(tmp_path):
    for target in ("mcu", "ethos-u55"):
        r = CliRunner().invoke(cli, ["export", str(EXAMPLE / "model.keras"), "--target", target, "-o", str(tmp_path / target)])
        assert r.exit_code == 2 and ("needs calibration" in r.output or "pip install" in r.output), r.output
        assert files_in(tmp_path) == set()


@needs_vela
@pytest.mark.parametrize("target", ["ethos-u55", "ethos-u65"])
def test_export_ethos_u_reports_npu_coverage_sram_and_cycles(tmp_path, target):
    out = tmp_path / target
    r = CliRunner().invoke(cli, ["export", str(EXAMPLE / "model.keras"), "--target", target, *BASE, "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    vela = json.loads(r.output)["details"]["vela"]
    assert vela["npu_ops"] == 8 and vela["cpu_ops"] == 0 and vela["npu_op_share"] == 1.0
    assert vela["sram_kib"] > 0 and vela["cycles_total"] > 0 and vela["inference_ms_estimate"] > 0
    assert vela["top_layers"][0]["cycles"] >= vela["top_layers"][-1]["cycles"]
    assert (out / "model_vela.tflite").stat().st_size > 0 and (out / "vela.json").is_file()
    text = CliRunner().invoke(cli, ["export", str(EXAMPLE / "model.keras"), "--target", target, *BASE, "-o", str(out), "--force"])
    assert text.exit_code == 0 and "on the NPU (100%)" in text.output and "cycles" in text.output
