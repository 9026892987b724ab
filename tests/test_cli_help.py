"""`edgekit --help` and every subcommand's --help must not import TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

from edgekit.cli import COMMANDS, _available

PROBE = r"""
import sys, json
from click.testing import CliRunner
from edgekit.cli import cli, COMMANDS
args = sys.argv[1:]
result = CliRunner().invoke(cli, args + ["--help"])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({"exit": result.exit_code, "heavy": heavy, "out": result.output[:200]}))
"""


def _probe(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_top_level_help_is_light_and_lists_commands():
    res = _probe()
    assert res["exit"] == 0
    assert res["heavy"] == []
    assert "Usage: " in res["out"]


def test_every_subcommand_help_is_light():
    names = [name for name in COMMANDS if _available(name)]
    assert {"quantize", "validate", "inspect"} <= set(names)
    for name in names:
        res = _probe(name)
        assert res["exit"] == 0, (name, res)
        assert res["heavy"] == [], (name, res["heavy"])


def test_python_dash_m_and_version():
    proc = subprocess.run([sys.executable, "-m", "edgekit", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("edgekit, version ")
