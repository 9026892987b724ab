"""An ARM64 target under qemu-user: edgekit's runner on aarch64 LiteRT / tflite-runtime builds.

The "device" is a local profile whose runner.python is the qemu command line running the arm64
Python of the sysroot built by tests/qemu/setup_arm64.sh, with the runtimes' site folders on
PYTHONPATH. ``-L ROOT/cpu/<cpu>`` gives the guest a Raspberry-Pi-style /proc/cpuinfo for the
emulated CPU (qemu-user would show the host's x86 one), so the probe reads the CPU description
from the "device" itself. Timings under emulation mean nothing; outputs and the runtime choice do.

Tolerances (stated, and asserted below):
- float32 artifact, aarch64 tflite-runtime 2.14 vs x86 ai-edge-litert 2.3.0: max |diff| <= 1e-5;
- int8 artifact, aarch64 ai-edge-litert 2.3.0 vs x86 ai-edge-litert 2.3.0: max |diff| <= 1/256,
  one step of the int8 softmax output (bundled example: 7 of 10,000 values differed by one step);
- top-1 agreement 100% in both.
"""

from __future__ import annotations

import os
import resource
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgekit.devices.probe import probe_device
from edgekit.devices.run import run_on_device
from edgekit.runtime.local import run_local

ROOT = Path(os.environ.get("EDGEKIT_ARM64_ROOT", Path.home() / ".cache" / "edgekit" / "arm64"))
SYSROOT = ROOT / "sysroot"
SETUP = "tests/qemu/setup_arm64.sh"
QEMU = shutil.which("qemu-aarch64-static")


def _missing() -> str | None:
    if QEMU is None:
        return f"qemu-aarch64-static is not installed; set up the ARM64 sysroot with: {SETUP}"
    needed = [SYSROOT / "usr" / "bin" / "python3.11", ROOT / "cpu" / "cortex-a72" / "proc" / "cpuinfo",
              ROOT / "cpu" / "cortex-a76" / "proc" / "cpuinfo", ROOT / "site-litert-2.3.0", ROOT / "site-tflite-2.14"]
    absent = [str(p) for p in needed if not p.exists()]
    if absent:
        return f"ARM64 sysroot not set up ({absent[0]} missing); run: {SETUP}"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing() is not None, reason=str(_missing()))]


def write_profile(folder: Path, name: str, cpu: str, sites: list[Path]) -> None:
    python = [QEMU, "-cpu", cpu, "-L", str(ROOT / "cpu" / cpu), str(SYSROOT / "usr" / "bin" / "python3.11"), "-s"]
    (folder / f"{name}.yaml").write_text("\n".join([
        "schema_version: 1",
        f"name: {name}",
        f"description: arm64 Python under qemu-user, -cpu {cpu}",
        "transport: local",
        "runner:",
        "  python: [" + ", ".join(python) + "]",
        "  env:",
        f"    PYTHONPATH: '{os.pathsep.join(str(s) for s in sites)}'",
        "    PYTHONNOUSERSITE: '1'",
        "hardware:",
        "  arch: aarch64",
        "",
    ]))


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qemu-devices")
    # a Raspberry Pi 4 with both runtimes installed (tflite-runtime's numpy 1.26 first on the path)
    write_profile(folder, "qemu-pi4", "cortex-a72", [ROOT / "site-tflite-2.14", ROOT / "site-litert-2.3.0"])
    # a Raspberry Pi 5 with ai-edge-litert 2.3.0 only
    write_profile(folder, "qemu-pi5", "cortex-a76", [ROOT / "site-litert-2.3.0"])
    # a Pi 5 whose ai-edge-litert dies with SIGILL as soon as it is imported (a broken build)
    fake = tmp_path_factory.mktemp("sigill-site")
    (fake / "ai_edge_litert").mkdir()
    (fake / "ai_edge_litert" / "__init__.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGILL)\n")
    (fake / "ai_edge_litert-2.3.0.dist-info").mkdir()
    (fake / "ai_edge_litert-2.3.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ai-edge-litert\nVersion: 2.3.0\n")
    write_profile(folder, "qemu-broken-litert", "cortex-a76", [fake, ROOT / "site-tflite-2.14"])
    # these profiles run qemu-aarch64 here (runner.python, runner.env): trusted, as the user's own profiles are
    os.environ["EDGEKIT_TRUST_PROFILE"] = "1"
    yield folder
    os.environ.pop("EDGEKIT_TRUST_PROFILE", None)


@pytest.fixture(autouse=True)
def _no_core_files():
    """qemu writes a core file for a crashed guest when core dumps are allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
    yield
    resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


@pytest.fixture(scope="module")
def artifacts(tiny, tmp_path_factory):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    folder = tmp_path_factory.mktemp("qemu-art")
    quantize(tiny["model"], folder / "f32.tflite", mode="float32")
    quantize(tiny["model"], folder / "int8.tflite", mode="int8", data=tiny["train"], preprocessing=Preprocessing(scale=1 / 255))
    x = np.load(tiny["val"])["x"][:60].astype(np.float32) / 255.0
    return folder / "f32.tflite", folder / "int8.tflite", x


def test_pi4_picks_tflite_runtime_and_matches_x86(devices, artifacts):
    f32, _, x = artifacts
    arm = run_on_device("qemu-pi4", f32, x, runs=2, warmup=0, devices_dir=devices)
    x86 = run_local(f32, x, runs=2, warmup=0)
    probe = arm.report["probe"]
    assert probe["arch"] == "aarch64" and probe["cpu"]["model"] == "Cortex-A72" and probe["cpu"]["lse_atomics"] is False
    assert probe["warnings"] == []  # the CPU description came from the device's own /proc/cpuinfo
    assert probe["packages"]["ai-edge-litert"] == "2.3.0" and probe["packages"]["tflite-runtime"] == "2.14.0"
    statuses = {c["runtime"]: c["status"] for c in probe["runtime"]["candidates"]}
    assert statuses == {"tflite_runtime": "selected", "ai_edge_litert": "skipped"}  # the at-risk build is never started
    assert arm.run.runtime == "tflite_runtime" and arm.run.meta["machine"] == "aarch64"
    assert arm.run.outputs[0].shape == x86.outputs[0].shape == (60, 6)
    assert np.abs(arm.run.outputs[0] - x86.outputs[0]).max() <= 1e-5
    assert np.array_equal(arm.run.outputs[0].argmax(1), x86.outputs[0].argmax(1))


def test_pi5_runs_the_aarch64_litert_build_int8_within_one_step(devices, artifacts):
    _, int8, x = artifacts
    arm = run_on_device("qemu-pi5", int8, x, runs=2, warmup=0, devices_dir=devices)
    x86 = run_local(int8, x, runs=2, warmup=0)
    assert (arm.run.runtime, arm.run.runtime_version, arm.run.meta["machine"]) == ("ai_edge_litert", "2.3.0", "aarch64")
    assert arm.report["probe"]["runtime"]["runtime"] == "ai_edge_litert"
    diff = np.abs(arm.run.outputs[0] - x86.outputs[0]).max()
    assert diff <= 1 / 256 + 1e-7, diff
    assert np.array_equal(arm.run.outputs[0].argmax(1), x86.outputs[0].argmax(1))


def test_a_runtime_that_crashes_in_its_try_run_is_rejected(devices):
    probe = probe_device("qemu-broken-litert", devices_dir=devices, require_runtime=True)
    candidates = {c.runtime: c for c in probe.runtime.candidates}
    assert probe.runtime.runtime == "tflite_runtime"
    assert candidates["ai_edge_litert"].status == "rejected"
    assert candidates["ai_edge_litert"].reason == "crashed with SIGILL in its try-run"
