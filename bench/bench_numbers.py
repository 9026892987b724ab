"""Benchmark for issue #15 ("numbers a user can trust"), measured side by side in one run.

1. ``benchmark --profile-ops`` on MobileNetV2 224 int8 (weights=None): every operator listed, the
   per-op times (cumulative truncation) summed against the whole model's p50, the top op types.
2. edgekit's p50 vs LiteRT's ``benchmark_litert_model`` on MobileNetV2 224 float32 and int8 at 1 and
   2 threads, median over ``--repeats`` alternating rounds.
3. Noise-aware verdicts: the same artifact compared with itself (must be "same speed"), float32 vs
   int8 of the bundled example.
4. Memory footprint: the bundled int8 model's footprint from ``validate --reference``, ``validate``
   and ``benchmark`` (must agree within 20%, under 50 MB); MobileNetV2 float32's footprint against
   its weights plus an activation-arena estimate (the LiteRT Python tool prints no memory figure).

Usage::

    python bench/bench_numbers.py [--repeats 5] [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from bench_quantize import compare_tools, table  # noqa: E402

from edgekit.core.datatypes import Preprocessing  # noqa: E402
from edgekit.core.tflite_file import read_tflite  # noqa: E402
from edgekit.devices.profiles import load_profile  # noqa: E402
from edgekit.measure.op_profile import profile_ops  # noqa: E402
from edgekit.workflows.benchmark import benchmark  # noqa: E402
from edgekit.workflows.compare import compare  # noqa: E402
from edgekit.workflows.quantize import quantize  # noqa: E402
from edgekit.workflows.validate import validate  # noqa: E402

EXAMPLE = REPO / "examples" / "fashion_mnist"


def mobilenet(work: Path) -> dict[str, Path]:
    from edgekit.core.tfshim import keras

    k = keras()
    k.utils.set_random_seed(0)
    k.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None).save(work / "mnv2.keras")
    np.save(work / "calib.npy", np.random.default_rng(0).uniform(-1, 1, (100, 224, 224, 3)).astype(np.float32))
    out = {}
    for mode in ("float32", "int8"):
        quantize(work / "mnv2.keras", work / f"mnv2_{mode}.tflite", mode=mode, data=work / "calib.npy", force=True)
        out[mode] = work / f"mnv2_{mode}.tflite"
    return out


def arena_estimate_mb(path: Path) -> tuple[float, float]:
    """(weights MB, peak MB of activations alive at once in execution order): a lower bound of the arena."""
    info = read_tflite(path)
    weights = sum(t.constant_bytes for t in info.tensors)
    size = {t.index: t.elements * (1 if "int8" in t.dtype else 2 if "16" in t.dtype else 4) for t in info.tensors if not t.is_constant}
    last_use: dict[int, int] = {}
    for k, op in enumerate(o for o in info.operators if o.subgraph == 0):
        for i in op.inputs:
            if i in size:
                last_use[i] = k
    live: dict[int, int] = {}
    peak = 0
    for k, op in enumerate(o for o in info.operators if o.subgraph == 0):
        for i in op.outputs:
            if i in size:
                live[i] = size[i]
        peak = max(peak, sum(live.values()))
        for i in [i for i in live if last_use.get(i, -1) <= k]:
            del live[i]
    return weights / 2**20, peak / 2**20


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    local = load_profile("local")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models = mobilenet(work)
        t0 = time.perf_counter()
        prof = profile_ops(models["int8"], local, threads=1, runs=args.runs, warmup=5)
        seconds = time.perf_counter() - t0
        types = prof.by_type()[:6]
        print(f"## --profile-ops, MobileNetV2 224 int8, 1 thread ({len(prof.ops)} operators, {seconds:.0f} s)\n")
        print(f"method: {prof.method}\n")
        independent = benchmark(models["int8"], runs=args.runs * 3, threads=1).latency.p50_ms
        print(f"sum of per-op times {prof.sum_ms:.3f} ms vs the whole model timed with the cuts {prof.total_ms:.3f} ms "
              f"({100 * (prof.sum_ms - prof.total_ms) / prof.total_ms:+.1f}%) and vs an independent `benchmark` p50 "
              f"{independent:.3f} ms ({100 * (prof.sum_ms - independent) / independent:+.1f}%; must be within 15%)\n")
        print(table(["op type", "count", "ms", "share"], [[t.op, str(t.count), f"{t.time_ms:.3f}", f"{t.share:.1%}"] for t in types]))
        print()
        rows = []
        for threads in (1, 2):
            for mode, path in models.items():
                ours, theirs = compare_tools(path, args.runs, 10, threads, args.repeats)
                rows.append([f"MobileNetV2 224 {mode}", str(threads), f"{ours:.3f}", f"{theirs:.3f}", f"{100 * (ours - theirs) / theirs:+.1f}%"])
        print(f"## edgekit p50 vs benchmark_litert_model (median of {args.repeats} alternating rounds, {args.runs} runs)\n")
        print(table(["model", "threads", "edgekit p50 ms", "LiteRT tool p50 ms", "difference"], rows))
        print()
        pre = Preprocessing(scale=1 / 255)
        for mode in ("float32", "int8"):
            quantize(EXAMPLE / "model.keras", work / f"ex_{mode}.tflite", mode=mode, data=EXAMPLE / "calib.npz", preprocessing=pre, force=True)
        same = compare(work / "ex_int8.tflite", work / "ex_int8.tflite", runs=args.runs * 3, rounds=5)
        pair = compare(work / "ex_float32.tflite", work / "ex_int8.tflite", data=EXAMPLE / "val.npz", runs=args.runs * 3, rounds=5)
        print("## noise-aware verdicts (edgekit compare, 5 interleaved rounds)\n")
        assert same.speed is not None and pair.speed is not None
        print(f"- int8 vs itself: {same.speed.sentence('B', 'A')}")
        print(f"- bundled float32 (A) vs int8 (B): {pair.speed.sentence('int8', 'float32')}; "
              f"size x{pair.size_ratio:.2f}; accuracy {pair.accuracy_change():+.2f} points")
        print()
        ex = work / "ex_int8.tflite"
        figures = {
            "validate --reference": validate(ex, EXAMPLE / "val.npz", reference=EXAMPLE / "model.keras", runs=50, write_report=False).latency,
            "validate": validate(ex, EXAMPLE / "val.npz", runs=50, write_report=False).latency,
            "benchmark": benchmark(ex, runs=50).latency,
        }
        print("## memory footprint (the model's, over the runner's baseline; VmHWM)\n")
        rows = [[k, f"{v.model_init_mb:.1f}", f"{v.model_overall_mb:.1f}", f"{v.peak_memory_mb:.1f}"] for k, v in figures.items()]
        overall = [v.model_overall_mb for v in figures.values()]
        print(table(["bundled int8 via", "model init MB", "model overall MB", "process peak MB"], rows))
        print(f"\nspread of the three overall figures: {100 * (max(overall) - min(overall)) / max(overall):.1f}% (must be <= 20%)\n")
        mnv2 = benchmark(models["float32"], runs=20).latency
        weights, arena = arena_estimate_mb(models["float32"])
        print(f"MobileNetV2 224 float32: model footprint {mnv2.model_overall_mb:.1f} MB overall ({mnv2.model_init_mb:.1f} at init); "
              f"weights {weights:.1f} MB + activation arena estimate {arena:.1f} MB = {weights + arena:.1f} MB "
              f"({100 * (mnv2.model_overall_mb - weights - arena) / (weights + arena):+.1f}%)")


if __name__ == "__main__":
    main()
