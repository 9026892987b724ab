"""`edgekit optimize`: candidates, why int8 was rejected, mixed int8, the Pareto front, the rerunnable recipe, the HTML report."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from recipe_fixtures import write_fixture

from edgekit.cli import cli
from edgekit.core.extras import has_extra

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_fixture(tmp_path_factory.mktemp("tiny-opt"), outlier=300.0)


@pytest.fixture(scope="module")
def outlier_run(tiny, tmp_path_factory):
    """One optimize run on the model whose fc1 has two outlier units (plain int8 loses accuracy)."""
    out = tmp_path_factory.mktemp("opt") / "out"
    result = CliRunner().invoke(cli, ["optimize", str(tiny["outlier"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]),
                                      "--max-drop", "1.0", "--effort", "quick", "--runs", "5", "--rounds", "1", "--allow-slower",
                                      "--no-equalize", "-o", str(out), "--quiet"])
    return result, out


def test_outlier_model_int8_rejected_mixed_found(outlier_run):
    result, out = outlier_run
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["candidates"]}
    assert {"float32", "float16", "dynamic", "int8", "int8 per-tensor", "int8 int8-I/O", "int16x8"} <= set(rows)
    if has_extra("quantizer"):  # issue 16: int4 weights (litert-quantizer) are a candidate when the extra is installed
        assert rows["int4"]["passes"] == [{"pass": "litert_quantize", "mode": "int4"}] and rows["int4"]["bytes"] < rows["int8"]["bytes"]
    int8 = rows["int8"]
    assert int8["status"] == "rejected"
    assert int8["drop"] > 1.0
    assert any(reason.startswith(f"accuracy drop {int8['drop']:.2f} points > 1") for reason in int8["reasons"])
    # the debugger ranks fc1 (the outlier producer) first: its whole-tensor SQNR looks fine, its worst channels do not
    assert report["ranked_layers"][0] == "fc1"
    fc1 = next(e for e in report["layer_errors"] if e["layer"] == "fc1")
    assert fc1["worst_channel_sqnr_db"] < 10 < fc1["sqnr_db"]
    mixed = [r for r in report["candidates"] if r["family"] == "mixed"]
    assert mixed and mixed[0]["details"]["float_layers"] == ["fc1"]
    assert "fc1" in mixed[-1]["details"]["float_layers"]
    assert mixed[-1]["status"] in ("feasible", "recommended")
    assert mixed[-1]["drop"] <= 1.0
    rec = report["recommended"]
    assert rec is not None and rec["drop"] <= 1.0 and rec["status"] == "recommended"
    assert report["pareto_front"] and rows["float32"]["status"] == "reference"
    # the recommended candidate, with standard metadata added as the last step (issue 16)
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["standard_metadata"]["converted_sha256"] == hashlib.sha256(Path(rec["path"]).read_bytes()).hexdigest()
    assert (out / "candidates" / "00-float32.tflite").is_file()


def test_equalization_recovers_int8_on_the_outlier_model(tiny, tmp_path):
    from edgekit.core.models import load_model
    from edgekit.passes.equalize import equalize
    from edgekit.workflows.optimize import optimize

    loaded = load_model(tiny["outlier"])
    equalized, pairs = equalize(loaded.keras_model)
    fc = next(p for p in pairs if (p.first, p.second) == ("fc1", "fc2"))
    assert fc.max_scale > 100  # the two outlier units are scaled back by ~sqrt(300 * 300)
    x = np.load(tiny["val"])["x"][:32]
    np.testing.assert_allclose(equalized.predict(x, verbose=0), loaded.keras_model.predict(x, verbose=0), atol=1e-5)
    assert loaded.keras_model.get_layer("fc1").get_weights()[0].max() > 10 * equalized.get_layer("fc1").get_weights()[0].max()

    result = optimize(tiny["outlier"], tiny["train"], val=tiny["val"], out_dir=tmp_path / "o", effort="quick", runs=5, rounds=1,
                      allow_slower=True)
    rows = {c.name: c for c in result.candidates}
    assert rows["int8"].status == "rejected"
    eq = rows["int8 + equalization"]
    assert eq.status in ("feasible", "recommended") and eq.passes == [{"pass": "quantize", "mode": "int8", "equalize": True}]
    assert not [c for c in result.candidates if c.family == "mixed"]  # equalization was enough: no float layers tried


def test_recommendation_is_a_recipe_that_reruns(outlier_run, tiny, tmp_path):
    _, out = outlier_run
    from edgekit.workflows.recipes import load_recipe

    recipe = load_recipe(out / "recipe.yaml")
    report = json.loads((out / "report.json").read_text())
    assert recipe.passes == load_recipe(out / "recipe.yaml").passes
    assert [p["pass"] for p in report["recommended"]["passes"]] == recipe.pass_names()[: len(report["recommended"]["passes"])]
    assert recipe.gates.accuracy.max_drop == 1.0
    again = tmp_path / "again"
    result = CliRunner().invoke(cli, ["run", str(out / "recipe.yaml"), "--model", str(tiny["outlier"]), "--data", str(tiny["train"]),
                                      "--val", str(tiny["val"]), "-o", str(again), "--quiet"])
    assert result.exit_code == 0, result.output
    rerun = json.loads((again / "report.json").read_text())
    # the rerun adds the export pass's edgekit_metadata entry (a few hundred bytes on an 8 KB model)
    assert rerun["candidates"][1]["bytes"] == pytest.approx((out / "model.tflite").stat().st_size, rel=0.1)


def test_bundled_example_size_candidates(tmp_path):
    """Numbers of the bundled example: dynamic and per-tensor int8 are the candidates past 3.8x."""
    from edgekit.core.datatypes import Preprocessing
    from edgekit.workflows.optimize import optimize

    example = Path(__file__).resolve().parents[1] / "examples" / "fashion_mnist"
    result = optimize(example / "model.keras", example / "calib.npz", val=example / "val.npz", out_dir=tmp_path / "o",
                      preprocessing=Preprocessing(scale=1 / 255), effort="quick", runs=5, rounds=1, allow_slower=True)
    rows = {c.name: c for c in result.candidates}
    ref = result.reference.measurement.size.bytes
    assert ref / rows["int8"].measurement.size.bytes < 3.8 < ref / rows["int8 per-tensor"].measurement.size.bytes
    assert ref / rows["dynamic"].measurement.size.bytes > 3.8
    assert result.recommended is not None and ref / result.recommended.measurement.size.bytes >= 3.8


def test_bad_options_write_nothing(tiny, tmp_path):
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["optimize", str(tiny["model"]), "--data", str(tiny["train"]), "--max-drop", "-1", "-o", str(out)])
    assert result.exit_code == 2 and "--max-drop must be a number >= 0" in result.output
    unlabelled = tmp_path / "x.npz"
    np.savez(unlabelled, x=np.zeros((10, 12, 12, 1), np.float32))
    result = runner.invoke(cli, ["optimize", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(unlabelled), "-o", str(out)])
    assert result.exit_code == 4 and "needs labelled validation data" in result.output
    result = runner.invoke(cli, ["optimize", str(tiny["model"]), "--data", str(tiny["train"]), "--device", "no-such-device", "-o", str(out)])
    assert result.exit_code == 2 and "unknown device 'no-such-device'" in result.output
    assert not out.exists()


def test_no_candidate_within_budget_exits_8(tiny, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["optimize", str(tiny["model"]), "--data", str(tiny["train"]), "--val", str(tiny["val"]),
                                      "--max-kb", "0.5", "--effort", "quick", "--runs", "3", "--rounds", "1", "-o", str(out), "--quiet"])
    assert result.exit_code == 8
    assert "no candidate met every limit" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["recommended"] is None
    assert all(any(r.startswith("size ") for r in row["reasons"]) for row in report["candidates"] if row["status"] == "rejected")
    assert not (out / "recipe.yaml").exists()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium); .ci/run installs it")
def test_html_report_renders_in_headless_chromium(outlier_run, tmp_path):
    from PIL import Image

    _, out = outlier_run
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 3  # candidates, latency distribution, per-layer error
    shot = tmp_path / "report.png"
    profile = tempfile.mkdtemp(prefix="edgekit-chromium-")
    try:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
                        f"--screenshot={shot}", "--window-size=1200,3000", (out / "report.html").resolve().as_uri()],
                       capture_output=True, timeout=120, check=False, env={**os.environ, "HOME": profile})
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert shot.is_file(), "chromium wrote no screenshot"
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 3000)
    pixels = np.asarray(image).reshape(-1, 3)
    colours = {tuple(int(v) // 32 for v in p) for p in pixels[:: 97]}
    assert len(colours) > 20  # text, badges and plots, not a blank or error page
    # the plots decoded: matplotlib's red bars (per-layer error) and the blue/green markers are on the page
    red = ((pixels[:, 0] > 180) & (pixels[:, 1] < 80) & (pixels[:, 2] < 80)).sum()
    assert red > 500
