"""Benchmark for issue #2: PTQ modes on the bundled example, and edgekit's latency vs LiteRT's tool.

Everything is measured side by side in one run on this machine:

1. The bundled Fashion-MNIST model converted to float32, float16, dynamic and int8: size ratio
   against float32, top-1 and its delta against the Keras model on the 1,000-image validation
   subset, p50 latency ratio against float32 (1 thread), conversion time.
2. edgekit's p50 (its child-process runner with the LiteRT Interpreter) next to LiteRT's own
   benchmark tool (``python -m ai_edge_litert.tools.benchmark_litert_model``) on the same file and
   thread count, for the bundled model and MobileNetV2 224x224 (weights=None) in float32 and int8.
   Runs alternate between the two tools (``--repeats`` rounds) and the median of the rounds' p50s
   is compared.

Usage::

    python bench/bench_quantize.py [--runs 200] [--repeats 3] [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from edgekit.core.datatypes import Preprocessing  # noqa: E402
from edgekit.core.models import load_model  # noqa: E402
from edgekit.runtime.local import (  # noqa: E402
    latency_stats,
    run_local,
)
from edgekit.workflows.quantize import quantize  # noqa: E402
from edgekit.workflows.validate import validate  # noqa: E402

EXAMPLE = REPO / "examples" / "fashion_mnist"


def litert_tool_p50(model: Path, runs: int, warmup: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        subprocess.run(
            [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model", "--model", str(model),
             "--num_runs", str(runs), "--warmup_runs", str(warmup), "--num_threads", str(threads), "--result_json", str(out)],
            check=True, capture_output=True, text=True,
        )
        return float(json.loads(out.read_text())["latency"]["median_ms"])


def edgekit_p50(model: Path, runs: int, warmup: int, threads: int) -> float:
    return latency_stats(run_local(model, None, runs=runs, warmup=warmup, threads=threads)).p50_ms


def compare_tools(model: Path, runs: int, warmup: int, threads: int, repeats: int) -> tuple[float, float]:
    ours, theirs = [], []
    for _ in range(repeats):
        ours.append(edgekit_p50(model, runs, warmup, threads))
        theirs.append(litert_tool_p50(model, runs, warmup, threads))
    return statistics.median(ours), statistics.median(theirs)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def bench_modes(work: Path, runs: int) -> str:
    pre = Preprocessing(scale=1 / 255)
    results = {}
    for mode in ("float32", "float16", "dynamic", "int8"):
        out = work / f"example_{mode}.tflite"
        q = quantize(EXAMPLE / "model.keras", out, mode=mode, data=EXAMPLE / "calib.npz", preprocessing=pre, force=True)
        results[mode] = {"q": q}
    # latency: interleave the modes, three rounds, median p50 per mode
    p50s: dict[str, list[float]] = {m: [] for m in results}
    for _ in range(3):
        for mode in results:
            p50s[mode].append(edgekit_p50(work / f"example_{mode}.tflite", runs, 20, 1))
    for mode in results:
        rep = validate(work / f"example_{mode}.tflite", EXAMPLE / "val.npz", reference=EXAMPLE / "model.keras", runs=10, warmup=2, write_report=False)
        results[mode]["rep"] = rep
        results[mode]["p50"] = statistics.median(p50s[mode])
    base = results["float32"]
    rows = []
    for mode, r in results.items():
        size = r["q"].artifact.size.bytes
        rows.append([
            mode, f"{size:,}", f"{base['q'].artifact.size.bytes / size:.2f}x",
            f"{r['rep'].accuracy.top1:.2f}", f"{-r['rep'].accuracy_drop:+.2f}",
            f"{r['p50']:.4f}", f"{base['p50'] / r['p50']:.2f}x", f"{r['q'].conversion_seconds:.2f}",
        ])
    keras_top1 = base["rep"].reference_accuracy.top1
    header = (f"Bundled example ({load_model(EXAMPLE / 'model.keras').parameter_count:,} parameters), 1,000 validation images, "
              f"Keras float top-1 {keras_top1:.2f}%, 1 thread, p50 = median of 3 interleaved rounds of {runs} runs")
    return header + "\n\n" + table(
        ["mode", "bytes", "smaller than fp32", "top-1 %", "delta vs Keras (points)", "p50 ms", "faster than fp32", "convert s"], rows)


def bench_tools(work: Path, runs: int, repeats: int, skip_mobilenet: bool, mobilenet_runs: int | None = None) -> str:
    models = [("bundled example float32", work / "example_float32.tflite"), ("bundled example int8", work / "example_int8.tflite")]
    if not skip_mobilenet:
        from edgekit.core.tfshim import keras

        k = keras()
        k.utils.set_random_seed(0)
        mnv2 = k.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
        mnv2.save(work / "mobilenetv2.keras")
        rng = np.random.default_rng(0)
        np.save(work / "calib.npy", rng.uniform(-1, 1, (100, 224, 224, 3)).astype(np.float32))
        for mode in ("float32", "int8"):
            t0 = time.perf_counter()
            quantize(work / "mobilenetv2.keras", work / f"mnv2_{mode}.tflite", mode=mode, data=work / "calib.npy", force=True)
            print(f"MobileNetV2 {mode} converted in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            models.append((f"MobileNetV2 224 {mode}", work / f"mnv2_{mode}.tflite"))
    rows = []
    for name, path in models:
        n = runs if "example" in name else (mobilenet_runs or max(30, runs // 4))
        ours, theirs = compare_tools(path, n, 10, 1, repeats)
        rows.append([name, f"{n}", f"{ours:.4f}", f"{theirs:.4f}", f"{ours / theirs:.3f}", f"{100 * (ours - theirs) / theirs:+.1f}%"])
    return (f"edgekit p50 vs LiteRT benchmark_litert_model median, same file, 1 thread, median over {repeats} alternating rounds\n\n"
            + table(["model", "runs", "edgekit p50 ms", "LiteRT tool p50 ms", "ratio", "difference"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--mobilenet-runs", type=int, default=None, help="timed runs per round for MobileNetV2 (default runs/4, at least 30)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        work = Path(tmp)
        print(bench_modes(work, args.runs))
        print()
        print(bench_tools(work, args.runs, args.repeats, args.skip_mobilenet, args.mobilenet_runs))


if __name__ == "__main__":
    main()
