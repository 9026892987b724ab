#!/usr/bin/env python3
"""Smoke check for a TFLite runtime, meant to run under the arm64 Python in qemu.

Run a model (under qemu, see README.md / setup_arm64.sh for the full command):

    python smoke.py MODEL.tflite [--seed N] [--runtime auto|litert|tflite]
                                 [--api interpreter|compiled]
                                 [--compare REF.json] [--repeat N]

It loads MODEL.tflite with whichever runtime is importable
(ai_edge_litert.interpreter.Interpreter first, then
tflite_runtime.interpreter.Interpreter), feeds a deterministic input
(np.linspace values shuffled by a seeded, numpy-version independent
permutation, quantized with the input tensor's own parameters for integer
inputs) and prints one JSON document with the outputs on stdout. With
--compare it also reports the max abs difference per output against a JSON
document produced the same way (e.g. on x86 with ai_edge_litert), and exits 3
if --tolerance is exceeded.

--api compiled runs the model through ai_edge_litert's CompiledModel API
(LiteRT Environment + CPU accelerator) instead of the Interpreter; it feeds the
same inputs, so its JSON can be compared with the Interpreter's. In
ai-edge-litert 2.2/2.3 creating that Environment dlopens
libLiteRtWebGpuAccelerator.so, which aborts with SIGILL on CPUs without LSE
atomics (Cortex-A72 / Raspberry Pi 4): see README.md.

Make test models on x86 (needs TensorFlow; not part of the arm64 run):

    /work/main/.venv/bin/python smoke.py --make-models /tmp/edgekit-qemu

writes tiny_conv_f32.tflite and tiny_conv_int8.tflite (full-int8, int8 I/O,
calibrated with a representative dataset) there.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

DEFAULT_SEED = 1234


# --------------------------------------------------------------------- input
def _permutation(n: int, seed: int) -> list[int]:
    """Fisher-Yates with a 64-bit LCG: identical on every platform and numpy."""
    state = (seed * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
    perm = list(range(n))
    for i in range(n - 1, 0, -1):
        state = (state * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF
        j = (state >> 33) % (i + 1)
        perm[i], perm[j] = perm[j], perm[i]
    return perm


def deterministic_values(shape, seed: int, index: int = 0) -> np.ndarray:
    """float64 values in [-1, 1] from np.linspace, shuffled by a seeded permutation."""
    n = int(np.prod(shape)) if len(shape) else 1
    base = np.linspace(-1.0, 1.0, num=n, dtype=np.float64)
    perm = np.asarray(_permutation(n, seed + 7919 * index), dtype=np.int64)
    return base[perm].reshape(tuple(int(s) for s in shape))


def make_input(detail: dict, seed: int, index: int) -> np.ndarray:
    shape = [int(s) for s in detail["shape"]]
    x = deterministic_values(shape, seed, index)
    dtype = np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = detail.get("quantization", (0.0, 0))
        info = np.iinfo(dtype)
        if scale:
            q = np.round(x / scale) + zero_point
        else:  # unquantized integer input: spread over a small range
            q = np.round(x * 100.0)
        return np.clip(q, info.min, info.max).astype(dtype)
    if dtype == np.bool_:
        return x > 0
    raise SystemExit(f"unsupported input dtype {dtype}")


# ------------------------------------------------------------------- runtime
def load_interpreter_class(which: str):
    errors = []
    if which in ("auto", "litert"):
        try:
            import ai_edge_litert  # type: ignore
            from ai_edge_litert.interpreter import Interpreter  # type: ignore

            version = getattr(ai_edge_litert, "__version__", None)
            if version is None:
                try:
                    from importlib.metadata import version as _v

                    version = _v("ai-edge-litert")
                except Exception:  # pragma: no cover - best effort
                    version = "unknown"
            return Interpreter, "ai_edge_litert", version
        except ImportError as e:
            errors.append(f"ai_edge_litert: {e}")
    if which in ("auto", "tflite"):
        try:
            import tflite_runtime  # type: ignore
            from tflite_runtime.interpreter import Interpreter  # type: ignore

            return Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown")
        except ImportError as e:
            errors.append(f"tflite_runtime: {e}")
    raise SystemExit("no TFLite runtime importable: " + "; ".join(errors))


def _quant(detail: dict):
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {"scale": float(scale), "zero_point": int(zero_point)}


def _input_entry(d: dict, x: np.ndarray) -> dict:
    return {
        "name": d["name"],
        "shape": [int(s) for s in d["shape"]],
        "dtype": np.dtype(d["dtype"]).name,
        "quantization": _quant(d),
        "sum": float(np.asarray(x, dtype=np.float64).sum()),
    }


def _invoke_interpreter(interp, seed: int, repeat: int):
    inputs = []
    for i, d in enumerate(interp.get_input_details()):
        x = make_input(d, seed, i)
        interp.set_tensor(d["index"], x)
        inputs.append(_input_entry(d, x))
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t0)
    results = [(d, interp.get_tensor(d["index"])) for d in interp.get_output_details()]
    return inputs, results, times


def _invoke_compiled(model: str, interp, seed: int, repeat: int):
    """Same inputs as _invoke_interpreter, run through CompiledModel (CPU)."""
    from ai_edge_litert.compiled_model import CompiledModel  # type: ignore

    in_order = [d["index"] for d in interp.get_input_details()]
    out_order = [d["index"] for d in interp.get_output_details()]
    sigs = interp.get_signature_list()
    if not sigs:
        raise SystemExit("--api compiled needs a model with a signature")
    key = next(iter(sigs))
    runner = interp.get_signature_runner(key)
    in_det, out_det = runner.get_input_details(), runner.get_output_details()

    cm = CompiledModel.from_file(model)  # CPU accelerator by default (2.1+)
    sig_index = cm.get_signature_index(key)
    cm_sig = cm.get_signature_list()[key]
    in_bufs = cm.create_input_buffers(sig_index)
    out_bufs = cm.create_output_buffers(sig_index)
    inputs = []
    for name, buf in zip(cm_sig["inputs"], in_bufs):
        d = in_det[name]
        x = make_input(d, seed, in_order.index(d["index"]))
        buf.write(np.ascontiguousarray(x))
        inputs.append((in_order.index(d["index"]), _input_entry(d, x)))
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        cm.run_by_index(sig_index, in_bufs, out_bufs)
        times.append(time.perf_counter() - t0)
    results = []
    for name, buf in zip(cm_sig["outputs"], out_bufs):
        d = out_det[name]
        shape = tuple(int(s) for s in d["shape"])
        y = buf.read(int(np.prod(shape)), np.dtype(d["dtype"]).type).reshape(shape)
        results.append((out_order.index(d["index"]), d, y))
    inputs = [e for _, e in sorted(inputs, key=lambda t: t[0])]
    results = [(d, y) for _, d, y in sorted(results, key=lambda t: t[0])]
    return inputs, results, times


def run(model: str, seed: int, which: str, repeat: int, threads: int, api: str = "interpreter") -> dict:
    Interpreter, runtime, version = load_interpreter_class(which)
    if api == "compiled" and runtime != "ai_edge_litert":
        raise SystemExit("--api compiled needs ai_edge_litert")
    t0 = time.perf_counter()
    interp = Interpreter(model_path=model, num_threads=threads)
    interp.allocate_tensors()
    t_load = time.perf_counter() - t0
    if api == "compiled":
        t0 = time.perf_counter()
        inputs, results, times = _invoke_compiled(model, interp, seed, repeat)
        t_load = time.perf_counter() - t0 - sum(times)
    else:
        inputs, results, times = _invoke_interpreter(interp, seed, repeat)

    outputs = []
    for d, y in results:
        q = _quant(d)
        entry = {
            "name": d["name"],
            "shape": [int(s) for s in y.shape],
            "dtype": y.dtype.name,
            "quantization": q,
            "values": y.reshape(-1).tolist(),
        }
        if np.issubdtype(y.dtype, np.integer) and q["scale"]:
            entry["dequantized"] = ((y.astype(np.float64) - q["zero_point"]) * q["scale"]).reshape(-1).tolist()
        outputs.append(entry)

    return {
        "model": os.path.abspath(model),
        "runtime": runtime,
        "runtime_version": version,
        "api": api,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seed": seed,
        "num_threads": threads,
        "load_ms": round(t_load * 1e3, 3),
        "invoke_ms_min": round(min(times) * 1e3, 3),
        "inputs": inputs,
        "outputs": outputs,
    }


def compare(result: dict, ref: dict) -> dict:
    """Max abs difference per output (raw values, and dequantized when present)."""
    per_output = []
    overall = 0.0
    ref_by_name = {o["name"]: o for o in ref["outputs"]}
    for i, o in enumerate(result["outputs"]):
        r = ref_by_name.get(o["name"], ref["outputs"][i] if i < len(ref["outputs"]) else None)
        if r is None:
            raise SystemExit(f"output {o['name']!r} missing from reference")
        a = np.asarray(o["values"], dtype=np.float64)
        b = np.asarray(r["values"], dtype=np.float64)
        if a.shape != b.shape:
            raise SystemExit(f"output {o['name']!r}: shape {a.shape} != reference {b.shape}")
        diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        item = {"name": o["name"], "max_abs_diff": diff}
        if "dequantized" in o and "dequantized" in r:
            da = np.asarray(o["dequantized"]) - np.asarray(r["dequantized"])
            item["max_abs_diff_dequantized"] = float(np.max(np.abs(da))) if da.size else 0.0
        overall = max(overall, diff)
        per_output.append(item)
    return {
        "reference": {k: ref.get(k) for k in ("runtime", "runtime_version", "machine")},
        "max_abs_diff": overall,
        "per_output": per_output,
    }


# -------------------------------------------------------------- test models
def make_models(outdir: str, seed: int) -> None:
    """Build a tiny Conv2D+Dense Keras model and convert it (float32, full int8)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # x86 only (/work/main/.venv)

    keras = tf.keras
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input(shape=(16, 16, 3), batch_size=1, name="image"),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(10, name="logits"),
        ]
    )
    os.makedirs(outdir, exist_ok=True)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    f32 = conv.convert()
    p32 = os.path.join(outdir, "tiny_conv_f32.tflite")
    with open(p32, "wb") as f:
        f.write(f32)

    def representative_dataset():
        for k in range(32):
            yield [deterministic_values((1, 16, 16, 3), seed, 1000 + k).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative_dataset
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    i8 = conv.convert()
    p8 = os.path.join(outdir, "tiny_conv_int8.tflite")
    with open(p8, "wb") as f:
        f.write(i8)
    print(json.dumps({"float32": p32, "float32_bytes": len(f32), "int8": p8, "int8_bytes": len(i8)}, indent=2))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help=".tflite file to run")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--runtime", choices=("auto", "litert", "tflite"), default="auto")
    ap.add_argument(
        "--api",
        choices=("interpreter", "compiled"),
        default="interpreter",
        help="ai_edge_litert only: Interpreter (default) or CompiledModel API",
    )
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1, help="invoke N times, report the fastest")
    ap.add_argument("--compare", metavar="REF.json", help="reference output JSON to diff against")
    ap.add_argument("--tolerance", type=float, default=None, help="with --compare: exit 3 if max abs diff (raw values) exceeds this")
    ap.add_argument("--make-models", metavar="OUTDIR", help="build test models with TensorFlow (x86)")
    args = ap.parse_args(argv)

    if args.make_models:
        make_models(args.make_models, args.seed)
        return 0
    if not args.model:
        ap.error("a .tflite model path is required")
    result = run(args.model, args.seed, args.runtime, args.repeat, args.threads, args.api)
    rc = 0
    if args.compare:
        with open(args.compare) as f:
            result["comparison"] = compare(result, json.load(f))
        if args.tolerance is not None and result["comparison"]["max_abs_diff"] > args.tolerance:
            rc = 3
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return rc


if __name__ == "__main__":
    sys.exit(main())
