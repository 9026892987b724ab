"""The built wheel, installed into a fresh ``--target`` folder and run from another directory,
has its package data: recipes, device profiles, rule tables, guides and schemas."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a clean copy: no stale build/ of the checkout ends up in the wheel
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv*", "build", "*.egg-info", "__pycache__",
                                                             "tests", "bench", "examples", "out", "tmp"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(root / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    if built.returncode != 0 and "No module named pip" in built.stderr:
        pytest.skip("pip is not available to build the wheel")
    assert built.returncode == 0, built.stderr
    wheel = next((root / "dist").glob("edgekit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgekit/schemas/report-v1.schema.json" in names and "edgekit/docs/prune.md" in names
    target = root / "target"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return target


def _edgekit(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEKIT_RECIPES", "EDGEKIT_DEVICES")}
    env["PYTHONPATH"] = str(target)  # dependencies come from this interpreter's environment
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_installed_wheel_has_its_data(installed, tmp_path):
    where = _edgekit(installed, tmp_path, "--version")
    assert where.returncode == 0, where.stderr
    probe = _edgekit(installed, tmp_path, "docs", "--json")  # also proves the installed copy runs, not the checkout
    assert probe.returncode == 0, probe.stderr
    assert {g["topic"] for g in json.loads(probe.stdout)} >= {"prune", "qat", "recipes", "devices", "rules"}

    recipes = _edgekit(installed, tmp_path, "recipe", "list", "--json")
    assert recipes.returncode == 0, recipes.stderr
    listed = json.loads(recipes.stdout)
    assert len(listed) == 7 and all(str(installed) in r["path"] for r in listed)

    devices = _edgekit(installed, tmp_path, "devices", "list", "--json")
    assert devices.returncode == 0, devices.stderr
    assert {"local", "pixel-8", "raspberry-pi-5"} <= {d["name"] for d in json.loads(devices.stdout)}

    artifact = installed / "edgekit" / "devices" / "probe_model.tflite"
    check = _edgekit(installed, tmp_path, "check", str(artifact), "--target", "gpu", "--json")
    assert check.returncode == 0, check.stderr
    assert isinstance(json.loads(check.stdout), dict)

    guide = _edgekit(installed, tmp_path, "docs", "prune")
    assert guide.returncode == 0, guide.stderr
    assert guide.stdout.startswith("# Pruning and weight clustering")

    module = _edgekit(installed, tmp_path, "docs", "rules")
    assert module.returncode == 0 and "schema_version" in module.stdout
