"""Issue 19: a device fleet without sshd — this machine twice (plain and a pinned local profile) and an
SSH device nobody answers, on a two-output model (a classifier head and a regression head)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import model_zoo  # noqa: E402
from devices_sshd import free_port  # noqa: E402


def _devices(folder: Path) -> Path:
    folder.mkdir()
    (folder / "pinned.yaml").write_text("schema_version: 1\nname: pinned\ntransport: local\ncpu_affinity: [0]\n")
    (folder / "nobody.yaml").write_text("\n".join([
        "schema_version: 1", "name: nobody", "transport: ssh", "ssh:", "  host: 127.0.0.1", "  user: root", f"  port: {free_port()}",
        "  config_file: /dev/null", "  strict_host_key_checking: accept-new", f"  known_hosts: {folder / 'known_hosts'}", "", ]))
    return folder


def test_fleet_validate_of_a_two_output_model_one_row_per_device(runner, cli, tmp_path):
    model, data, val = model_zoo.save("two_output", tmp_path / "m", n=300)
    art = tmp_path / "m.tflite"
    q = runner.invoke(cli, ["quantize", str(model), "--mode", "int8", "--data", str(data), "-o", str(art)])
    assert q.exit_code == 0, q.output
    devices = _devices(tmp_path / "devs")
    result = runner.invoke(cli, ["validate", str(art), "--data", str(val), "--reference", str(model), "--device", "local",
                                 "--device", "pinned", "--device", "nobody", "--devices-dir", str(devices), "--runs", "3",
                                 "--warmup", "0", "--json"])
    assert result.exit_code == 7, result.output  # the unreachable device's code, after every row
    fleet = json.loads(result.output)
    rows = {r["device"]: r for r in fleet["rows"]}
    assert list(rows) == ["local", "pinned", "nobody"] and fleet["failed"] == 1
    local, pinned = rows["local"]["result"], rows["pinned"]["result"]
    assert [t["task"] for t in local["tasks"]] == [t["task"] for t in pinned["tasks"]] and len(local["tasks"]) == 2
    assert local["accuracy"]["values"] == pinned["accuracy"]["values"]  # the same runner and kernels: the same outputs
    assert len(local["comparisons"]) == 2 and pinned["device"]["name"] == "pinned"
    assert rows["nobody"]["error"]["code"] == 7 and "nobody" in rows["nobody"]["error"]["message"]
    report = json.loads((tmp_path / "m.validate.report.json").read_text())
    assert [r["device"] for r in report["rows"]] == ["local", "pinned", "nobody"]


def test_fleet_benchmark_all_ok_exits_0_and_max_parallel_is_checked(runner, cli, tmp_path):
    from fuzz_tflite import seed_model

    art = tmp_path / "f.tflite"
    art.write_bytes(seed_model("float"))
    devices = _devices(tmp_path / "devs")
    ok = runner.invoke(cli, ["benchmark", str(art), "--device", "local", "--device", "pinned", "--devices-dir", str(devices),
                             "--runs", "3", "--warmup", "0", "--max-parallel", "1"])
    assert ok.exit_code == 0, ok.output
    assert "2 of 2 devices ran; at most 1 at once" in " ".join(ok.output.split())
    bad = runner.invoke(cli, ["benchmark", str(art), "--device", "local", "--device", "pinned", "--devices-dir", str(devices),
                              "--max-parallel", "0"])
    assert bad.exit_code == 2 and "--max-parallel must be a whole number of at least 1" in bad.output
