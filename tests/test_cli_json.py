"""``--json`` everywhere: success prints parseable JSON, a bad input prints the error object on
stdout with the documented exit code; a closed pipe ends quietly with exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# one bad input per command: (arguments, expected exit code, expected error kind)
BAD = {
    "quantize": (["quantize", "/nope/m.keras", "--mode", "dynamic", "-o", "{tmp}/x.tflite"], 2, "InputError"),
    "validate": (["validate", "/nope/m.tflite", "--data", "/nope/v.npz"], 2, "InputError"),
    "inspect": (["inspect", "/nope/m.tflite"], 2, "InputError"),
    "benchmark": (["benchmark", "/nope/m.tflite"], 2, "InputError"),
    "devices": (["devices", "show", "no-such-device"], 2, "InputError"),
    "export": (["export", "/nope/m.keras", "--target", "gpu", "-o", "{tmp}/art"], 2, "InputError"),
    "check": (["check", "/nope/m.tflite", "--target", "gpu"], 2, "InputError"),
    "qat": (["qat", "/nope/m.keras", "--data", "/nope/d.npz", "--epochs", "1", "-o", "{tmp}/q.tflite"], 2, "InputError"),
    "distill": (["distill", "--teacher", "/nope/m.keras", "--width", "0.5", "--data", "/nope/d.npz", "--epochs", "1",
                 "-o", "{tmp}/s.keras"], 2, "InputError"),
    "prune": (["prune", "/nope/m.keras", "--data", "/nope/d.npz", "--sparsity", "0.5", "--epochs", "0", "-o", "{tmp}/p.keras"], 2, "InputError"),
    "cluster": (["cluster", "/nope/m.keras", "--data", "/nope/d.npz", "--clusters", "8", "--epochs", "0", "-o", "{tmp}/c.keras"], 2, "InputError"),
    "recipe": (["recipe", "show", "no-such-recipe"], 2, "InputError"),
    "run": (["run", "int8-cpu", "--model", "/nope/m.keras", "--data", "/nope/d.npz", "-o", "{tmp}/r"], 2, "InputError"),
    "optimize": (["optimize", "/nope/m.keras", "--data", "/nope/d.npz", "-o", "{tmp}/o"], 2, "InputError"),
    "docs": (["docs", "no-such-topic"], 2, "InputError"),
    "compare": (["compare", "/nope/a.tflite", "/nope/b.tflite"], 2, "InputError"),
}


def test_every_command_has_a_bad_input_case():
    from edgekit.cli import COMMANDS

    assert set(COMMANDS) <= set(BAD)


@pytest.mark.parametrize("name", sorted(BAD))
def test_json_error_object(name, runner, cli, tmp_path):
    args, code, kind = BAD[name]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args] + ["--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == code, result.output
    error = json.loads(result.stdout)["error"]
    assert error["code"] == code and error["kind"] == kind
    assert error["message"] and "hint" in error
    assert result.stderr.startswith("error: ")  # the human line is still on stderr


def test_json_usage_error_is_an_object(runner, cli):
    result = runner.invoke(cli, ["validate", "--no-such-flag", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "UsageError" and "--no-such-flag" in error["message"]


def test_json_floats_rounded():
    from edgekit.cli.render import rounded

    assert rounded({"a": [89.60000000000001, 1 / 3], "b": True, "c": 3}) == {"a": [89.6, 0.333333], "b": True, "c": 3}


@pytest.fixture(scope="module")
def artifacts(tiny, tmp_path_factory):
    """The tiny model quantized to int8 (through the CLI)."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    out = tmp_path_factory.mktemp("json") / "m_int8.tflite"
    result = CliRunner().invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tiny["train"]),
                                      "--scale", "1/255", "--samples", "50", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert isinstance(report, dict)
    _assert_schema(json.loads(out.with_suffix(".json").read_text()), "manifest-v1")
    return out


def _assert_schema(instance, name: str) -> None:
    from edgekit.core.jsonschema_check import load_schema, schema_problems

    schema = load_schema(name)
    assert schema_problems(instance, schema) == []
    try:
        import jsonschema
    except ImportError:
        return
    jsonschema.validate(instance, schema)


def test_schema_check_finds_problems():
    from edgekit.core.jsonschema_check import SCHEMAS, load_schema, schema_problems

    for name in SCHEMAS:
        assert load_schema(name)["$id"].endswith(f"{name}.schema.json")
    problems = schema_problems({"manifest_version": 2, "artifact": {"file": "m.tflite", "sha256": "abc", "bytes": -1}},
                               load_schema("manifest-v1"))
    assert "$.manifest_version: expected 1, got 2" in problems
    assert any(p.startswith("$.artifact.sha256") for p in problems) and any("bytes" in p for p in problems)
    assert "$: missing 'inputs'" in problems


def _ok(runner, cli, args) -> object:
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_json_success_cheap_commands(tiny, artifacts, runner, cli, tmp_path):
    art, val, model = str(artifacts), str(tiny["val"]), str(tiny["model"])
    report = _ok(runner, cli, ["validate", art, "--data", val, "--scale", "1/255", "--runs", "3", "--warmup", "1"])
    assert isinstance(report, dict)
    assert isinstance(_ok(runner, cli, ["inspect", art]), dict)
    assert isinstance(_ok(runner, cli, ["benchmark", art, "--runs", "3", "--warmup", "1"]), dict)
    assert isinstance(_ok(runner, cli, ["check", art, "--target", "gpu"]), dict)
    assert any(d["name"] == "local" for d in _ok(runner, cli, ["devices", "list"]))  # type: ignore[union-attr]
    assert len(_ok(runner, cli, ["recipe", "list"])) == 7  # type: ignore[arg-type]
    exported = _ok(runner, cli, ["export", model, "--target", "gpu", "--no-fp16-check", "-o", str(tmp_path / "gpu")])
    assert isinstance(exported, dict)
    pruned = _ok(runner, cli, ["prune", model, "--data", str(tiny["train"]), "--sparsity", "0.5", "--epochs", "0", "--no-export",
                               "-o", str(tmp_path / "p.keras")])
    assert isinstance(pruned, dict)
    clustered = _ok(runner, cli, ["cluster", model, "--data", str(tiny["train"]), "--clusters", "8", "--epochs", "0", "--no-export",
                                  "-o", str(tmp_path / "c.keras")])
    assert isinstance(clustered, dict)


def test_json_success_training_commands(tiny, runner, cli, tmp_path):
    model, train, val = str(tiny["model"]), str(tiny["train"]), str(tiny["val"])
    qat = _ok(runner, cli, ["qat", model, "--data", train, "--val", val, "--scale", "1/255", "--epochs", "1",
                            "-o", str(tmp_path / "q.tflite")])
    assert isinstance(qat, dict)
    distilled = _ok(runner, cli, ["distill", "--teacher", model, "--width", "0.5", "--data", train, "--val", val,
                                  "--scale", "1/255", "--epochs", "1", "--no-export", "-o", str(tmp_path / "s.keras")])
    assert isinstance(distilled, dict)
    ran = _ok(runner, cli, ["run", "int8-cpu", "--model", model, "--data", train, "--val", val, "--scale", "1/255",
                            "--no-html", "-o", str(tmp_path / "run")])
    assert isinstance(ran, dict)
    _assert_schema(ran, "report-v1")
    written = json.loads((tmp_path / "run" / "report.json").read_text())
    assert written["report_version"] == 1
    _assert_schema(written, "report-v1")
    _assert_schema(json.loads((tmp_path / "run" / "model.json").read_text()), "manifest-v1")
    quiet = runner.invoke(cli, ["run", "int8-cpu", "--model", model, "--data", train, "--val", val, "--scale", "1/255",
                                "--no-html", "-o", str(tmp_path / "run_q"), "-q"])
    assert quiet.exit_code == 0, quiet.output
    lines = quiet.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{tmp_path / 'run_q'}/model.tflite, ")
    assert "top-1 " in lines[0] and "KB" in lines[0]


def test_closed_pipe_exits_zero(tiny, artifacts, tmp_path):
    """``edgekit validate ... | head -1``: the reader is gone before edgekit writes; exit 0, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    commands = (
        ["devices", "list"],
        ["recipe", "list", "--json"],
        ["validate", str(artifacts), "--data", str(tiny["val"]), "--scale", "1/255", "--runs", "2", "--warmup", "1"],
    )
    for args in commands:
        read_end, write_end = os.pipe()
        os.close(read_end)  # every write to stdout now fails with EPIPE
        proc = subprocess.run([sys.executable, "-m", "edgekit", *args], stdout=write_end, stderr=subprocess.PIPE,
                              env=env, cwd=tmp_path, timeout=300)
        os.close(write_end)
        err = proc.stderr.decode()
        assert proc.returncode == 0, (args, err)
        assert "Traceback" not in err and "Broken pipe" not in err


def test_one_vocabulary_with_hidden_old_spellings(runner, cli):
    """-o/--out and --learning-rate everywhere; --output and --lr still parse but are not in --help."""
    from edgekit.cli import COMMANDS, EdgekitGroup
    from edgekit.cli.options import CANONICAL_FLAGS, visible_opts

    group = cli
    assert isinstance(group, EdgekitGroup)
    ctx = group.make_context("edgekit", ["--help"], resilient_parsing=True)
    for name in COMMANDS:
        command = group.get_command(ctx, name)
        assert command is not None
        for param in command.params:
            shown = visible_opts(param) if hasattr(param, "opts") and param.param_type_name == "option" else []
            assert not set(shown) & set(CANONICAL_FLAGS), (name, shown)
    for name in ("qat", "distill"):
        text = runner.invoke(cli, [name, "--help"]).output
        assert "--learning-rate" in text and "--lr " not in text and "-o, --out " in text and "--output" not in text
    old = runner.invoke(cli, ["quantize", "/nope/m.keras", "--mode", "dynamic", "--output", "x.tflite"])
    assert old.exit_code == 2 and "does not exist" in old.stderr  # the old spelling still parses


def test_docs_command(runner, cli):
    listed = runner.invoke(cli, ["docs"])
    assert listed.exit_code == 0 and "prune" in listed.stdout and "rules" in listed.stdout
    guide = runner.invoke(cli, ["docs", "qat"])
    assert guide.exit_code == 0 and guide.stdout.startswith("# Quantization-aware training")
    typo = runner.invoke(cli, ["docs", "prnue", "--json"])
    assert typo.exit_code == 2 and json.loads(typo.stdout)["error"]["hint"] == "did you mean 'prune'?"


def test_shell_completion_script_and_completions(tmp_path):
    """The README's completion line works: Click emits the bash script and completes command names."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "_EDGEKIT_COMPLETE": "bash_source"}
    script = subprocess.run([sys.executable, "-m", "edgekit"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert script.returncode == 0 and "_edgekit_completion()" in script.stdout
    env.update({"_EDGEKIT_COMPLETE": "bash_complete", "COMP_WORDS": "edgekit qu", "COMP_CWORD": "1"})
    words = subprocess.run([sys.executable, "-m", "edgekit"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert "plain,quantize" in words.stdout.splitlines()
    assert "_EDGEKIT_COMPLETE=bash_source edgekit" in (REPO / "README.md").read_text()
