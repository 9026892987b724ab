"""The whole Raspberry Pi path in one test: the system OpenSSH client on 127.0.0.1 reaching a "board"
whose Python is the aarch64 sysroot under qemu-user (Cortex-A72, like a Pi 4).

`validate --device` pushes the runner over SSH, probes the CPU from the device's own /proc/cpuinfo,
picks a runtime that works there, runs the aarch64 LiteRT on the device's kernels and brings the
accuracy back; it must equal the x86 run's (same int8 file, same data). Timings under emulation mean
nothing and are not asserted.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from devices_sshd import LoopbackSshd, unavailable_reason
from test_devices_qemu import QEMU, ROOT, SYSROOT, _missing

from edgekit.cli import cli

_why = unavailable_reason() or _missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_why is not None, reason=str(_why))]


@pytest.fixture(scope="module")
def emulated_pi(tmp_path_factory):
    server = LoopbackSshd(tmp_path_factory.mktemp("pi-sshd")).start()
    folder = tmp_path_factory.mktemp("pi-devices")
    python = [QEMU, "-cpu", "cortex-a72", "-L", str(ROOT / "cpu" / "cortex-a72"), str(SYSROOT / "usr" / "bin" / "python3.11"), "-s"]
    env = (f"  env:\n    PYTHONPATH: '{ROOT / 'site-litert-2.3.0'}'\n    PYTHONNOUSERSITE: '1'")
    (folder / "emulated-pi4.yaml").write_text(server.profile_yaml("emulated-pi4", python, extra_runner=env)
                                              + "hardware:\n  arch: aarch64\n")
    yield folder
    server.stop()


@pytest.fixture(scope="module")
def int8(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("pi-art") / "tiny_int8.tflite"
    r = CliRunner().invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tiny["train"]), "--scale", "1/255",
                                 "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_validate_on_an_emulated_pi_over_ssh(emulated_pi, int8, tiny, tmp_path):
    here = CliRunner().invoke(cli, ["validate", str(int8), "--data", str(tiny["val"]), "--runs", "2", "--json",
                                    "--report", str(tmp_path / "here.json")])
    assert here.exit_code == 0, here.output
    r = CliRunner().invoke(cli, ["validate", str(int8), "--data", str(tiny["val"]), "--runs", "2", "--warmup", "0", "--json",
                                 "--device", "emulated-pi4", "--devices-dir", str(emulated_pi), "--report", str(tmp_path / "pi.json")])
    assert r.exit_code == 0, r.output
    pi, x86 = json.loads(r.output), json.loads(here.output)
    device = pi["device"]
    assert device["transport"] == "ssh"
    probe = device["probe"]
    assert probe["arch"] == "aarch64" and probe["cpu"]["model"] == "Cortex-A72"
    assert probe["packages"]["ai-edge-litert"] == "2.3.0"
    assert device["runtime"] == {"name": "ai_edge_litert", "version": "2.3.0"}  # the aarch64 build, chosen on the device
    assert "on aarch64" in device["latency_measured_by"] and device["accuracy_measured_on"] == "device"
    assert device["work_dir_removed"] is True
    # the aarch64 kernels' int8 results agree with x86's on every sample: same accuracy
    assert pi["accuracy"]["top1"] == pytest.approx(x86["accuracy"]["top1"], abs=1e-9)
    assert pi["samples"] == x86["samples"] == len(np.load(tiny["val"])["y"])
