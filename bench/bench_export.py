"""Benchmark of ``edgekit export`` per target: size, delegate coverage, partitions, fp16 risk.

Models: the bundled Fashion-MNIST CNN (calibration/validation data shipped) and Keras'
MobileNetV2 (``weights=None``: trained weights cannot be downloaded here, so its numbers show
coverage and sizes, and fp16 risk on random weights with seeded random images). A third row
set compares edgekit's GPU check with TensorFlow's own ``Analyzer(gpu_compatibility=True)`` on a
model with TOPK_V2, SEGMENT_SUM and a 5-D tensor.

Run:  .venv/bin/python bench/bench_export.py [--size 224] [--samples 50]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekit.core.datatypes import Preprocessing  # noqa: E402
from edgekit.workflows.export import export  # noqa: E402

EXAMPLE = ROOT / "examples" / "fashion_mnist"


def _row(model: str, result, seconds: float) -> str:
    s = result.report.summary
    fp16 = result.fp16.summary() if result.fp16 else None
    risk = "-"
    if fp16:
        worst = fp16["worst_layer"]
        risk = (f"{'FLAGGED' if fp16['risky'] else 'ok'}: out err {fp16['max_output_relative_error']:.2g}, "
                f"top-1 {fp16['min_top1_agreement']:.0f}%, worst layer {worst['relative_error']:.2g}, "
                f"max abs act {fp16['max_abs_activation']:.3g}")
    weights = result.info.weight_dtypes()
    main = max(weights, key=weights.get).lower() if weights else "-"
    return (f"| {model} | {result.target} | {result.mode.value} / {result.io_type.value} | {main} | "
            f"{result.artifact.size.bytes / 1024:.1f} | {100 * s.node_share:.1f}% ({s.supported_nodes}/{s.nodes}) | "
            f"{100 * s.flop_share:.2f}% | {s.partitions} | {risk} | {seconds:.1f} |")


def _analyzer_findings(flatbuffer: bytes) -> int:
    from edgekit.core.tfshim import tensorflow

    tf = tensorflow()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tf.lite.experimental.Analyzer.analyze(model_content=flatbuffer, gpu_compatibility=True)
    return sum("GPU COMPATIBILITY WARNING" in line for line in buf.getvalue().splitlines())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224, help="MobileNetV2 input size")
    parser.add_argument("--samples", type=int, default=50, help="fp16-check / calibration samples")
    args = parser.parse_args()

    from edgekit.core.tfshim import keras, tensorflow

    k = keras()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        scale = Preprocessing(scale=1 / 255)
        for target in ("cpu", "gpu", "nnapi", "npu"):
            data = EXAMPLE / ("val.npz" if target == "gpu" else "calib.npz")
            started = time.perf_counter()
            result = export(EXAMPLE / "model.keras", target, tmp / f"fm_{target}", data=data, preprocessing=scale,
                            samples=args.samples, fp16_samples=args.samples, api_level=34 if target == "nnapi" else None)
            rows.append(_row("fashion-mnist CNN", result, time.perf_counter() - started))

        k.utils.set_random_seed(0)
        mobilenet = k.applications.MobileNetV2(input_shape=(args.size, args.size, 3), weights=None)
        images = np.random.default_rng(0).random((args.samples, args.size, args.size, 3), dtype=np.float32) * 2 - 1
        np.savez(tmp / "images.npz", x=images)
        for target in ("cpu", "gpu", "nnapi", "npu"):
            started = time.perf_counter()
            result = export(mobilenet, target, tmp / f"mnv2_{target}", data=tmp / "images.npz", samples=args.samples,
                            fp16_samples=min(args.samples, 20), api_level=34 if target == "nnapi" else None)
            rows.append(_row(f"MobileNetV2 {args.size} (random weights)", result, time.perf_counter() - started))

        tf = tensorflow()

        def hostile(x):
            y = tf.nn.relu(x * 2.0)
            values, _ = tf.math.top_k(y, k=4)
            seg = tf.math.segment_sum(tf.reshape(y, [16]), tf.constant([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7]))
            return values, seg, tf.reduce_sum(tf.reshape(y, [1, 2, 2, 2, 2]) + 1.0, axis=[1, 2, 3, 4])

        module = tf.Module()
        module.f = tf.function(hostile, input_signature=[tf.TensorSpec([1, 16], tf.float32)])
        flat = bytes(tf.lite.TFLiteConverter.from_concrete_functions([module.f.get_concrete_function()], module).convert())
        from edgekit.export.delegates import check_bytes

        ours = check_bytes(flat, "gpu")
        tf_findings = _analyzer_findings(flat)

    print("| model | target | mode / I/O | weights | KB | nodes on delegate | FLOPs on delegate | partitions | fp16 risk (gpu) | s |")
    print("|---|---|---|---|---:|---:|---:|---:|---|---:|")
    for row in rows:
        print(row)
    print()
    print("GPU check of a model with TOPK_V2, SEGMENT_SUM and a 5-D branch (7 nodes):")
    print(f"- TensorFlow {tf.__version__} Analyzer(gpu_compatibility=True): {tf_findings} GPU compatibility warnings")
    print(f"- edgekit check --target gpu: {len(ours.unsupported)} nodes off the GPU "
          f"({', '.join(f'{n.index}:{n.op}' for n in ours.unsupported)})")


if __name__ == "__main__":
    main()
