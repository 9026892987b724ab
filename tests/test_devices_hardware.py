"""Tests on a real Raspberry Pi, ARM board or phone: skipped unless EDGEKIT_TEST_DEVICE names a profile.

Run them (see docs/devices.md):

    EDGEKIT_DEVICES=~/edgekit-devices EDGEKIT_TEST_DEVICE=mypi .venv/bin/python -m pytest -m hardware tests/test_devices_hardware.py
"""

from __future__ import annotations

import os

import numpy as np
import pytest

DEVICE = os.environ.get("EDGEKIT_TEST_DEVICE")
pytestmark = [
    pytest.mark.hardware,
    pytest.mark.skipif(not DEVICE, reason="needs a real device: set EDGEKIT_TEST_DEVICE to a device profile (e.g. raspberry-pi-4) and run pytest -m hardware"),
]


@pytest.fixture(scope="module")
def profile():
    from edgekit.devices.profiles import load_profile

    return load_profile(DEVICE)


@pytest.fixture(scope="module")
def artifact(tiny, tmp_path_factory):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    out = tmp_path_factory.mktemp("hw-art") / "tiny_int8.tflite"
    quantize(tiny["model"], out, mode="int8", data=tiny["train"], preprocessing=Preprocessing(scale=1 / 255))
    return out


def test_probe_records_the_device(profile):
    from edgekit.devices.probe import probe_device

    probe = probe_device(profile, require_runtime=profile.transport != "adb")
    assert probe.arch in ("aarch64", "armv7l", "armv8l", "x86_64")
    assert probe.cpu.cores >= 1 and probe.cpu.model
    if profile.transport == "adb":
        assert probe.android and probe.android["api_level"] >= 21
    else:
        assert probe.runtime is not None and probe.python["version"].startswith("3.")
    assert probe.thermal is not None, "the thermal state could not be read"


def test_benchmark_on_the_device(profile, artifact):
    from edgekit.workflows.benchmark import benchmark

    report = benchmark(artifact, device=profile, runs=20, warmup=3)
    assert report.latency.runs >= 20 and report.latency.mean_ms > 0
    assert report.device["work_dir_removed"] is True
    assert report.device["thermal"]["readable"]


def test_validate_on_the_device_agrees_with_this_host(profile, artifact, tiny, tmp_path):
    from edgekit.devices.run import run_on_device
    from edgekit.runtime.local import run_local

    x = np.load(tiny["val"])["x"].astype(np.float32) / 255.0
    device = run_on_device(profile, artifact, x, runs=5, warmup=1)
    host = run_local(artifact, x, runs=1, warmup=0)
    if profile.transport == "adb":
        assert device.report["accuracy_measured_on"] == "host"
        return
    assert device.report["accuracy_measured_on"] == "device"
    # same LiteRT release: at most a step of the int8 softmax output (1/256); tflite-runtime 2.14 vs
    # ai-edge-litert 2.3.0 differed by up to 16 steps under emulation (docs/devices.md)
    assert np.abs(device.run.outputs[0] - host.outputs[0]).max() <= 0.1
    assert (device.run.outputs[0].argmax(1) == host.outputs[0].argmax(1)).mean() >= 0.99
