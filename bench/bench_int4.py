"""Benchmark for issue #16: int4 weights (litert-quantizer) vs float32 vs int8 on the bundled example.

Side by side in one run on this machine, through edgekit's own runner (the LiteRT Interpreter in a
child process, XNNPACK, 1 thread):

- float32: the TFLite converter, no quantization;
- int8: the converter's full-int8 PTQ (100 calibration images, float I/O);
- dynamic int8: the converter's dynamic range (int8 weights, float activations);
- int4 (channel) and int4 (block32): litert-quantizer, int4 weights, float activations
  (edgekit.export.quantizer.quantize_int4).

For each: file size and gzip size (ratio against float32), top-1 on the 1,000-image validation
subset and its drop against float32, p50/p90 latency over ``--rounds`` interleaved rounds of
``--runs`` runs. Must hold: int4 at least 6x smaller than float32.

Usage::

    python bench/bench_int4.py [--runs 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from edgekit.core.datatypes import QuantMode  # noqa: E402
from edgekit.core.models import load_model  # noqa: E402
from edgekit.export.convert import Conversion, convert_model  # noqa: E402
from edgekit.export.quantizer import quantize_int4  # noqa: E402
from edgekit.runtime.local import latency_stats, run_local  # noqa: E402

EXAMPLE = REPO / "examples" / "fashion_mnist"


def cpu_description() -> str:
    """CPU model and the SIMD flags that decide int8/int4 kernels (lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = set(fields.get("Flags", "").split())
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{model}; {os.cpu_count()} CPUs; flags: {' '.join(shown) or 'none of avx2/avx512/vnni'}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    model = load_model(EXAMPLE / "model.keras")
    with np.load(EXAMPLE / "val.npz") as val:
        x, y = val["x"].astype(np.float32) / 255.0, val["y"]
    with np.load(EXAMPLE / "calib.npz") as calib:
        calibration = calib["x"][:100].astype(np.float32) / 255.0

    float32 = convert_model(model, Conversion(mode=QuantMode.FLOAT32)).flatbuffer
    models = {
        "float32": float32,
        "int8 (converter, full)": convert_model(model, Conversion(mode=QuantMode.INT8), calibration=calibration).flatbuffer,
        "dynamic int8 (converter)": convert_model(model, Conversion(mode=QuantMode.DYNAMIC)).flatbuffer,
        "int4 channel (litert-quantizer)": quantize_int4(float32, "channel").flatbuffer,
        "int4 block32 (litert-quantizer)": quantize_int4(float32, "block32").flatbuffer,
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i, (name, data) in enumerate(models.items()):
            paths[name] = Path(tmp) / f"m{i}.tflite"
            paths[name].write_bytes(data)
        accuracy = {name: float(100.0 * np.mean(np.argmax(run_local(path, x, runs=1, warmup=0).outputs[0], axis=1) == y))
                    for name, path in paths.items()}
        p50: dict[str, list[float]] = {name: [] for name in paths}
        p90: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):  # interleaved rounds: drift hits every model alike
            for name, path in paths.items():
                stats = latency_stats(run_local(path, None, runs=args.runs, warmup=10, threads=1))
                p50[name].append(stats.p50_ms)
                p90[name].append(stats.p90_ms)

    base_bytes, base_acc = len(float32), accuracy["float32"]
    base_p50 = statistics.median(p50["float32"])
    rows = []
    for name, data in models.items():
        med = statistics.median(p50[name])
        rows.append([name, f"{len(data):,}", f"{len(gzip.compress(data)):,}", f"{base_bytes / len(data):.2f}x",
                     f"{accuracy[name]:.1f}%", f"{accuracy[name] - base_acc:+.1f}", f"{med:.3f} / {statistics.median(p90[name]):.3f}",
                     f"{base_p50 / med:.2f}x"])
    print(f"machine: {cpu_description()}; Python {platform.python_version()}")
    print(f"command: python bench/bench_int4.py --runs {args.runs} --rounds {args.rounds}")
    print(f"validation: {len(y)} images (examples/fashion_mnist/val.npz); latency: 1 thread, {args.rounds} interleaved rounds of {args.runs} runs\n")
    print(table(["model", "bytes", "gzip bytes", "smaller than float32", "top-1", "vs float32 (points)", "p50 / p90 ms", "speed-up"], rows))
    int4 = models["int4 channel (litert-quantizer)"]
    ratio = base_bytes / len(int4)
    print(f"\nmust hold: int4 >= 6x smaller than float32: {ratio:.2f}x -> {'PASS' if ratio >= 6 else 'FAIL'}; "
          f"top-1 {accuracy['int4 channel (litert-quantizer)'] - base_acc:+.1f} points against float32")


if __name__ == "__main__":
    main()
