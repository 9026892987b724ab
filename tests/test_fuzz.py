"""Fuzz: mutated .tflite and .keras files never take edgekit down and leave no file behind.

A seeded mutator (byte flips, truncation, 4-byte overwrites near the header, where flatbuffer
offsets live) produces 500 variants of a valid .tflite file and 500 of a valid .keras file. Each
is fed to ``inspect`` (in this process, through the CLI) and to ``validate`` (the .tflite as the
artifact, the .keras as the reference). Every case must end with exit code 0 and a result, or a
known non-zero code and one ``error:`` line; the process must survive (native code only ever runs
in the runner's child process) and nothing may be written.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import files_in

CASES = 500
KNOWN_CODES = {0, 2, 3, 4, 5, 6}


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        for _ in range(int(rng.integers(1, 20))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
    elif kind == 1:
        b = b[: int(rng.integers(0, len(b)))]
    elif kind == 2:
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(0, min(len(b), 2048)))] = int(rng.integers(0, 256))
    else:
        pos = int(rng.integers(0, min(len(b), 4096) - 4))
        b[pos: pos + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
    return bytes(b)


@pytest.fixture(scope="module")
def fuzz_inputs(tiny, tmp_path_factory):
    from edgekit import Preprocessing
    from edgekit.workflows.quantize import quantize

    root = tmp_path_factory.mktemp("fuzz")
    quantize(tiny["model"], root / "seed.tflite", mode="int8", data=tiny["train"], samples=20,
             preprocessing=Preprocessing(scale=1 / 255))
    x, y = np.load(tiny["val"])["x"][:8], np.load(tiny["val"])["y"][:8]
    np.savez(root / "small.npz", x=x, y=y)
    return root


def _check(result, workdir, before):
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code in KNOWN_CODES, result.output
    if result.exit_code != 0:  # one error line (with --json, the same error as a JSON object on stdout too)
        assert lines[0].startswith("error: "), result.output
        rest = "\n".join(lines[1:])
        assert not rest or json.loads(rest)["error"]["code"] == result.exit_code, result.output
    assert "Traceback" not in result.output
    assert files_in(workdir) == before
    return result.exit_code


@pytest.mark.slow
def test_fuzz_tflite_inspect_and_validate(runner, cli, fuzz_inputs, tmp_path):
    seed = (fuzz_inputs / "seed.tflite").read_bytes()
    rng = np.random.default_rng(2026)
    case = tmp_path / "case.tflite"
    codes = {"inspect": {}, "validate": {}}
    for _ in range(CASES):
        case.write_bytes(mutate(seed, rng))
        before = files_in(tmp_path)
        code = _check(runner.invoke(cli, ["inspect", str(case), "--json"]), tmp_path, before)
        codes["inspect"][code] = codes["inspect"].get(code, 0) + 1
        code = _check(runner.invoke(cli, ["validate", str(case), "--data", str(fuzz_inputs / "small.npz"), "--scale", "1/255",
                                          "--runs", "1", "--warmup", "0", "--json", "--report", str(tmp_path / "r.json")]),
                      tmp_path, before | ({"r.json"} if "r.json" in files_in(tmp_path) else set()))
        (tmp_path / "r.json").unlink(missing_ok=True)
        codes["validate"][code] = codes["validate"].get(code, 0) + 1
    # the mutator must exercise both outcomes, or the test proves nothing
    assert codes["inspect"].get(3, 0) > 50 and codes["inspect"].get(0, 0) > 50, codes
    assert sum(codes["validate"].values()) == CASES


def mutate_keras(path, rng: np.random.Generator) -> bytes:
    """Half the time mutate the archive's bytes; otherwise a member (config or weights), re-zipped
    with valid checksums so the mutation reaches the JSON parser, Keras and HDF5."""
    import io
    import zipfile

    data = path.read_bytes()
    if rng.random() < 0.5:
        return mutate(data, rng)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    target = ["config.json", "model.weights.h5", "metadata.json"][int(rng.integers(0, 3))]
    members[target] = mutate(members[target], rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for name, content in members.items():
            zf.writestr(name, content)
    return out.getvalue()


@pytest.mark.slow
def test_fuzz_keras_inspect_and_reference(runner, cli, tiny, fuzz_inputs, tmp_path):
    rng = np.random.default_rng(7)
    case = tmp_path / "case.keras"
    codes: dict[int, int] = {}
    for i in range(CASES):
        case.write_bytes(mutate_keras(tiny["model"], rng))
        before = files_in(tmp_path)
        code = _check(runner.invoke(cli, ["inspect", str(case), "--json"]), tmp_path, before)
        codes[code] = codes.get(code, 0) + 1
        if i % 5 == 0:  # the reference path loads the same way; a fifth of the cases is enough there
            _check(runner.invoke(cli, ["validate", str(fuzz_inputs / "seed.tflite"), "--data", str(fuzz_inputs / "small.npz"),
                                       "--reference", str(case), "--runs", "1", "--warmup", "0", "--json",
                                       "--report", str(tmp_path / "r.json")]),
                   tmp_path, before | ({"r.json"} if "r.json" in files_in(tmp_path) else set()))
            (tmp_path / "r.json").unlink(missing_ok=True)
    assert codes.get(3, 0) > 100 and codes.get(0, 0) > 10, codes
