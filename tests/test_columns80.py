"""At 80 columns (and when piped) every command's main path fits: no line over 80 columns, no
number or hash cut with an ellipsis; long values (a sha256) are shown whole."""

from __future__ import annotations

import hashlib
import json

import pytest

from edgekit.cli import COMMANDS

WIDTH = 80


def _fits(result, what: str) -> str:
    assert result.exit_code == 0, (what, result.output)
    for stream in (result.stdout, result.stderr):
        for line in stream.splitlines():
            assert len(line.rstrip()) <= WIDTH, f"{what}: {len(line.rstrip())} columns: {line!r}"
        assert "…" not in stream, f"{what}: something was cut: {stream}"
    return result.stdout


@pytest.fixture(scope="module")
def int8(tiny, tmp_path_factory):
    from click.testing import CliRunner

    from edgekit.cli import cli

    out = tmp_path_factory.mktemp("cols") / "a_rather_long_artifact_name_for_the_tiny_model_int8.tflite"
    result = CliRunner().invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tiny["train"]),
                                      "--scale", "1/255", "--samples", "50", "-o", str(out)], env={"COLUMNS": str(WIDTH)})
    _fits(result, "quantize")
    return out


@pytest.mark.parametrize("name", [None, *COMMANDS])
def test_help_fits(runner, cli, name):
    args = ["--help"] if name is None else [name, "--help"]
    _fits(runner.invoke(cli, args, env={"COLUMNS": str(WIDTH)}), f"{name} --help")


def test_main_paths_fit_80_columns(tiny, int8, runner, cli, tmp_path):
    env = {"COLUMNS": str(WIDTH)}
    art, model, train, val = str(int8), str(tiny["model"]), str(tiny["train"]), str(tiny["val"])

    def run(*args: str) -> str:
        return _fits(runner.invoke(cli, list(args), env=env), " ".join(args[:2]))

    sha = hashlib.sha256(int8.read_bytes()).hexdigest()
    assert sha in run("inspect", art)  # the whole hash, on one line
    run("inspect", model)
    run("validate", art, "--data", val, "--scale", "1/255", "--reference", model, "--runs", "3", "--warmup", "1")
    run("benchmark", art, "--runs", "3", "--warmup", "1")
    run("check", art, "--target", "gpu")
    run("check", art, "--target", "cpu", "--all")
    run("devices", "list")
    run("devices", "show", "raspberry-pi-5")
    run("recipe", "list")
    for recipe in json.loads(runner.invoke(cli, ["recipe", "list", "--json"]).stdout):
        run("recipe", "show", recipe["name"])
    run("recipe", "show", "int8-cpu", "--resolved") if "--resolved" in runner.invoke(cli, ["recipe", "show", "--help"]).stdout else None
    run("export", model, "--target", "gpu", "--no-fp16-check", "-o", str(tmp_path / "gpu"))
    run("prune", model, "--data", train, "--sparsity", "0.5", "--epochs", "0", "--no-export", "-o", str(tmp_path / "p.keras"))
    run("cluster", model, "--data", train, "--clusters", "8", "--epochs", "0", "--no-export", "-o", str(tmp_path / "c.keras"))
    run("run", "int8-cpu", "--model", model, "--data", train, "--val", val, "--scale", "1/255", "--no-html",
        "-o", str(tmp_path / "run"))
    run("docs")
    run("docs", "prune")
    run("compare", art, art, "--data", val, "--scale", "1/255", "--runs", "3", "--rounds", "1")
    run("qat", model, "--data", train, "--val", val, "--scale", "1/255", "--epochs", "1", "-o", str(tmp_path / "q.tflite"))
    run("distill", "--teacher", model, "--data", train, "--val", val, "--scale", "1/255", "--width", "0.5", "--epochs", "1",
        "--baseline", "--runs", "3", "-o", str(tmp_path / "s.keras"))
    run("optimize", model, "--data", train, "--val", val, "--scale", "1/255", "--effort", "quick", "--runs", "3", "--rounds", "1",
        "--no-html", "-o", str(tmp_path / "opt"))
