#!/usr/bin/env python3
"""Regenerates the README's sample output (the quick start's quantize + validate) from the current code.

Runs the two commands of ``make demo`` at 80 columns in a scratch folder (the outputs are named
``out/...`` as in the README) and writes their output into the README block after "and prints".
``--check`` only compares, with the numbers and hashes masked (timings differ run to run, and the
int8 kernels and calibration arithmetic may round differently on another CPU): every row, label,
unit and column must match, so a changed or missing row fails tests/test_readme_samples.py.

Usage: python scripts/readme_samples.py [--check]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
START = re.compile(r"and prints \((numbers from this machine[^\n]*)\):\n\n```\n(.*?)(```\n)", re.S)
COMMANDS = [
    ["quantize", "examples/fashion_mnist/model.keras", "--mode", "int8", "--data", "examples/fashion_mnist/calib.npz", "--scale", "1/255",
     "-o", "out/model_int8.tflite", "--force"],
    ["validate", "out/model_int8.tflite", "--data", "examples/fashion_mnist/val.npz", "--reference", "examples/fashion_mnist/model.keras"],
]
# lines whose numbers are measurements of this run (time, memory): masked when comparing


def generate() -> str:
    env = {**os.environ, "COLUMNS": "80", "TF_CPP_MIN_LOG_LEVEL": "3", "NO_COLOR": "1"}
    chunks = []
    with tempfile.TemporaryDirectory(prefix="edgekit-readme-") as tmp:
        (Path(tmp) / "examples").symlink_to(REPO / "examples")
        (Path(tmp) / "out").mkdir()
        for argv in COMMANDS:
            done = subprocess.run([sys.executable, "-c", "from edgekit.cli import main; main()", *argv], cwd=tmp, env=env,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(argv[:2])} failed: {done.stderr.strip()[-500:]}")
            chunks.append("\n".join(line.rstrip() for line in done.stdout.rstrip("\n").splitlines()))
    return "\n\n".join(chunks) + "\n"


def machine() -> str:
    """``2-core Intel(R) Xeon(R) Processor, AVX-512 VNNI`` (what int8 speed depends on)."""
    model, flags = "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown CPU":
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    isa = "AVX-512 VNNI" if "avx512_vnni" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    return f"{os.cpu_count()}-core {model}, {isa}"


def mask(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = re.sub(r"\b[0-9a-f]{64}\b", "SHA256", line.rstrip())
        line = re.sub(r"[+-]?\d[\d,]*(\.\d+)?(e[+-]?\d+)?", "N", line)
        out.append(re.sub(r"\s+", " ", line))  # a wider number shifts the columns
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 with a diff when the README drifted")
    args = parser.parse_args()
    text = README.read_text()
    found = START.search(text)
    if found is None:
        raise SystemExit("README has no sample block after 'and prints (numbers from this machine...):'")
    fresh = generate()
    if args.check:
        import difflib

        old, new = mask(found.group(2)), mask(fresh)
        if old != new:
            sys.stdout.write("\n".join(difflib.unified_diff(old, new, "README.md", "current code", lineterm="")) + "\n")
            raise SystemExit(1)
        print("README sample output matches the code")
        return
    text = text[: found.start(2)] + fresh + text[found.end(2):]
    text = text[: found.start(1)] + f"numbers from this machine: {machine()}, 1 thread" + text[found.end(1):]
    README.write_text(text)
    print(f"updated {README}")


if __name__ == "__main__":
    main()
