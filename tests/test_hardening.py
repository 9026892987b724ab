"""Interrupted and killed runs, a full disk, data larger than memory, reproducible output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from conftest import default_sigint, files_in
from edgekit.core.fsutil import sha256_file

QUANTIZE = [sys.executable, "-m", "edgekit", "quantize"]


def _env():
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def _wait_for_conversion(proc, marker_dir, timeout=60):
    """Polls until the child has imported TensorFlow (it opened the model), or gives up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            maps = open(f"/proc/{proc.pid}/maps").read()
        except OSError:
            break
        if "_pywrap_tensorflow_internal" in maps:
            return
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_run_leaves_no_artifact(tiny, tmp_path, sig):
    out = tmp_path / "m.tflite"
    proc = subprocess.Popen([*QUANTIZE, str(tiny["model"]), "-o", str(out), "--data", str(tiny["train"]), "--scale", "1/255"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
                            preexec_fn=default_sigint)
    _wait_for_conversion(proc, tmp_path)
    time.sleep(1.0)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    names = files_in(tmp_path)
    if proc.returncode == 0:  # finished before the signal landed: then the pair must be complete
        assert names == {"m.tflite", "m.json"}
        assert json.loads((tmp_path / "m.json").read_text())["artifact"]["sha256"] == sha256_file(out)
        return
    assert "m.tflite" not in names and "m.json" not in names
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert proc.returncode == 130 and "interrupted" in stderr
        assert names == set()  # temporary files were removed on the way out
    # a new run succeeds without --force and sweeps what a killed run left behind
    rerun = subprocess.run([*QUANTIZE, str(tiny["model"]), "-o", str(out), "--mode", "float32"], capture_output=True, text=True, env=_env())
    assert rerun.returncode == 0, rerun.stderr
    assert files_in(tmp_path) == {"m.tflite", "m.json"}


FULL_DISK = r"""
import resource, signal, sys
from edgekit.core.errors import EdgekitError
from edgekit.core.fsutil import write_bytes_atomic
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
try:
    write_bytes_atomic(sys.argv[1], b"x" * 100_000)
except EdgekitError as exc:
    print(exc.one_line()); sys.exit(exc.exit_code)
"""


def test_disk_full_is_one_clear_line_and_nothing_written(tmp_path):
    """The file-size limit stands in for a full disk (ENOSPC and EFBIG take the same path)."""
    out = tmp_path / "m.tflite"
    (tmp_path / "m.tflite").write_bytes(b"previous")
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, str(out)], capture_output=True, text=True, env=_env())
    assert proc.returncode == 2, proc.stderr
    assert "file size limit was reached" in proc.stdout and "nothing was written" in proc.stdout
    assert files_in(tmp_path) == {"m.tflite"} and out.read_bytes() == b"previous"  # the old file is intact


def test_large_uncompressed_npz_is_memory_mapped(tmp_path):
    from edgekit.core.data import load_dataset

    big = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=(30_000, 32, 32, 1))
    big[:] = 1.0
    big.flush()
    np.savez(tmp_path / "big.npz", x=np.load(tmp_path / "x.npy", mmap_mode="r"), y=np.arange(30_000) % 10)
    (tmp_path / "x.npy").unlink()
    size_mb = (tmp_path / "big.npz").stat().st_size / 2**20
    assert size_mb > 100
    tracemalloc.start()
    ds = load_dataset(tmp_path / "big.npz", input_shape=(None, 32, 32, 1), limit=50, seed=1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(ds) == 50 and float(ds.x.mean()) == 1.0
    assert peak < 15 * 2**20, f"peak {peak / 2**20:.1f} MB for a {size_mb:.0f} MB file: not streamed"


def test_quantize_reads_only_the_calibration_sample_of_a_big_npy(tiny, tmp_path):
    """The seeded calibration draw is the same whether the data is sampled while loading or after."""
    from edgekit.core.data import calibration_sample, load_dataset
    from edgekit.core.datatypes import Preprocessing

    pre = Preprocessing(scale=1 / 255)
    full = load_dataset(tiny["train"], input_shape=(None, 8, 8, 1), preprocessing=pre)
    sampled = load_dataset(tiny["train"], input_shape=(None, 8, 8, 1), preprocessing=pre, limit=37, seed=5)
    np.testing.assert_array_equal(calibration_sample(full, 37, 5), sampled.x)


def test_same_seed_same_sha256_through_the_cli(runner, cli, tiny, tmp_path):
    shas = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.tflite"
        result = runner.invoke(cli, ["quantize", str(tiny["model"]), "-o", str(out), "--mode", "int8", "--data", str(tiny["train"]),
                                     "--scale", "1/255", "--seed", "3", "--samples", "64"])
        assert result.exit_code == 0, result.output
        shas.append(sha256_file(out))
        manifest = json.loads(out.with_suffix(".json").read_text())
        assert manifest["options"]["seed"] == 3
        assert manifest["source"]["sha256"] == sha256_file(tiny["model"])
        assert manifest["data"]["sha256"] == sha256_file(tiny["train"])
    assert shas[0] == shas[1]
