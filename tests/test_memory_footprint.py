"""Issue 15: the memory a model needs, measured by the runner for itself (VmHWM), not the parent's high-water mark."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.runtime.local import latency_stats, run_local


@pytest.fixture(scope="module")
def int8(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("mem") / "m.tflite"
    r = CliRunner().invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tiny["train"]), "--scale", "1/255",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_a_big_parent_does_not_inflate_the_childs_peak(int8):
    """ru_maxrss carries the parent's high-water mark across fork+exec; the runner's VmHWM does not."""
    ballast = np.ones(400 * 1024 * 1024 // 8)  # 400 MB touched in this (the parent) process
    assert ballast.sum() > 0
    run = run_local(int8, None, runs=5, warmup=1)
    lat = latency_stats(run)
    assert run.meta["memory_source"] == "VmHWM"
    assert lat.peak_memory_mb is not None and lat.peak_memory_mb < 200
    assert lat.model_overall_mb is not None and 0 <= lat.model_overall_mb < 50
    assert lat.model_init_mb is not None and lat.model_init_mb <= lat.model_overall_mb + 1e-9
    del ballast


def test_validate_and_benchmark_agree_on_the_model_footprint(int8, tiny, tmp_path):
    runner = CliRunner()
    figures = []
    for args in (["validate", str(int8), "--data", str(tiny["val"]), "--reference", str(tiny["model"]), "--report", str(tmp_path / "a.json")],
                 ["validate", str(int8), "--data", str(tiny["val"]), "--report", str(tmp_path / "b.json")],
                 ["benchmark", str(int8)]):
        r = runner.invoke(cli, [*args, "--runs", "20", "--json"])
        assert r.exit_code == 0, r.output
        lat = json.loads(r.output)["latency"]
        assert lat["peak_memory_mb"] < 200  # not the parent's TensorFlow (validate --reference loads it in this process)
        figures.append(lat["model_overall_mb"])
    assert all(f is not None and f < 50 for f in figures), figures
    low, high = min(figures), max(figures)
    assert high - low <= max(0.2 * high, 1.0), figures  # within 20% (or 1 MB for a tiny model's noise)
