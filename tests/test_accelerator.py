"""Issue 15, the GPU path: LiteRT's CompiledModel on a hardware accelerator (`benchmark --accelerator`).

Where a GPU and its drivers exist, the run says whether the model was fully accelerated, holds
`check --target gpu` against it and compares outputs and latency with the CPU. Elsewhere (this CI
machine: no GPU adapter for WebGPU/OpenCL), asking for the GPU is a clear error, never a silent
CPU run; the CompiledModel CPU path runs everywhere and must match the Interpreter exactly.
"""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.core.errors import RuntimeFailure
from edgekit.runtime.local import run_local


@pytest.fixture(scope="module")
def artifacts(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("acc")
    for mode in ("float32", "int8"):
        r = CliRunner().invoke(cli, ["quantize", str(tiny["model"]), "--mode", mode, "--data", str(tiny["train"]), "--scale", "1/255",
                                     "-o", str(out / f"{mode}.tflite")])
        assert r.exit_code == 0, r.output
    x = np.load(tiny["val"])["x"][:40].astype(np.float32) / 255.0
    return out, x


@functools.cache
def gpu_unavailable(model: str) -> str | None:
    try:
        run_local(model, None, runs=1, warmup=0, accelerator="gpu")
    except RuntimeFailure as exc:
        return exc.one_line()
    return None


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_compiled_model_on_cpu_matches_the_interpreter(artifacts, mode):
    folder, x = artifacts
    compiled = run_local(folder / f"{mode}.tflite", x, runs=3, warmup=1, accelerator="cpu")
    plain = run_local(folder / f"{mode}.tflite", x, runs=3, warmup=1)
    assert compiled.runtime == "ai_edge_litert CompiledModel (cpu)"
    assert compiled.meta["accelerator"] == "cpu" and isinstance(compiled.meta["fully_accelerated"], bool)
    assert compiled.outputs[0].shape == plain.outputs[0].shape == (40, 6)
    assert np.array_equal(compiled.outputs[0], plain.outputs[0])


def test_benchmark_accelerator_cpu_reports_the_comparison(artifacts):
    folder, _ = artifacts
    r = CliRunner().invoke(cli, ["benchmark", str(folder / "int8.tflite"), "--accelerator", "cpu", "--runs", "10", "--json"])
    assert r.exit_code == 0, r.output
    acc = json.loads(r.output)["accelerator"]
    assert acc["name"] == "cpu" and acc["vs_cpu_interpreter"]["verdict"] in ("faster", "slower", "same speed")
    assert "check_target_gpu_predicted_full" not in acc


def test_gpu_request_without_a_gpu_is_a_clear_error(artifacts):
    folder, _ = artifacts
    if gpu_unavailable(str(folder / "float32.tflite")) is None:
        pytest.skip("this machine has a usable GPU: the refusal cannot be observed")
    r = CliRunner().invoke(cli, ["benchmark", str(folder / "float32.tflite"), "--accelerator", "gpu", "--runs", "3"])
    assert r.exit_code == 6, r.output
    assert "GPU accelerator could not start here" in r.output and "does not fall back to the CPU silently" in r.output
    assert "Traceback" not in r.output


def test_gpu_run_where_a_gpu_exists(artifacts):
    folder, x = artifacts
    path = folder / "float32.tflite"
    why = gpu_unavailable(str(path))
    if why is not None:
        pytest.skip(f"no GPU with drivers for LiteRT's GPU accelerator here: {why}")
    gpu = run_local(path, x, runs=5, warmup=1, accelerator="gpu")
    cpu = run_local(path, x, runs=5, warmup=1)
    assert np.abs(gpu.outputs[0] - cpu.outputs[0]).max() < 1e-2  # float16 arithmetic on the GPU
    assert np.array_equal(gpu.outputs[0].argmax(1), cpu.outputs[0].argmax(1))
    r = CliRunner().invoke(cli, ["benchmark", str(path), "--accelerator", "gpu", "--runs", "10", "--json"])
    assert r.exit_code == 0, r.output
    acc = json.loads(r.output)["accelerator"]
    assert isinstance(acc["fully_accelerated"], bool) and isinstance(acc["check_target_gpu_predicted_full"], bool)
