"""Bad input gets one clear line, a non-zero exit code, no traceback and no file written."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from conftest import files_in


@pytest.fixture(scope="module")
def bad(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "notes.txt").write_text("not a model")
    (root / "empty.keras").write_bytes(b"")
    data = tiny["model"].read_bytes()
    (root / "truncated.keras").write_bytes(data[: len(data) // 2])
    (root / "random.tflite").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "a_dir").mkdir()
    np.savez(root / "wrong_shape.npz", x=np.zeros((10, 5, 5, 1), np.uint8), y=np.zeros(10, np.int64))
    np.savez(root / "strings.npz", x=np.array([["a"] * 64] * 3).reshape(3, 8, 8, 1), y=np.zeros(3, np.int64))
    np.savez(root / "empty.npz", x=np.zeros((0, 8, 8, 1), np.uint8), y=np.zeros(0, np.int64))
    nan = np.random.default_rng(0).uniform(0, 1, (20, 8, 8, 1)).astype(np.float32)
    nan[3, 2, 2, 0] = np.nan
    np.savez(root / "nan.npz", x=nan, y=np.zeros(20, np.int64))
    np.savez(root / "labels_out_of_range.npz", x=np.zeros((4, 8, 8, 1), np.uint8), y=np.array([0, 1, 2, 9]))
    with zipfile.ZipFile(root / "no_config.keras", "w") as zf:
        zf.writestr("metadata.json", "{}")
    return root


def _run(runner, cli, args):
    result = runner.invoke(cli, args)
    return result, result.output


CASES = [
    # id, args (templated), exit code, expected text
    ("missing model", ["quantize", "{bad}/nope.keras", "-o", "{out}/m.tflite", "--mode", "float32"], 2, "does not exist"),
    ("dir as model", ["quantize", "{bad}/a_dir", "-o", "{out}/m.tflite", "--mode", "float32"], 2, "without saved_model.pb"),
    ("text file as model", ["quantize", "{bad}/notes.txt", "-o", "{out}/m.tflite", "--mode", "float32"], 3, "not a model edgekit can read"),
    ("empty model", ["quantize", "{bad}/empty.keras", "-o", "{out}/m.tflite", "--mode", "float32"], 2, "is empty"),
    ("truncated keras", ["quantize", "{bad}/truncated.keras", "-o", "{out}/m.tflite", "--mode", "float32"], 3, "truncated or corrupt"),
    ("keras zip without config", ["quantize", "{bad}/no_config.keras", "-o", "{out}/m.tflite", "--mode", "float32"], 3, "no config.json"),
    ("tflite given to quantize", ["quantize", "{art}", "-o", "{out}/m.tflite", "--mode", "float32"], 3, "already a TFLite model"),
    ("int8 without data", ["quantize", "{model}", "-o", "{out}/m.tflite", "--mode", "int8"], 2, "needs calibration data"),
    ("int8 io with float16", ["quantize", "{model}", "-o", "{out}/m.tflite", "--mode", "float16", "--io-type", "int8"], 2, "does not go with"),
    ("wrong data shape", ["quantize", "{model}", "-o", "{out}/m.tflite", "--data", "{bad}/wrong_shape.npz"], 4, "model expects 8x8x1"),
    ("string data", ["quantize", "{model}", "-o", "{out}/m.tflite", "--data", "{bad}/strings.npz"], 4, "expected numbers"),
    ("empty dataset", ["quantize", "{model}", "-o", "{out}/m.tflite", "--data", "{bad}/empty.npz"], 4, "empty (0 samples)"),
    ("NaN calibration", ["quantize", "{model}", "-o", "{out}/m.tflite", "--data", "{bad}/nan.npz"], 4, "NaN or Inf in 1 sample(s), first at index 3"),
    ("unknown data type", ["quantize", "{model}", "-o", "{out}/m.tflite", "--data", "{bad}/notes.txt"], 4, "unsupported type '.txt'"),
    ("output equals input", ["quantize", "{model}", "-o", "{model}", "--mode", "float32"], 2, "same as the input"),
    ("output wrong suffix", ["quantize", "{model}", "-o", "{out}/m.bin", "--mode", "float32"], 2, "should end with .tflite"),
    ("output folder missing", ["quantize", "{model}", "-o", "{out}/missing/m.tflite", "--mode", "float32"], 2, "does not exist"),
    ("zero samples", ["quantize", "{model}", "-o", "{out}/m.tflite", "--data", "{train}", "--samples", "0"], 2, "--samples must be at least 1"),
    ("bad scale", ["quantize", "{model}", "-o", "{out}/m.tflite", "--scale", "one/255", "--mode", "float32"], 2, "is not a number"),
    ("random bytes tflite", ["validate", "{bad}/random.tflite", "--data", "{val}"], 3, "not a valid TFLite model"),
    ("inspect random bytes", ["inspect", "{bad}/random.tflite"], 3, "not a TFLite model"),
    ("inspect missing", ["inspect", "{bad}/nope.tflite"], 2, "does not exist"),
    ("validate dir", ["validate", "{bad}/a_dir", "--data", "{val}"], 2, "is a directory"),
    ("validate wrong shape", ["validate", "{art}", "--data", "{bad}/wrong_shape.npz"], 4, "model expects 8x8x1"),
    ("validate labels out of range", ["validate", "{art}", "--data", "{bad}/labels_out_of_range.npz"], 4, "go up to 9, but the model has 6 classes"),
    ("validate zero runs", ["validate", "{art}", "--data", "{val}", "--runs", "0"], 2, "--runs must be at least 1"),
    ("validate missing data", ["validate", "{art}", "--data", "{bad}/nope.npz"], 2, "does not exist"),
]


@pytest.fixture(scope="module")
def art(tiny, tmp_path_factory):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    out = tmp_path_factory.mktemp("artifact") / "a.tflite"
    quantize(tiny["model"], out, mode="float32", preprocessing=Preprocessing(scale=1 / 255))
    return out


@pytest.mark.parametrize(("case", "args", "code", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(runner, cli, tiny, bad, art, tmp_path, case, args, code, text):
    subs = {"bad": bad, "out": tmp_path, "model": tiny["model"], "val": tiny["val"], "train": tiny["train"], "art": art}
    argv = [a.format(**subs) for a in args]
    before_bad, before_art = files_in(bad), files_in(art.parent)
    result, output = _run(runner, cli, argv)
    assert result.exit_code == code, output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and text in lines[0], lines[0]
    assert "Traceback" not in output
    assert files_in(tmp_path) == set(), "nothing may be written on bad input"
    assert files_in(bad) == before_bad and files_in(art.parent) == before_art


def test_verbose_shows_traceback(runner, cli, bad, tmp_path):
    result = runner.invoke(cli, ["-v", "inspect", str(bad / "random.tflite")])
    assert result.exit_code == 3
    assert "Traceback" in result.output


def test_validate_never_overwrites_inputs_with_report(runner, cli, art, tiny):
    result = runner.invoke(cli, ["validate", str(art), "--data", str(tiny["val"]), "--report", str(tiny["val"])])
    assert result.exit_code == 2 and "would overwrite an input" in result.output
    assert np.load(tiny["val"])["x"].shape == (200, 8, 8, 1)
