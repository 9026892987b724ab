"""Regressions found in review: custom functions, corrupt archives, per-channel preprocessing,
report paths, stale manifests, output permissions, peak memory independent of the data."""

from __future__ import annotations

import json
import os
import stat
import zipfile

import numpy as np
import pytest

from edgekit.core.errors import ModelError
from edgekit.core.models import load_model

FN_SRC = '''
import keras

def shifted_relu(x):
    return keras.activations.relu(x - 0.5)
'''


def test_custom_function_loads_with_custom_objects(tmp_path):
    import keras

    ns: dict = {}
    exec(FN_SRC, ns)  # noqa: S102 - the test defines the function the model uses
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation=ns["shifted_relu"], name="act_dense")(inputs))
    model.save(tmp_path / "fn.keras")
    (tmp_path / "fns.py").write_text(FN_SRC)
    with pytest.raises(ModelError, match="shifted_relu.*--custom-objects"):
        load_model(tmp_path / "fn.keras")
    loaded = load_model(tmp_path / "fn.keras", custom_objects=tmp_path / "fns.py")
    assert loaded.parameter_count == 15


def test_encrypted_flag_in_archive_is_a_clean_error(tiny, tmp_path, runner, cli):
    data = bytearray(tiny["model"].read_bytes())
    with zipfile.ZipFile(tiny["model"]) as zf:
        names = zf.namelist()
    # set the "encrypted" bit of every central-directory entry
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        data[pos + 8] |= 0x01
        pos = data.find(b"PK\x01\x02", pos + 4)
    (tmp_path / "enc.keras").write_bytes(bytes(data))
    assert names
    result = runner.invoke(cli, ["inspect", str(tmp_path / "enc.keras")])
    assert result.exit_code == 3 and result.output.startswith("error: ") and "unexpected" not in result.output


def test_mean_with_wrong_channel_count(runner, cli, tiny, tmp_path):
    out = tmp_path / "m.tflite"
    result = runner.invoke(cli, ["quantize", str(tiny["model"]), "-o", str(out), "--data", str(tiny["train"]),
                                 "--scale", "1/255", "--mean", "0.5,0.5"])
    assert result.exit_code == 2 and "--mean has 2 values, but the data" in result.output
    assert not out.exists()


@pytest.fixture(scope="module")
def built(tiny, tmp_path_factory):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    out = tmp_path_factory.mktemp("built") / "m.tflite"
    quantize(tiny["model"], out, mode="float32", preprocessing=Preprocessing(scale=1 / 255))
    return out


def test_report_never_overwrites_manifest_or_foreign_files(runner, cli, tiny, built, tmp_path):
    manifest = built.with_suffix(".json").read_text()
    result = runner.invoke(cli, ["validate", str(built), "--data", str(tiny["val"]), "--report", str(built.with_suffix(".json"))])
    assert result.exit_code == 2 and "manifest" in result.output
    assert built.with_suffix(".json").read_text() == manifest
    other = tmp_path / "notes.json"
    other.write_text('{"mine": true}')
    result = runner.invoke(cli, ["validate", str(built), "--data", str(tiny["val"]), "--report", str(other)])
    assert result.exit_code == 2 and "not an edgekit report" in result.output
    assert json.loads(other.read_text()) == {"mine": True}


def test_stale_manifest_is_refused_whatever_the_options(tiny, built, tmp_path):
    """Issue 18: a modified artifact is refused even with the preprocessing given; --ignore-manifest runs it."""
    from edgekit.core.datatypes import Preprocessing
    from edgekit.core.errors import ModelError
    from edgekit.workflows.validate import validate

    copy = tmp_path / "m.tflite"
    copy.write_bytes(built.read_bytes() + b"\0")  # another build: different sha256
    (tmp_path / "m.json").write_text(built.with_suffix(".json").read_text())
    for pre in (None, Preprocessing(scale=1 / 255)):
        with pytest.raises(ModelError, match="was modified after edgekit wrote it"):
            validate(copy, tiny["val"], runs=1, warmup=0, write_report=False, preprocessing=pre)
    report = validate(copy, tiny["val"], runs=1, warmup=0, write_report=False, preprocessing=Preprocessing(scale=1 / 255),
                      ignore_manifest=True)
    assert report.accuracy.top1 > 90


def test_outputs_get_normal_permissions(built):
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(built.stat().st_mode) == 0o666 & ~umask


def test_peak_memory_does_not_grow_with_the_dataset(built, tmp_path):
    from edgekit.runtime.local import run_local

    x = np.random.default_rng(0).uniform(0, 1, (40_000, 8, 8, 1)).astype(np.float32)  # 10 MB
    small = run_local(built, x[:10], runs=2, warmup=0)
    big = run_local(built, x, runs=2, warmup=0)
    assert big.outputs[0].shape == (40_000, 6)
    assert big.peak_rss_mb - small.peak_rss_mb < 5, (small.peak_rss_mb, big.peak_rss_mb)
