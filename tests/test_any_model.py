"""Models beyond single-input float image classifiers (issue #14): integer token inputs."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.core.tflite_file import read_tflite


@pytest.mark.parametrize("layer", ["pool", "lstm"])
def test_int32_token_model_quantizes_to_int8_with_int32_input(runner, cli, tmp_path, layer):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((12,), dtype="int32")
    h = keras.layers.Embedding(50, 8)(inp)
    h = keras.layers.GlobalAveragePooling1D()(h) if layer == "pool" else keras.layers.LSTM(8, unroll=True)(h)
    model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(h))
    model.save(tmp_path / "text.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "tok.npz", x=rng.integers(0, 50, (64, 12)).astype("int32"), y=rng.integers(0, 3, 64))
    out = tmp_path / "text_int8.tflite"
    result = runner.invoke(cli, ["quantize", str(tmp_path / "text.keras"), "-o", str(out), "--mode", "int8",
                                 "--data", str(tmp_path / "tok.npz")])
    assert result.exit_code == 0, result.output
    assert "I/O int32 -> float32" in result.output  # the header names the real I/O dtypes
    info = read_tflite(out)
    assert str(info.inputs[0].dtype).lower() == "int32"  # token ids stay int32
    ops = {op.name if hasattr(op, "name") else str(op) for op in getattr(info, "operators", ())}
    assert not any("FLEX" in str(o).upper() for o in ops)  # no SELECT_TF_OPS


# ---- data for any signature: bad input is one clear line before any work, nothing written -----------------

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import model_zoo  # noqa: E402


@pytest.fixture(scope="module")
def two_io(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_io")
    return {k: model_zoo.save(k, root / k, n=200) for k in ("two_input", "two_output", "lstm_text", "classification")}


def _bad(runner, cli, args, tmp_path, match):
    before = {p.name for p in tmp_path.iterdir()}
    result = runner.invoke(cli, args)
    assert result.exit_code in (2, 4), result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and match in lines[0], result.output
    assert "Traceback" not in result.output
    assert {p.name for p in tmp_path.iterdir()} == before  # nothing written


def test_bad_data_for_a_two_input_model(two_io, runner, cli, tmp_path):
    model, _, val = two_io["two_input"]
    d = dict(np.load(val))
    np.savez(tmp_path / "miss.npz", image=d["image"], y=d["y"])
    np.savez(tmp_path / "shape.npz", image=d["image"][:, :10], meta=d["meta"], y=d["y"])
    np.savez(tmp_path / "count.npz", image=d["image"], meta=d["meta"], y=d["y"][:5])
    out = str(tmp_path / "m.tflite")
    _bad(runner, cli, ["quantize", str(model), "--mode", "int8", "--data", str(tmp_path / "miss.npz"), "-o", out], tmp_path,
         "no array for the model input 'meta'")
    _bad(runner, cli, ["quantize", str(model), "--mode", "int8", "--data", str(tmp_path / "shape.npz"), "-o", out], tmp_path,
         "input 'image'")
    _bad(runner, cli, ["prune", str(model), "--data", str(tmp_path / "count.npz"), "--sparsity", "0.5", "-o", str(tmp_path / "p.keras")],
         tmp_path, "expected 200 rows")
    # arrays under other names are mapped with --x-key name=array
    np.savez(tmp_path / "renamed.npz", img=d["image"], m=d["meta"], y=d["y"])
    result = runner.invoke(cli, ["quantize", str(model), "--mode", "int8", "--data", str(tmp_path / "renamed.npz"),
                                 "--x-key", "image=img,meta=m", "-o", out])
    assert result.exit_code == 0, result.output


def test_bad_targets_wrong_dtype_and_unknown_task(two_io, runner, cli, tmp_path):
    model, _, val = two_io["two_output"]
    t = dict(np.load(val))
    np.savez(tmp_path / "yshape.npz", image=t["image"], y_class_logits=t["y_class_logits"], y_box=t["y_box"][:, :1])
    art = tmp_path / "two.tflite"
    assert runner.invoke(cli, ["quantize", str(model), "--mode", "int8", "--data", str(val), "-o", str(art)]).exit_code == 0
    _bad(runner, cli, ["validate", str(art), "--data", str(tmp_path / "yshape.npz")], tmp_path, "targets of output 'box'")
    _bad(runner, cli, ["validate", str(art), "--data", str(val), "--task", "boxx=regression"], tmp_path, "did you mean 'box'")
    lstm, _, lval = two_io["lstm_text"]
    tok = dict(np.load(lval))
    np.savez(tmp_path / "tokfloat.npz", tokens=tok["tokens"] + 0.5, y=tok["y"])
    _bad(runner, cli, ["quantize", str(lstm), "--mode", "int8", "--data", str(tmp_path / "tokfloat.npz"), "-o", str(tmp_path / "t.tflite")],
         tmp_path, "fractional values, but the model input 'tokens' is int32")


def test_task_override_and_manifest_records_io(two_io, runner, cli, tmp_path):
    model, _, val = two_io["two_output"]
    art = tmp_path / "two.tflite"
    assert runner.invoke(cli, ["quantize", str(model), "--mode", "int8", "--data", str(val), "-o", str(art)]).exit_code == 0
    manifest = json.loads((tmp_path / "two.json").read_text())
    assert manifest["model_io"]["outputs"] == ["class_logits", "box"]
    assert [t["task"] for t in manifest["model_io"]["tasks"]] == ["classification", "regression"]  # from the compiled losses
    rep = tmp_path / "r.json"
    # without a reference, the tasks recorded at conversion decide; --task overrides one output
    result = runner.invoke(cli, ["validate", str(art), "--data", str(val), "--runs", "2", "--report", str(rep), "--task", "box=none"])
    assert result.exit_code == 0, result.output
    tasks = json.loads(rep.read_text())["tasks"]
    assert tasks[0]["task"] == "classification" and "recorded at conversion" in tasks[0]["reason"]
    assert tasks[1] == {**tasks[1], "task": "none", "reason": "chosen with --task"}


def test_preprocessing_twice_or_missing_is_warned(runner, cli, tmp_path):
    """The bundled model: data already scaled plus the manifest's 1/255, and raw data with --scale 1."""
    ex = Path(__file__).parent.parent / "examples" / "fashion_mnist"
    art = tmp_path / "fm.tflite"
    assert runner.invoke(cli, ["quantize", str(ex / "model.keras"), "--mode", "int8", "--data", str(ex / "calib.npz"), "--scale", "1/255",
                               "-o", str(art)]).exit_code == 0
    d = dict(np.load(ex / "val.npz"))
    np.savez(tmp_path / "scaled.npz", x=d["x"][:200] / 255.0, y=d["y"][:200])
    twice = runner.invoke(cli, ["validate", str(art), "--data", str(tmp_path / "scaled.npz"), "--runs", "2"])
    assert twice.exit_code == 0 and "applied twice" in twice.output
    assert "about chance" in twice.output  # 10% top-1 on 10 classes is not a result
    missing = runner.invoke(cli, ["validate", str(art), "--data", str(ex / "val.npz"), "--samples", "200", "--scale", "1", "--runs", "2"])
    assert missing.exit_code == 0 and "looks missing" in missing.output and "--scale 1/255" in missing.output
    fine = runner.invoke(cli, ["validate", str(art), "--data", str(ex / "val.npz"), "--samples", "200", "--runs", "2"])
    assert fine.exit_code == 0 and "warning" not in fine.output


def test_rescaling_layer_inside_and_scale_given(two_io, runner, cli, tmp_path):
    """A model with its own Rescaling(1/255) validated with --scale 1/255 as well: the reference says applied twice."""
    model, data, val = two_io["classification"]
    art = tmp_path / "c.tflite"
    assert runner.invoke(cli, ["quantize", str(model), "--mode", "int8", "--data", str(data), "-o", str(art)]).exit_code == 0
    result = runner.invoke(cli, ["validate", str(art), "--data", str(val), "--reference", str(model), "--scale", "1/255", "--runs", "2"])
    assert result.exit_code == 0 and "applied twice" in result.output, result.output


def test_misspelled_keys_are_errors_with_a_suggestion(tiny, runner, cli, tmp_path):
    d = dict(np.load(tiny["val"]))
    np.savez(tmp_path / "v.npz", images=d["x"], labels=d["y"])
    art = tmp_path / "m.tflite"
    assert runner.invoke(cli, ["quantize", str(tiny["model"]), "--mode", "float32", "-o", str(art)]).exit_code == 0
    bad_y = runner.invoke(cli, ["validate", str(art), "--data", str(tmp_path / "v.npz"), "--x-key", "images", "--y-key", "lables"])
    assert bad_y.exit_code == 4 and "no target array 'lables'" in bad_y.output and "did you mean 'labels'" in bad_y.output
    bad_x = runner.invoke(cli, ["validate", str(art), "--data", str(tmp_path / "v.npz"), "--x-key", "image"])
    assert bad_x.exit_code == 4 and "did you mean 'images'" in bad_x.output
