"""Recipe schema, line-numbered errors, cross-pass rules, bundled recipes and the `recipe` CLI (no TensorFlow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.workflows.recipes import (
    PASS_NAMES,
    RecipeProblems,
    find_recipe,
    list_recipes,
    load_recipe,
    parse_recipe,
    recipe_from_dict,
)

BUNDLED = ["int8-cpu", "fp16-gpu", "prune80-int8", "cluster16-int8", "prune-qat-int8", "distill-int8", "npu-int8"]
HEAD = "schema_version: 1\nname: t\n"


def problems(text: str) -> list[str]:
    with pytest.raises(RecipeProblems) as info:
        parse_recipe(text, source="r.yaml")
    assert info.value.exit_code == 9
    return [str(p) for p in info.value.problems]


def test_bundled_recipes_are_listed_and_valid():
    names = [e.name for e in list_recipes()]
    assert names == sorted(BUNDLED)
    for name in BUNDLED:
        recipe = load_recipe(name)
        assert recipe.name == name
        assert recipe.passes[-1].name == "export"
        assert recipe.gates.accuracy is not None
    readme = (Path(find_recipe("int8-cpu")).parent / "README.md").read_text()
    for name in BUNDLED:
        assert f"`{name}`" in readme, f"{name} is not documented in recipes/README.md"


def test_cli_check_every_bundled_recipe():
    result = CliRunner().invoke(cli, ["recipe", "check", *BUNDLED, "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["ok"] for r in rows] == [True] * len(BUNDLED)
    assert rows[BUNDLED.index("prune-qat-int8")]["passes"] == ["prune", "qat", "export"]


def test_unknown_pass_names_line_and_suggests():
    out = problems(HEAD + "passes:\n  - pass: quantize\n  - pass: expotr\n")
    assert out == [f"r.yaml:5: unknown pass 'expotr'; did you mean 'export'? (passes: {', '.join(PASS_NAMES)})"]


def test_unknown_key_names_line_and_suggests():
    out = problems(HEAD + "passes:\n  - pass: prune\n    sparsty: 0.8\n  - pass: quantize\n")
    assert len(out) == 1
    assert out[0].startswith("r.yaml:5: unknown key 'sparsty' in the prune pass (pass 1); did you mean 'sparsity'?")
    out = problems(HEAD + "passes:\n  - pass: quantize\ngates:\n  latency:\n    max_ms: 3\n    percentil: p90\n")
    assert out[0].startswith("r.yaml:8: unknown key 'percentil' in gates.latency; did you mean 'percentile'?")
    out = problems(HEAD + "pases:\n  - pass: quantize\n")
    assert any(p.startswith("r.yaml:3: unknown key 'pases' in the recipe; did you mean 'passes'?") for p in out)


def test_bad_values_name_the_line():
    out = problems(HEAD + "passes:\n  - pass: quantize\n    mode: int4\n")
    assert out[0].startswith("r.yaml:5: mode 'int4' in the quantize pass (pass 1) is not one of")
    assert "did you mean 'int8'?" in out[0]
    out = problems(HEAD + "passes:\n  - pass: prune\n    sparsity: 1.5\n  - pass: quantize\n")
    assert out[0].startswith("r.yaml:5: sparsity in the prune pass (pass 1): Input should be less than 1")
    out = problems("schema_version: 2\nname: t\npasses:\n  - pass: quantize\n")
    assert out[0].startswith("r.yaml:1: schema_version")


@pytest.mark.parametrize("passes, line, fragment", [
    ("  - pass: quantize\n  - pass: prune\n", 5, "prune comes after quantize: quantization must be the last model-changing pass"),
    ("  - pass: qat\n  - pass: quantize\n", 5, "qat and quantize are exclusive"),
    ("  - pass: export\n  - pass: quantize\n", 5, "quantize comes after export"),
    ("  - pass: quantize\n  - pass: export\n    target: gpu\n", 5, "target gpu does not take int8 models"),
    ("  - pass: quantize\n    float_layers: [fc1]\n  - pass: export\n    target: npu\n", 6, "target npu runs integer graphs"),
    ("  - pass: quantize\n  - pass: quantize\n", 5, "pass quantize appears 2 times"),
    ("  - pass: qat\n    preserve: sparsity\n", 4, "preserve: sparsity needs a prune pass before qat"),
    ("  - pass: prune\n", 4, "the recipe never produces a TFLite model"),
])
def test_cross_pass_rules(passes, line, fragment):
    out = problems(HEAD + "passes:\n" + passes)
    assert len(out) == 1
    assert out[0].startswith(f"r.yaml:{line}: "), out
    assert fragment in out[0]


def test_yaml_level_errors():
    assert problems(HEAD + "name: u\npasses: []\n") == ["r.yaml:3: duplicate key 'name' (first at line 2)"]
    assert problems("")[0] == "r.yaml: the file is empty; a recipe needs schema_version, name and passes"
    assert problems("- a\n")[0].startswith("r.yaml:1: a recipe is a mapping")
    assert problems(HEAD + "passes: [\n")[0].startswith("r.yaml:4: not valid YAML")
    # safe_load semantics: no Python objects
    assert "not valid YAML" in problems(HEAD + "passes: !!python/object:os.system ls\n")[0]


def test_several_problems_are_all_reported():
    out = problems(HEAD + "passes:\n  - pass: prunee\n  - pass: quantize\n    mod: int8\n")
    assert len(out) == 2
    assert out[0].startswith("r.yaml:4: unknown pass 'prunee'")
    assert out[1].startswith("r.yaml:6: unknown key 'mod' in the quantize pass (pass 2); did you mean 'mode'?")


def test_resolved_recipe_round_trips():
    for name in BUNDLED:
        recipe = load_recipe(name)
        again = parse_recipe(recipe.to_yaml(header="resolved"), source="again.yaml")
        assert again == recipe
        assert again.to_dict()["passes"][0]["pass"] == recipe.passes[0].name


def test_defaults_and_helpers():
    recipe = recipe_from_dict({"schema_version": 1, "name": "x", "passes": [{"pass": "prune"}, {"pass": "qat"}],
                               "gates": {"size": {"max_kb": 2}}, "data": {"preprocessing": {"scale": "1/255"}}})
    assert recipe.passes[0].sparsity == 0.5 and recipe.passes[1].preserve == "auto"
    assert recipe.gates.size.limit_bytes == 2048
    assert recipe.data.preprocessing.scale_value() == pytest.approx(1 / 255)
    assert recipe.training and recipe.needs_data
    assert not recipe_from_dict({"schema_version": 1, "name": "y", "passes": [{"pass": "quantize", "mode": "dynamic"}]}).needs_data


def test_cli_check_reports_each_problem_and_exit_9(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(HEAD + "passes:\n  - pass: quantize\n    calibration_sample: 10\n")
    result = CliRunner().invoke(cli, ["recipe", "check", str(bad), "int8-cpu"])
    assert result.exit_code == 9
    assert f"error: {bad}:5: unknown key 'calibration_sample' in the quantize pass (pass 1); did you mean 'calibration_samples'?" in result.output
    assert "ok  " in result.output  # int8-cpu still checked


def test_cli_show_list_and_unknown_names(tmp_path, monkeypatch):
    runner = CliRunner()
    shown = runner.invoke(cli, ["recipe", "show", "npu-int8", "--resolved"])
    assert shown.exit_code == 0
    assert "io_type: int8" in shown.output and "target: npu" in shown.output
    unknown = runner.invoke(cli, ["recipe", "show", "int8cpu"])
    assert unknown.exit_code == 2
    assert "unknown recipe 'int8cpu'; did you mean 'int8-cpu'?" in unknown.output
    # a user folder shadows a bundled recipe of the same name
    mine = tmp_path / "int8-cpu.yaml"
    mine.write_text(HEAD.replace("name: t", "name: int8-cpu") + "description: mine\npasses:\n  - pass: quantize\n    mode: dynamic\n")
    monkeypatch.setenv("EDGEKIT_RECIPES", str(tmp_path))
    listed = json.loads(runner.invoke(cli, ["recipe", "list", "--json"]).output)
    entry = next(e for e in listed if e["name"] == "int8-cpu")
    assert entry["origin"] == "EDGEKIT_RECIPES" and entry["description"] == "mine"
    assert load_recipe("int8-cpu").passes[0].mode == "dynamic"


PROBE = r"""
import sys, json
from click.testing import CliRunner
from edgekit.cli import cli
codes = [CliRunner().invoke(cli, args).exit_code for args in (
    ["recipe", "list"], ["recipe", "show", "int8-cpu", "--resolved"], ["recipe", "check", "prune-qat-int8", "distill-int8"])]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_recipe_commands_do_not_import_tensorflow():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res == {"codes": [0, 0, 0], "heavy": []}
