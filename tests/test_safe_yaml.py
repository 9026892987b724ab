"""Bounded YAML: deep nesting, billion laughs, huge numbers and oversized files end in one clear
error with the caller's exit code (never RecursionError, MemoryError or ValueError: exit 1)."""

from __future__ import annotations

import os
import time
import tracemalloc

import pytest
import yaml

from conftest import REPO
from edgekit.core.errors import InputError, RecipeError
from edgekit.core.safe_yaml import (
    YamlLimits,
    check_bounds,
    compose_bounded,
    construct_bounded,
    load_bounded,
    load_bounded_file,
)

BUNDLED = sorted([*REPO.glob("edgekit/recipes/*.yaml"), *REPO.glob("devices/*.yaml"), *REPO.glob("edgekit/export/rules/*.yaml")])

BILLION_LAUGHS = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
)


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.name)
def test_bundled_yaml_loads_as_safe_load_does(path):
    text = path.read_text()
    assert load_bounded(text, str(path)) == yaml.safe_load(text)
    assert load_bounded_file(path, "recipe") == yaml.safe_load(text)


def test_bundled_files_were_found():
    assert len(BUNDLED) >= 10


@pytest.mark.parametrize("text", [
    "[" * 50_000 + "]" * 50_000,
    "".join(f"{' ' * i}k{i}:\n" for i in range(2_000)) + " " * 2_000 + "v",
    "- " * 50_000 + "x",
])
def test_deep_nesting_is_refused_without_recursion(text):
    start = time.perf_counter()
    with pytest.raises(RecipeError, match=r"is nested more than 64 levels deep \(line \d+\)") as info:
        load_bounded(text, "deep.yaml", YamlLimits(max_bytes=2 << 30), error=RecipeError)
    assert info.value.exit_code == 9
    assert time.perf_counter() - start < 2.0


def test_billion_laughs_is_refused_fast_and_small():
    assert len(BILLION_LAUGHS) < 1000
    tracemalloc.start()
    start = time.perf_counter()
    with pytest.raises(InputError, match=r"laughs.yaml expands to more than 100,000 values \(aliases of aliases\?\) \(line 5\)"):
        load_bounded(BILLION_LAUGHS, "laughs.yaml")
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 5 * 2**20
    # a few levels are fine: aliases themselves are legitimate YAML
    assert load_bounded("\n".join(BILLION_LAUGHS.splitlines()[:3]), "small.yaml")["a2"][0][0][0] == "lol"


def test_huge_numbers_and_scalars():
    with pytest.raises(InputError, match="has a number of 100,000 characters, more than 100 \\(line 1\\)"):
        load_bounded("epochs: " + "9" * 100_000, "recipe.yaml")
    with pytest.raises(InputError, match="has a number of 5,000 characters"):
        load_bounded("x: -" + "1" * 4999, "recipe.yaml")
    assert load_bounded("name: '" + "9" * 5000 + "'", "recipe.yaml")["name"] == "9" * 5000  # a quoted string is text
    assert load_bounded("x: 1.5e+3\ny: 0x1F\nz: .inf", "r.yaml") == {"x": 1500.0, "y": 31, "z": float("inf")}
    with pytest.raises(InputError, match="has a value of 200,001 characters"):
        load_bounded("name: " + "a" * 200_001, "recipe.yaml", YamlLimits(max_bytes=1 << 30))


def test_recursive_aliases_size_and_alias_count():
    with pytest.raises(InputError, match="refers to &a from inside itself"):
        load_bounded("a: &a [1, *a]", "r.yaml")
    with pytest.raises(InputError, match="more than the 1,048,576 allowed for YAML"):
        check_bounds("x: " + "a" * (1 << 20), "big.yaml")
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * 1001) + "]"
    with pytest.raises(InputError, match="uses more than 1,000 aliases"):
        load_bounded(many, "r.yaml")


def test_invalid_yaml_names_the_line():
    with pytest.raises(RecipeError, match=r"r.yaml is not valid YAML at line 2"):
        load_bounded("a: 1\n b: [\n", "r.yaml", error=RecipeError)
    with pytest.raises(InputError, match="expected a single document"):
        compose_bounded("a: 1\n---\nb: 2\n", "two.yaml")
    assert load_bounded("", "empty.yaml") is None
    node = compose_bounded("passes:\n  - pass: prune\n", "r.yaml")
    assert node.value[0][0].start_mark.line == 0 and node.value[0][1].value[0].start_mark.line == 1
    assert construct_bounded(node, "r.yaml") == {"passes": [{"pass": "prune"}]}
    with pytest.raises(InputError, match="a value cannot be read"):
        load_bounded("when: 2026-13-45", "r.yaml")


def test_files(tmp_path):
    fifo = tmp_path / "profile.yaml"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="FIFO"):
        load_bounded_file(fifo, "device profile")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9".encode("latin-1"))
    with pytest.raises(RecipeError, match="is not UTF-8 text"):
        load_bounded_file(latin, "recipe", error=RecipeError)
    big = tmp_path / "big.yaml"
    big.write_text("x: " + "a" * 2000)
    with pytest.raises(InputError, match="bytes allowed"):
        load_bounded_file(big, "recipe", YamlLimits(max_bytes=1000))


# --- through the commands (issue 18 wiring) --------------------------------------------------------


def test_commands_refuse_yaml_bombs_with_exit_9(tmp_path):
    import subprocess
    import sys
    import time

    laughs = ["schema_version: 1", "name: lol", 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i, prev in zip("bcdefghij", "abcdefghi", strict=True):
        laughs.append(f"{i}: &{i} [" + ",".join([f"*{prev}"] * 9) + "]")
    laughs.append("passes: [{pass: quantize, mode: int8}]")
    (tmp_path / "lol.yaml").write_text("\n".join(laughs) + "\n")
    devices = tmp_path / "devices"
    devices.mkdir()
    (devices / "deep.yaml").write_text("schema_version: 1\nname: deep\ntransport: local\nhardware: " + "[" * 50_000 + "]" * 50_000 + "\n")
    (devices / "digits.yaml").write_text("schema_version: 1\nname: digits\ntransport: local\nthreads: " + "9" * 100_000 + "\n")
    for args in (["recipe", "check", str(tmp_path / "lol.yaml")],
                 ["devices", "show", "deep", "--devices-dir", str(devices)],
                 ["devices", "show", "digits", "--devices-dir", str(devices)]):
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 9, (args, proc.stderr[-400:])
        assert "Traceback" not in proc.stderr and time.monotonic() - started < 30
