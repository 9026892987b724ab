"""Benchmark for issue #15 ("numbers a user can trust"), measured side by side in one run.

1. ``benchmark --profile-ops`` on MobileNetV2 224 int8 (weights=None): every operator listed, the
   per-op times (cumulative truncation) summed against the whole model's p50, the top op types.
2. edgekit's p50 vs LiteRT's ``benchmark_litert_model`` on MobileNetV2 224 float32 and int8 at 1 and
   2 threads, median over ``--repeats`` alternating rounds.
3. Noise-aware verdicts: the same artifact compared with itself (must be "same speed"), float32 vs
   int8 of the bundled example.

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
from edgekit.devices.profiles import load_profile  # noqa: E402
from edgekit.measure.op_profile import profile_ops  # noqa: E402
from edgekit.workflows.compare import compare  # noqa: E402
from edgekit.workflows.quantize import quantize  # noqa: E402

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
        print(f"sum of per-op times {prof.sum_ms:.3f} ms vs whole model {prof.total_ms:.3f} ms "
              f"({100 * (prof.sum_ms - prof.total_ms) / prof.total_ms:+.1f}%)\n")
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


if __name__ == "__main__":
    main()
