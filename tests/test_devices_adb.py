"""The ADB transport with the real adb client on its error paths (no phone here), and the Android
benchmark pipeline with a stand-in benchmark binary that prints recorded benchmark_model output."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from devices_sshd import free_port

from edgekit.core.errors import DeviceError, InputError
from edgekit.core.fsutil import sha256_file
from edgekit.devices.adb import AdbTransport, classify_adb_error, parse_adb_connect, parse_adb_devices
from edgekit.devices.benchmark_output import parse_benchmark_output
from edgekit.devices.profiles import parse_profile
from edgekit.devices.run import _run_android, latency_from_native
from edgekit.devices.transport import LocalTransport

FIXTURES = Path(__file__).parent / "fixtures"
PROBE_MODEL = Path(__file__).resolve().parents[1] / "edgekit" / "devices" / "probe_model.tflite"
needs_adb = pytest.mark.skipif(shutil.which("adb") is None, reason="adb is not installed (apt-get install -y adb)")


def adb_profile(port: int | None = None, **adb: str) -> str:
    lines = ["schema_version: 1", "name: phone", "transport: adb", "adb:"]
    if port:
        lines.append(f"  server_port: {port}")
    lines += [f"  {k}: '{v}'" for k, v in adb.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def adb_server():
    """A private adb server (its own port), killed afterwards: the user's server is never touched."""
    port = free_port()
    yield port
    subprocess.run(["adb", "-P", str(port), "kill-server"], capture_output=True, timeout=30)


@needs_adb
def test_no_device_attached(adb_server):
    transport = AdbTransport(parse_profile(adb_profile(adb_server)))
    with pytest.raises(DeviceError) as err:
        transport.run(["true"], timeout_s=30)
    assert f"no Android device is attached to adb (adb server port {adb_server})" in err.value.one_line()
    assert "USB debugging" in err.value.one_line()
    assert transport.attached() == {}


@needs_adb
def test_bad_serial(adb_server):
    transport = AdbTransport(parse_profile(adb_profile(adb_server, serial="R58M00NOPE")))
    with pytest.raises(DeviceError, match=r"adb has no device with serial 'R58M00NOPE' \(adb server port \d+\); attached: none"):
        transport.connect()


@needs_adb
def test_connect_refused_is_an_error_although_adb_exits_0(adb_server):
    closed = free_port()
    raw = subprocess.run(["adb", "-P", str(adb_server), "connect", f"127.0.0.1:{closed}"], capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0  # the quirk: adb says it failed but exits 0
    assert parse_adb_connect(raw.stdout + raw.stderr)[0] is False
    transport = AdbTransport(parse_profile(adb_profile(adb_server, connect=f"127.0.0.1:{closed}")))
    with pytest.raises(DeviceError, match=rf"adb connect 127.0.0.1:{closed} failed: .*Connection refused"):
        transport.connect()


@needs_adb
def test_cli_probe_and_benchmark_without_a_phone(runner, cli, adb_server, tmp_path):
    (tmp_path / "phone.yaml").write_text(adb_profile(adb_server))
    result = runner.invoke(cli, ["devices", "probe", "phone", "--devices-dir", str(tmp_path)])
    assert result.exit_code == 7, result.output
    assert result.stderr.startswith("error: phone: no Android device is attached to adb")
    # the bundled generic phone names no benchmark binary: a clear error before adb is even asked
    result = runner.invoke(cli, ["benchmark", str(PROBE_MODEL), "--device", "android-arm64"])
    assert result.exit_code == 7
    assert "names no benchmark binary (benchmark.binary)" in result.stderr and "edgekit devices show android-arm64" in result.stderr


def test_adb_output_parsers_on_recorded_outputs():
    # recorded from adb 1.0.41 (Debian 29.0.6) in this environment and from adb's own messages
    assert parse_adb_connect("failed to connect to '127.0.0.1:1': Connection refused\n") == (
        False, "failed to connect to '127.0.0.1:1': Connection refused")
    assert parse_adb_connect("cannot connect to 192.168.1.7:5555: No route to host (113)\n")[0] is False
    assert parse_adb_connect("failed to authenticate to 192.168.1.7:5555\n")[0] is False
    assert parse_adb_connect("connected to 192.168.1.7:5555\n") == (True, "connected to 192.168.1.7:5555")
    assert parse_adb_connect("already connected to 192.168.1.7:5555\n")[0] is True
    assert parse_adb_devices("* daemon started successfully\nList of devices attached\n"
                             "R58M1234ABC\tdevice\n192.168.1.7:5555\tunauthorized\nemulator-5554\toffline\n\n") == {
        "R58M1234ABC": "device", "192.168.1.7:5555": "unauthorized", "emulator-5554": "offline"}
    profile = parse_profile(adb_profile(None, serial="X1"))
    assert "set adb.serial" in classify_adb_error("error: more than one device/emulator", profile, {"A": "device", "B": "device"}).one_line()
    assert "Allow USB debugging" in classify_adb_error("error: device unauthorized.", profile).one_line()
    assert "offline" in classify_adb_error("error: device offline", profile).one_line()


@pytest.mark.parametrize(("fixture", "flavour", "count", "avg_ms"), [
    ("tflite_cpu_xnnpack.txt", "tflite", None, 1.2505),
    ("litert_cpu.txt", "litert", None, None),
])
def test_latency_from_both_benchmark_flavours(fixture, flavour, count, avg_ms):
    native = parse_benchmark_output((FIXTURES / "benchmark_model" / fixture).read_text())
    latency = latency_from_native(native, threads=4, warmup=1, runtime="benchmark_model")
    assert native.flavour == flavour
    assert latency.runs == native.count > 0
    assert latency.mean_ms == native.avg_ms > 0
    if avg_ms is not None:
        assert latency.mean_ms == pytest.approx(avg_ms)
    assert latency.min_ms <= latency.mean_ms <= latency.max_ms
    assert latency.p90_ms != latency.p90_ms  # NaN: the tool prints no per-run timings
    assert json.dumps(latency.to_dict())  # JSON-safe ("nan" strings)


@pytest.fixture()
def fake_phone(tmp_path):
    """An adb profile whose benchmark binary is a script printing a recorded GPU run (partial delegation)."""
    binary = tmp_path / "benchmark_model"
    args_file = tmp_path / "args.txt"
    binary.write_text(f"#!/bin/sh\necho \"$@\" > {args_file}\ncat {FIXTURES / 'benchmark_model' / 'tflite_gpu_partial.txt'}\n")
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    text = "\n".join([
        "schema_version: 1", "name: fake-phone", "transport: adb", "benchmark:", f"  binary: {binary}",
        f"  sha256: {sha256_file(binary)}", f"  work_root: {tmp_path}", "  targets:", "    gpu:", "      args: ['--use_gpu=true']",
        "  default_target: gpu", "threads: 4", "cpu_affinity: null", "",
    ])
    return parse_profile(text), binary, args_file


def test_android_pipeline_with_a_stand_in_binary(fake_phone, tmp_path):
    """The Android path end to end except adb: sha pin, push, flags per target, parsing, report."""
    import numpy as np

    profile, _binary, args_file = fake_phone
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    result = _run_android(LocalTransport(profile), PROBE_MODEL, x, threads=4, runs=30, warmup=2, target=None, runtime=None)
    args = args_file.read_text().split()
    assert "--use_gpu=true" in args and "--num_threads=4" in args and "--num_runs=30" in args and "--min_secs=0" in args
    assert any(a.startswith("--graph=") and a.endswith("/model.tflite") for a in args)
    report = result.report
    assert report["target"] == "gpu" and report["accuracy_measured_on"] == "host"
    assert "accuracy was measured on this host" in report["accuracy_note"]
    assert report["native_benchmark"]["delegate"] == "GPU" and report["native_benchmark"]["delegate_coverage"] == "partial"
    assert any("runs only part of the graph (148 of 151 nodes)" in w for w in report["warnings"])
    assert result.latency.runs == 50 and result.latency.mean_ms == pytest.approx(23.3598)
    assert result.run.outputs[0].shape == (8, 2)  # from this host's runner, as the report says
    assert not Path(report["work_dir"]).exists()


def test_android_binary_must_match_its_pin(fake_phone):
    profile, binary, _ = fake_phone
    binary.write_text(binary.read_text() + "# tampered\n")
    with pytest.raises(DeviceError, match="has sha256 .* the profile pins"):
        _run_android(LocalTransport(profile), PROBE_MODEL, None, threads=1, runs=5, warmup=1, target=None, runtime=None)
    with pytest.raises(InputError, match="has no target 'npu'"):
        _run_android(LocalTransport(profile), PROBE_MODEL, None, threads=1, runs=5, warmup=1, target="npu", runtime=None)
