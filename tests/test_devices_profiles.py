"""Device profiles (schema, lookup, packaging), probe parsers, and the devices/benchmark CLI on this machine."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from edgekit.core.errors import DeviceError, InputError, RecipeError
from edgekit.devices.probe import (
    TryRun,
    android_summary,
    choose_runtime,
    hazards_for,
    parse_cpuinfo,
    parse_getprop,
    parse_thermal,
    thermal_verdict,
)
from edgekit.devices.profiles import bundled_dir, list_profiles, load_profile, parse_profile
from edgekit.devices.transport import Completed, split_exit_marker

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "devices"
PROBE_MODEL = REPO / "edgekit" / "devices" / "probe_model.tflite"
BUNDLED = ["android-arm64", "arduino-nano-33-ble", "linux-arm64-ssh", "local", "pixel-8", "raspberry-pi-4", "raspberry-pi-5"]


@pytest.fixture(autouse=True)
def _no_user_devices(monkeypatch):
    monkeypatch.delenv("EDGEKIT_DEVICES", raising=False)


def test_bundled_profiles_load_and_are_the_repository_devices_folder():
    entries = list_profiles()
    assert [e.profile.name for e in entries] == BUNDLED and {e.origin for e in entries} == {"bundled"}
    assert sorted(p.name for p in bundled_dir().glob("*.yaml")) == sorted(p.name for p in (REPO / "devices").glob("*.yaml"))
    assert bundled_dir().resolve() == (REPO / "devices").resolve()
    pi4 = load_profile("raspberry-pi-4")
    assert (pi4.transport, pi4.ssh.port, pi4.ssh.strict_host_key_checking, pi4.threads) == ("ssh", 22, "yes", 4)
    assert pi4.hardware.cpu == "Cortex-A72" and pi4.thermal.throttle_temp_c == 80
    pixel = load_profile("pixel-8")
    assert set(pixel.benchmark.targets) == {"cpu", "gpu", "nnapi", "npu"}
    assert pixel.benchmark.targets["gpu"].args == ["--use_gpu=true"] and pixel.affinity_mask() == "f0"
    assert load_profile("local").runner_settings.python_argv() is None


def test_profile_round_trips_through_show(runner, cli, tmp_path):
    result = runner.invoke(cli, ["devices", "show", "pixel-8"])
    assert result.exit_code == 0 and result.stdout.startswith("# ")
    (tmp_path / "pixel-8.yaml").write_text(result.stdout)
    mine = load_profile("pixel-8", devices_dir=tmp_path)
    assert mine.source == str(tmp_path / "pixel-8.yaml")
    assert mine.model_dump() == load_profile("pixel-8").model_dump()


def test_user_profiles_shadow_bundled_ones(tmp_path, monkeypatch):
    env_dir, cli_dir = tmp_path / "env", tmp_path / "cli"
    env_dir.mkdir(), cli_dir.mkdir()
    text = "schema_version: 1\nname: raspberry-pi-4\ntransport: ssh\nssh:\n  host: {host}\n  identity_file: keys/id\n"
    (env_dir / "raspberry-pi-4.yaml").write_text(text.format(host="10.0.0.4"))
    (cli_dir / "raspberry-pi-4.yml").write_text(text.format(host="10.0.0.5"))
    monkeypatch.setenv("EDGEKIT_DEVICES", str(env_dir))
    assert load_profile("raspberry-pi-4").ssh.host == "10.0.0.4"
    assert load_profile("raspberry-pi-4", devices_dir=cli_dir).ssh.host == "10.0.0.5"  # --devices-dir first
    assert load_profile("raspberry-pi-4").ssh.identity_file == str(env_dir / "keys" / "id")  # relative to the profile
    origins = {e.profile.name: e.origin for e in list_profiles()}
    assert origins["raspberry-pi-4"] == "env" and origins["pixel-8"] == "bundled"
    assert load_profile(str(cli_dir / "raspberry-pi-4.yml")).ssh.host == "10.0.0.5"  # by path


@pytest.mark.parametrize(("text", "message"), [
    ("schema_version: 1\nname: a\ntransport: ssh\nssh:\n  hots: x\n", "ssh.hots: unknown key"),
    ("schema_version: 1\nname: a\ntransport: ssh\nssh:\n  host: x\nthreds: 4\n", "threds: unknown key"),
    ("schema_version: 2\nname: a\ntransport: local\n", "this edgekit reads schema_version 1, the profile has 2"),
    ("name: a\ntransport: local\n", "has no schema_version"),
    ("schema_version: 1\nname: a\ntransport: ssh\n", "transport ssh needs an ssh: section"),
    ("schema_version: 1\nname: a\ntransport: ssh\nssh:\n  host: '-oProxyCommand=touch /tmp/x'\n", "is not a host name"),
    ("schema_version: 1\nname: a\ntransport: adb\nbenchmark:\n  binary: bm\n", "benchmark.binary needs benchmark.sha256"),
    ("schema_version: 1\nname: a\ntransport: adb\nbenchmark:\n  default_target: gpu\n", "default_target 'gpu' is not one of the targets"),
    ("schema_version: 1\nname: a\ntransport: local\nrunner:\n  runtime: onnx\n", "runner.runtime: Input should be"),
    ("schema_version: 1\nname: a\ntransport: local\nrunner:\n  work_root: 'tmp; rm -rf /'\n", "must be an absolute path"),
    ("schema_version: 1\nname: A B\ntransport: local\n", "must be lower-case letters"),
    ("schema_version: 1\nname: a\ntransport: local\ncpu_affinity: 'all'\n", "is not a CPU list"),
    ("!!python/object/apply:os.system ['touch /tmp/pwned']\n", "could not determine a constructor"),
    ("schema_version: 1\nname: a\ntransport: [local\n", "is not valid YAML at line"),
])
def test_invalid_profiles_are_rejected_on_load(text, message):
    with pytest.raises(RecipeError) as err:
        parse_profile(text, source="p.yaml")
    assert message in err.value.one_line()
    assert "\n" not in err.value.one_line()


def test_name_must_match_file_and_unknown_names_list_the_known(tmp_path):
    (tmp_path / "mypi.yaml").write_text("schema_version: 1\nname: raspberry-pi-4\ntransport: local\n")
    with pytest.raises(RecipeError, match="says name: raspberry-pi-4, but its file is mypi.yaml"):
        load_profile("mypi", devices_dir=tmp_path)
    with pytest.raises(InputError, match=r"unknown device 'nope' \(known: android-arm64, .*raspberry-pi-5\)"):
        load_profile("nope")
    with pytest.raises(InputError, match="does not exist"):
        load_profile(str(tmp_path / "missing.yaml"))


def test_cpuinfo_of_a_pi_4_and_a_pi_5():
    pi4 = parse_cpuinfo((FIXTURES / "cpuinfo_raspberry_pi_4.txt").read_text())
    assert (pi4.model, pi4.cores, pi4.has_lse_atomics) == ("Cortex-A72", 4, False)
    assert pi4.features == ("asimd", "cpuid", "crc32", "evtstrm", "fp")
    pi5 = parse_cpuinfo((FIXTURES / "cpuinfo_raspberry_pi_5.txt").read_text())
    assert (pi5.model, pi5.cores, pi5.has_lse_atomics) == ("Cortex-A76", 4, True)
    x86 = parse_cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu sse2 avx2\n")
    assert (x86.model, x86.cores, x86.has_lse_atomics) == ("AMD EPYC 7B13", 2, None)
    big_little = parse_cpuinfo("processor\t: 0\nFeatures\t: fp asimd atomics\nCPU implementer\t: 0x41\nCPU part\t: 0xd46\n\n"
                               "processor\t: 1\nFeatures\t: fp asimd atomics\nCPU implementer\t: 0x41\nCPU part\t: 0xd4e\n")
    assert big_little.model == "Cortex-A510 + Cortex-X3"
    # the rule: ai-edge-litert >= 2.2 is at risk without LSE atomics, older releases and other runtimes are not
    assert hazards_for("ai_edge_litert", "2.3.0", pi4) and hazards_for("ai_edge_litert", "2.2.0", pi4)
    assert not hazards_for("ai_edge_litert", "2.1.0", pi4) and not hazards_for("tflite_runtime", "2.14.0", pi4)
    assert not hazards_for("ai_edge_litert", "2.3.0", pi5) and not hazards_for("ai_edge_litert", "2.3.0", x86)


def test_runtime_choice_avoids_the_risky_runtime_and_falls_back_on_a_crash():
    pi4 = parse_cpuinfo((FIXTURES / "cpuinfo_raspberry_pi_4.txt").read_text())
    pi5 = parse_cpuinfo((FIXTURES / "cpuinfo_raspberry_pi_5.txt").read_text())
    both = {"numpy": "1.26.4", "ai-edge-litert": "2.3.0", "tflite-runtime": "2.14.0"}
    tried: list[str] = []

    def all_run(runtime):
        tried.append(runtime)
        return TryRun(True, "ran")

    choice = choose_runtime(both, pi4, "auto", all_run, where="pi")
    assert choice.runtime == "tflite_runtime" and tried == ["tflite_runtime"]  # the risky one is never started
    assert [c.status for c in choice.candidates] == ["selected", "skipped"]
    tried.clear()
    assert choose_runtime(both, pi5, "auto", all_run, where="pi").runtime == "ai_edge_litert"
    only_litert = {"numpy": "2.0.0", "ai-edge-litert": "2.3.0"}
    choice = choose_runtime(only_litert, pi4, "auto", all_run, where="pi")
    assert choice.runtime == "ai_edge_litert" and "despite a known risk" in choice.reason
    # for a run (not an explicit probe) a lone, unflagged runtime is not try-run: the run is the check
    tried.clear()
    assert choose_runtime(only_litert, pi5, "auto", all_run, where="pi", verify_single=False).runtime == "ai_edge_litert"
    assert tried == []
    choose_runtime(only_litert, pi4, "auto", all_run, where="pi", verify_single=False)
    assert tried == ["ai_edge_litert"]  # flagged: always checked first

    def litert_crashes(runtime):
        return TryRun(runtime != "ai_edge_litert", "crashed with SIGILL in its try-run")

    choice = choose_runtime(both, pi5, "auto", litert_crashes, where="pi")
    assert choice.runtime == "tflite_runtime" and choice.candidates[1].status == "rejected"
    with pytest.raises(DeviceError, match="no installed TFLite runtime runs on this device .*SIGILL"):
        choose_runtime(only_litert, pi5, "auto", litert_crashes, where="pi")
    with pytest.raises(DeviceError, match="numpy is not installed"):
        choose_runtime({"numpy": None}, pi5, "auto", all_run, where="pi")
    with pytest.raises(DeviceError, match=r"no TFLite runtime on the device \(tflite-runtime is not installed"):
        choose_runtime(only_litert, pi5, "tflite_runtime", all_run, where="pi")


def test_thermal_parsing_and_the_throttle_flag():
    pi = parse_thermal((FIXTURES / "thermal_raspberry_pi_4_throttled.txt").read_text())
    assert pi.max_temp_c == 81.3 and pi.vcgencmd_throttled == 0xE0008
    assert pi.throttling_now() == ["soft temperature limit active"]
    cool = parse_thermal("zone cpu-thermal 48000\nthrottled=0x0\n")
    verdict = thermal_verdict(cool, pi, 80.0)
    assert verdict["throttled"] is True
    assert "soft temperature limit active after the run" in verdict["reasons"]
    assert {"ARM frequency capped occurred during the run", "throttled occurred during the run"} <= set(verdict["reasons"])
    assert "hottest zone at 81.3 C (limit 80 C)" in verdict["reasons"]
    assert thermal_verdict(cool, cool, 80.0)["throttled"] is False
    assert thermal_verdict(None, None, None) == {"before": None, "after": None, "throttled": False, "reasons": [], "readable": False}
    phone = parse_thermal((FIXTURES / "thermal_android.txt").read_text())
    assert "bogus" not in phone.zones and phone.max_temp_c == 43.8 and phone.android_status == 2
    assert phone.throttling_now() == ["Android thermal status moderate"]


def test_getprop_summary():
    summary = android_summary(parse_getprop((FIXTURES / "getprop_pixel_8.txt").read_text()))
    assert summary["api_level"] == 34 and summary["release"] == "14" and summary["soc"] == "Google Tensor G3"
    assert summary["model"] == "Pixel 8" and summary["abi"] == "arm64-v8a" and summary["board_platform"] == "zuma"


def test_exit_marker_and_signals():
    assert split_exit_marker("out\n\n__EDGEKIT_EXIT__=0\n") == ("out\n", 0)  # the marker's printf adds one newline
    assert split_exit_marker("partial\n__EDGEKIT_EXIT__=3\n") == ("partial", 3)
    assert split_exit_marker("a\r\nb\r\n\r\n__EDGEKIT_EXIT__=132\r\n") == ("a\nb\n", 132)  # old adb: CRLF
    assert split_exit_marker("connection lost") == ("connection lost", None)
    assert Completed(132, "", "").signal_name == "SIGILL" and Completed(-11, "", "").signal_name == "SIGSEGV"
    assert Completed(3, "", "").signal_name is None


def test_devices_list_and_probe_local(runner, cli):
    result = runner.invoke(cli, ["devices", "list", "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == BUNDLED and rows[BUNDLED.index("local")]["transport"] == "local" and rows[1]["transport"] == "mcu"
    result = runner.invoke(cli, ["devices", "probe", "local", "--json"])
    assert result.exit_code == 0, result.output
    probe = json.loads(result.stdout)
    assert probe["python"]["executable"] == sys.executable and probe["packages"]["ai-edge-litert"]
    assert probe["runtime"]["runtime"] == "ai_edge_litert" and probe["cpu"]["cores"] == os.cpu_count()
    result = runner.invoke(cli, ["devices", "probe", "local"])
    assert result.exit_code == 0 and "runtime" in result.stdout and "ai_edge_litert" in result.stdout


def test_benchmark_local_cli(runner, cli):
    result = runner.invoke(cli, ["benchmark", str(PROBE_MODEL), "--runs", "12", "--warmup", "2", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    lat = payload["latency"]
    assert lat["runs"] == 12 and lat["warmup"] == 2 and lat["threads"] == 1 and 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["max_ms"]
    assert payload["device"]["name"] == "local" and payload["device"]["work_dir_removed"] is True
    assert not Path(payload["device"]["work_dir"]).exists()
    result = runner.invoke(cli, ["benchmark", str(PROBE_MODEL), "--runs", "3"])
    assert result.exit_code == 0 and "p50 / p90 / p99" in result.stdout and "On the device" in result.stdout


@pytest.mark.parametrize(("args", "code", "message"), [
    (["benchmark", "{model}", "--device", "nope"], 2, "unknown device 'nope'"),
    (["benchmark", "{model}", "--runs", "0"], 2, "--runs must be at least 1"),
    (["benchmark", "missing.tflite"], 2, "missing.tflite"),
    (["benchmark", "{model}", "--target", "gpu"], 2, "--target is for Android devices"),
    (["devices", "show", "nope"], 2, "unknown device 'nope'"),
    (["devices", "probe", "{bad}"], 9, "unknown key"),
    (["validate", "{model}", "--data", "{data}", "--device", "nope"], 2, "unknown device 'nope'"),
])
def test_bad_device_input_through_the_cli(runner, cli, tmp_path, args, code, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text("schema_version: 1\nname: bad\ntransport: local\nhost: x\n")
    data = tmp_path / "val.npz"
    import numpy as np

    np.savez(data, x=np.zeros((2, 4), np.float32))
    model = tmp_path / "m.tflite"
    model.write_bytes(PROBE_MODEL.read_bytes())
    argv = [a.format(model=model, bad=bad, data=data) for a in args]
    before = sorted(p.name for p in tmp_path.iterdir())
    result = runner.invoke(cli, argv)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no report or other file written


def test_probe_with_a_recorded_cpu_description(tmp_path):
    """runner.cpuinfo_file: for emulators whose /proc/cpuinfo shows the host CPU."""
    from edgekit.devices.probe import probe_device

    (tmp_path / "fake-pi4.yaml").write_text(
        "schema_version: 1\nname: fake-pi4\ntransport: local\nrunner:\n  python: null\n"
        f"  cpuinfo_file: {FIXTURES / 'cpuinfo_raspberry_pi_4.txt'}\nhardware:\n  cpu: Cortex-A72\n")
    probe = probe_device("fake-pi4", devices_dir=tmp_path)
    assert probe.cpu.model == "Cortex-A72" and probe.cpu.has_lse_atomics is False
    assert probe.warnings[0].startswith("CPU description read from") and len(probe.warnings) == 1
    # only ai-edge-litert is installed here: despite the known risk it is used, because its try-run passed
    assert probe.runtime.runtime == "ai_edge_litert" and "despite a known risk" in probe.runtime.reason


def test_a_profile_that_runs_programs_needs_trust(tmp_path, runner, cli, monkeypatch):
    """A profile from --devices-dir (or a path) whose ssh config has a ProxyCommand, or whose local runner
    is another program, runs only with edgekit --trust-profile; devices show lists what would run."""
    from edgekit.core.errors import InputError
    from edgekit.devices.connect import open_transport
    from edgekit.devices.profiles import load_profile, local_programs

    monkeypatch.delenv("EDGEKIT_TRUST_PROFILE", raising=False)
    (tmp_path / "ssh_config").write_text("Host *\n  ProxyCommand touch /tmp/owned-by-profile\n")
    (tmp_path / "jump.yaml").write_text("schema_version: 1\nname: jump\ntransport: ssh\nssh:\n  host: pi.local\n"
                                        "  config_file: ssh_config\n")
    (tmp_path / "py.yaml").write_text("schema_version: 1\nname: py\ntransport: local\nrunner:\n  python: /usr/bin/python3\n"
                                      "  env:\n    PYTHONPATH: /tmp/evil\n")
    jump = load_profile("jump", devices_dir=tmp_path)
    assert any("ProxyCommand touch /tmp/owned-by-profile" in line for line in local_programs(jump))
    with pytest.raises(InputError, match="would run programs on this machine .*ProxyCommand.* and it comes from --devices-dir"):
        open_transport(jump)
    with pytest.raises(InputError, match="runner.python: /usr/bin/python3; runner.env: PYTHONPATH=/tmp/evil"):
        open_transport(load_profile(str(tmp_path / "py.yaml")))
    shown = runner.invoke(cli, ["devices", "show", "jump", "--devices-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "runs on this machine (only with edgekit --trust-profile)" in shown.output
    # the user's own folder (EDGEKIT_DEVICES) is trusted, unless other users can write to it
    monkeypatch.setenv("EDGEKIT_DEVICES", str(tmp_path))
    open_transport(load_profile("py")).close()
    tmp_path.chmod(0o777)
    try:
        with pytest.raises(InputError, match="writable by other users"):
            open_transport(load_profile("py"))
    finally:
        tmp_path.chmod(0o755)
    # and the explicit opt-in
    result = runner.invoke(cli, ["--trust-profile", "devices", "probe", "py", "--devices-dir", str(tmp_path), "--json"])
    assert "would run programs" not in result.output
