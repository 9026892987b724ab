"""The SSH transport for real: a loopback OpenSSH server, the system ssh/scp, edgekit's runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from devices_sshd import LoopbackSshd, free_port, unavailable_reason

from edgekit.core.errors import DeviceError
from edgekit.core.fsutil import sha256_file
from edgekit.devices.profiles import load_profile
from edgekit.devices.ssh import SshTransport
from edgekit.devices.transport import work_dir

pytestmark = pytest.mark.skipif(unavailable_reason() is not None, reason=str(unavailable_reason()))


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = LoopbackSshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def devices_dir(sshd, tmp_path_factory):
    """Profiles reaching the loopback server: one with edgekit's Python, and broken ones."""
    folder = tmp_path_factory.mktemp("devices")
    (folder / "loop.yaml").write_text(sshd.profile_yaml("loop", sys.executable))
    (folder / "loop-system-python.yaml").write_text(sshd.profile_yaml("loop-system-python", "/usr/bin/python3"))
    (folder / "loop-no-python.yaml").write_text(sshd.profile_yaml("loop-no-python", "/nonexistent/bin/python3"))
    (folder / "loop-closed-port.yaml").write_text(sshd.profile_yaml("loop-closed-port", sys.executable, port=free_port()))
    other = tmp_path_factory.mktemp("otherkey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other / "k")], check=True)
    wrong = other / "known_hosts_wrong"
    wrong.write_text(f"[127.0.0.1]:{sshd.port} {' '.join((other / 'k.pub').read_text().split()[:2])}\n")
    (folder / "loop-wrong-key.yaml").write_text(sshd.profile_yaml("loop-wrong-key", sys.executable, known_hosts=wrong))
    empty = other / "known_hosts_empty"
    empty.write_text("")
    (folder / "loop-unknown-key.yaml").write_text(sshd.profile_yaml("loop-unknown-key", sys.executable, known_hosts=empty))
    # a device Python that has numpy but no TFLite runtime: the system Python plus numpy alone
    site = tmp_path_factory.mktemp("numpy-only-site")
    import numpy

    numpy_dir = Path(numpy.__file__).parent
    for entry in [numpy_dir, *numpy_dir.parent.glob("numpy-*.dist-info"), *numpy_dir.parent.glob("numpy.libs")]:
        os.symlink(entry, site / entry.name)
    (folder / "loop-no-runtime.yaml").write_text(sshd.profile_yaml(
        "loop-no-runtime", "/usr/bin/python3", extra_runner=f"  env:\n    PYTHONPATH: {site}"))
    return folder


@pytest.fixture(scope="module")
def artifact(tiny, tmp_path_factory):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    out = tmp_path_factory.mktemp("ssh-art") / "tiny_int8.tflite"
    quantize(tiny["model"], out, mode="int8", data=tiny["train"], preprocessing=Preprocessing(scale=1 / 255))
    return out


def test_validate_over_ssh_equals_local_and_cleans_up(tiny, artifact, devices_dir, tmp_path):
    from edgekit.workflows.validate import validate

    local = validate(artifact, tiny["val"], runs=5, warmup=1, report=tmp_path / "local.json")
    remote = validate(artifact, tiny["val"], runs=5, warmup=1, device="loop", devices_dir=devices_dir, report=tmp_path / "ssh.json")
    # the same runner on the same kernels: identical accuracy, sample for sample
    assert remote.samples == local.samples == 200
    assert remote.accuracy.top1 == local.accuracy.top1 > 90.0
    dev = json.loads((tmp_path / "ssh.json").read_text())["device"]
    assert dev["name"] == "loop" and dev["transport"] == "ssh" and dev["address"] == f"root@127.0.0.1:{load_profile('loop', devices_dir=devices_dir).ssh.port}"
    assert dev["accuracy_measured_on"] == "device"
    assert dev["runtime"]["name"] == "ai_edge_litert"
    assert dev["probe"]["python"]["executable"] == sys.executable
    assert dev["probe"]["runtime"]["candidates"][0]["status"] == "selected"
    assert dev["command"][0] == sys.executable and "--inputs" in dev["command"]
    assert dev["thermal"]["throttled"] is False
    # the per-run folder on the device is gone
    assert dev["work_dir"].startswith("/tmp/edgekit.") and dev["work_dir_removed"] is True
    assert not os.path.exists(dev["work_dir"])
    assert remote.latency.runs == 5 and remote.latency.warmup == 1 and remote.latency.p50_ms > 0
    assert json.loads((tmp_path / "local.json").read_text())["device"] == {"name": "local", "transport": "local"}


def test_outputs_over_ssh_are_bit_identical(tiny, artifact, devices_dir):
    from edgekit.devices.run import run_on_device
    from edgekit.runtime.local import run_local

    x = np.load(tiny["val"])["x"][:40].astype(np.float32) / 255.0
    remote = run_on_device("loop", artifact, x, runs=2, warmup=0, devices_dir=devices_dir)
    local = run_local(artifact, x, runs=2, warmup=0)
    assert remote.run.outputs[0].shape == (40, 6)
    assert np.array_equal(remote.run.outputs[0], local.outputs[0])


def test_connection_is_shared_and_commands_are_quoted_once(devices_dir):
    profile = load_profile("loop", devices_dir=devices_dir)
    transport = SshTransport(profile)
    try:
        done = transport.run(["printf", "%s|", "a b", "$HOME", "'q'", "x;y", "*"], timeout_s=30)
        assert done.ok and done.stdout == "a b|$HOME|'q'|x;y|*|"  # nothing expanded or split by the remote shell
        control = Path(transport._control_dir)
        sockets = list(control.iterdir())
        assert len(sockets) == 1 and sockets[0].is_socket()  # the ControlMaster every later command reuses
        check = subprocess.run(["ssh", "-o", f"ControlPath={control}/%C", "-o", "User=root", "-p", str(profile.ssh.port),
                                "-O", "check", "127.0.0.1"], capture_output=True, text=True, timeout=15)
        assert check.returncode == 0 and "Master running" in check.stderr
        crashed = transport.run(["sh", "-c", "kill -ILL $$"], timeout_s=30)
        assert crashed.signal_name == "SIGILL"  # not ssh's ambiguous 255
        assert transport.run(["sh", "-c", "exit 3"], timeout_s=30).returncode == 3
        with work_dir(transport) as work:
            assert transport.run(["test", "-d", work], timeout_s=30).ok
            kept = work
        assert not os.path.exists(kept)
    finally:
        transport.close()
    assert not control.exists()


def test_work_dir_is_removed_when_the_run_fails(devices_dir):
    transport = SshTransport(load_profile("loop", devices_dir=devices_dir))
    try:
        with pytest.raises(RuntimeError), work_dir(transport) as work:
            raise RuntimeError("boom")
        assert not os.path.exists(work)
    finally:
        transport.close()


@pytest.mark.parametrize(("name", "message"), [
    ("loop-wrong-key", "differs from the one recorded in"),
    ("loop-unknown-key", "is not in"),
    ("loop-closed-port", "connection refused, no SSH server listens on port"),
    ("loop-system-python", "numpy is not installed for the device's Python"),
    ("loop-no-runtime", "no TFLite runtime on the device (ai-edge-litert or tflite-runtime is not installed"),
    ("loop-no-python", "cannot start Python '/nonexistent/bin/python3' on the device"),
])
def test_device_failures_are_one_clear_line(runner, cli, devices_dir, tmp_path, name, message):
    model = Path(__file__).resolve().parents[1] / "edgekit" / "devices" / "probe_model.tflite"
    result = runner.invoke(cli, ["benchmark", str(model), "--device", name, "--devices-dir", str(devices_dir), "--runs", "2"])
    assert result.exit_code == 7, result.output
    line = result.stderr.strip()
    assert line.startswith("error: ") and "\n" not in line and "Traceback" not in result.output
    assert message in line
    assert "hint" not in line and ";" in line  # the message carries a fix after the semicolon


def test_wrong_host_key_never_reaches_the_device(devices_dir, tmp_path):
    profile = load_profile("loop-wrong-key", devices_dir=devices_dir)
    transport = SshTransport(profile)
    try:
        with pytest.raises(DeviceError, match="ssh-keygen -R"):
            transport.run(["touch", str(tmp_path / "reached")], timeout_s=30)
    finally:
        transport.close()
    assert not (tmp_path / "reached").exists()


def test_accept_new_trusts_a_new_host_once(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    (tmp_path / "tofu.yaml").write_text(sshd.profile_yaml("tofu", sys.executable, known_hosts=known, strict="accept-new"))
    transport = SshTransport(load_profile("tofu", devices_dir=tmp_path))
    try:
        assert transport.run(["true"], timeout_s=30).ok
    finally:
        transport.close()
    assert "127.0.0.1" in known.read_text()


def test_benchmark_cli_over_ssh_json(runner, cli, artifact, devices_dir):
    result = runner.invoke(cli, ["benchmark", str(artifact), "--device", "loop", "--devices-dir", str(devices_dir),
                                 "--runs", "7", "--warmup", "1", "--threads", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["latency"]["runs"] == 7 and payload["latency"]["threads"] == 2
    assert payload["device"]["transport"] == "ssh" and payload["device"]["accuracy_measured_on"] is None
    assert payload["device"]["probe"]["arch"] == "x86_64"
    assert payload["sha256"] == sha256_file(artifact)



def test_fleet_benchmark_runs_local_and_ssh_in_parallel_one_row_each(artifact, devices_dir, runner, cli):
    """Issue 19: a fleet run over this machine and the loopback SSH device returns both rows."""
    result = runner.invoke(cli, ["benchmark", str(artifact), "--device", "local", "--device", "loop", "--devices-dir", str(devices_dir),
                                 "--runs", "5", "--warmup", "1", "--json"])
    assert result.exit_code == 0, result.output
    fleet = json.loads(result.output)
    assert fleet["command"] == "benchmark" and fleet["devices"] == 2 and fleet["failed"] == 0 and fleet["max_parallel"] == 2
    rows = {r["device"]: r for r in fleet["rows"]}
    assert rows["local"]["transport"] == "local" and rows["loop"]["transport"] == "ssh"
    for row in rows.values():
        assert row["ok"] and row["result"]["latency"]["runs"] == 5 and row["result"]["latency"]["p50_ms"] > 0
    assert rows["loop"]["result"]["device"]["work_dir_removed"] is True


def test_fleet_validate_with_an_unreachable_device_keeps_the_other_row(tiny, artifact, devices_dir, runner, cli, tmp_path):
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text("devices: [loop, loop-closed-port]\nmax_parallel: 2\n")
    report = tmp_path / "fleet.report.json"
    result = runner.invoke(cli, ["validate", str(artifact), "--data", str(tiny["val"]), "--reference", str(tiny["model"]),
                                 "--fleet", str(fleet_file), "--devices-dir", str(devices_dir), "--runs", "3", "--warmup", "0",
                                 "--report", str(report)])
    assert result.exit_code == 7, result.output  # a device was unreachable: its code, after the table
    assert "FAILED (7)" in result.output and "loop-closed-port failed (exit 7):" in " ".join(result.output.split())
    saved = json.loads(report.read_text())
    rows = {r["device"]: r for r in saved["rows"]}
    assert rows["loop"]["ok"] and rows["loop"]["result"]["accuracy"]["value"] > 90.0
    assert rows["loop"]["result"]["reference_accuracy"]["value"] > 90.0
    assert not rows["loop-closed-port"]["ok"] and rows["loop-closed-port"]["error"]["code"] == 7
    assert saved["failed"] == 1


def test_fleet_input_errors_fail_before_any_device_runs(artifact, devices_dir, runner, cli, tmp_path):
    twice = runner.invoke(cli, ["benchmark", str(artifact), "--device", "loop", "--device", "loop", "--devices-dir", str(devices_dir)])
    assert twice.exit_code == 2 and "named twice" in twice.output
    typo = runner.invoke(cli, ["benchmark", str(artifact), "--device", "local", "--device", "lop", "--devices-dir", str(devices_dir)])
    assert typo.exit_code == 2 and "lop" in typo.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices: local\n")
    wrong = runner.invoke(cli, ["benchmark", str(artifact), "--fleet", str(bad)])
    assert wrong.exit_code == 2 and "non-empty 'devices' list" in wrong.output
    ops = runner.invoke(cli, ["benchmark", str(artifact), "--device", "local", "--device", "loop", "--devices-dir", str(devices_dir),
                              "--profile-ops"])
    assert ops.exit_code == 2 and "--profile-ops runs on one device" in ops.output
