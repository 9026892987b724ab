#!/usr/bin/env python3
"""edgekit's self-contained LiteRT runner: runs a .tflite file, measures latency, returns outputs.

This file imports only the standard library, numpy and whichever TFLite runtime the machine has
(``ai_edge_litert`` or ``tflite_runtime``), so the same file runs in a child process here (a crash
in native code cannot take edgekit down) and is copied as-is to a device (Raspberry Pi, ARM64
board) to measure accuracy on the device's own kernels.

Usage::

    python runner.py --model m.tflite --result r.json [--inputs x.npy --outputs y.npz]
                     [--threads 1] [--runs 50] [--warmup 5] [--runtime auto]

``--inputs`` holds preprocessed samples (N, ...): a ``.npy`` for a one-input model, a ``.npz`` of
``in_0``, ``in_1``... in the file's input order for several. Float samples for quantized inputs are
quantized here with the model's own scale and zero point (integer inputs such as token ids are
passed as they are), and integer outputs are dequantized.
Without ``--inputs`` a deterministic pseudo-random input is used (latency only). On an error
the last stderr line is ``EDGEKIT_ERROR: <message>`` and the exit code is 3.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time

RUNNER_VERSION = 1


def _fail(message: str) -> None:
    sys.stderr.write(f"EDGEKIT_ERROR: {message}\n")
    sys.stderr.flush()
    sys.exit(3)


def _status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def _rss_mb() -> float | None:
    return _status_mb("VmRSS")


def _peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM, which exec resets (``ru_maxrss`` carries the parent's
    high-water mark across fork+exec on Linux, so a child of a 500 MB parent would report 500 MB)."""
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def _load_runtime(name: str):
    """Returns (Interpreter class, runtime name, version)."""
    tried = []
    order = ["ai_edge_litert", "tflite_runtime"] if name == "auto" else [name]
    for candidate in order:
        try:
            if candidate == "ai_edge_litert":
                import ai_edge_litert as pkg
                from ai_edge_litert import interpreter as mod
            elif candidate == "tflite_runtime":
                import tflite_runtime as pkg
                from tflite_runtime import interpreter as mod
            elif candidate == "tensorflow":
                import tensorflow as pkg
                mod = pkg.lite
            else:
                _fail(f"unknown runtime '{candidate}' (expected auto, ai_edge_litert, tflite_runtime or tensorflow)")
            return mod.Interpreter, candidate, getattr(pkg, "__version__", "unknown")
        except ImportError as exc:
            tried.append(f"{candidate}: {exc}")
    _fail("no TFLite runtime found (" + "; ".join(tried) + "); install ai-edge-litert or tflite-runtime")
    raise AssertionError  # unreachable


class _Compiled:
    """The Interpreter calls this runner makes, served by LiteRT's CompiledModel on a hardware accelerator.

    ``gpu`` asks for GPU with CPU fallback (WebGPU/OpenCL); a host without a usable GPU raises,
    which the runner reports as a failure rather than silently running on the CPU. Input and output
    details (quantization included) come from the Interpreter, matched by tensor name.
    """

    def __init__(self, model_path, num_threads, accelerator):
        import numpy as np
        from ai_edge_litert.compiled_model import CompiledModel
        from ai_edge_litert.hardware_accelerator import HardwareAccelerator
        from ai_edge_litert.interpreter import Interpreter
        from ai_edge_litert.options import CpuOptions, Options

        self._np = np
        probe = Interpreter(model_path=model_path)
        ins = {d["name"]: d for d in probe.get_input_details()}
        outs = {d["name"]: d for d in probe.get_output_details()}
        del probe
        wanted = HardwareAccelerator.CPU if accelerator == "cpu" else HardwareAccelerator.GPU | HardwareAccelerator.CPU
        self.model = CompiledModel.from_file(model_path, options=Options(hardware_accelerators=wanted,
                                                                         cpu_options=CpuOptions(num_threads=num_threads)))
        signature = next(iter(self.model.get_signature_list()))
        self._in = [dict(ins[d["name"]], index=i) for i, d in enumerate(self.model.get_input_tensor_details(signature).values())]
        self._out = [dict(outs[d["name"]], index=i) for i, d in enumerate(self.model.get_output_tensor_details(signature).values())]
        self.inputs = self.model.create_input_buffers(0)
        self.outputs = self.model.create_output_buffers(0)
        self.fully_accelerated = bool(self.model.is_fully_accelerated())

    def allocate_tensors(self):
        return None

    def get_input_details(self):
        return self._in

    def get_output_details(self):
        return self._out

    def resize_tensor_input(self, index, shape):
        raise ValueError("the CompiledModel path runs the model's own static shapes (batch 1)")

    def set_tensor(self, index, value):
        self.inputs[index].write(self._np.ascontiguousarray(value))

    def invoke(self):
        self.model.run_by_index(0, self.inputs, self.outputs)

    def get_tensor(self, index):
        detail = self._out[index]
        shape = [int(d) for d in detail["shape"]]
        count = int(self._np.prod(shape)) if shape else 1
        return self.outputs[index].read(count, detail["dtype"]).reshape(shape)


def _quantize(np, x, detail):
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    if not scale:
        return x.astype(dtype)
    info = np.iinfo(dtype)
    q = np.round(x / scale + zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def _dequantize(np, y, detail):
    if np.issubdtype(y.dtype, np.floating):
        return y.astype(np.float32)
    scale, zero = detail["quantization"]
    if not scale:
        return y.astype(np.float32)
    return ((y.astype(np.float32) - zero) * scale).astype(np.float32)


def _synthetic(np, detail):
    rng = np.random.default_rng(0)
    shape = [max(1, int(d)) for d in detail["shape"]]
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1, 1, shape).astype(dtype)
    if dtype == np.bool_:
        return np.zeros(shape, dtype=dtype)
    scale = (detail.get("quantization") or (0.0, 0))[0]
    if not scale:  # integer ids (token ids into an Embedding, class indices): 0 is valid for any table
        return np.zeros(shape, dtype=dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -128), min(info.max, 127) + 1, shape).astype(dtype)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a .tflite model and measure it.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--result", required=True)
    parser.add_argument("--inputs")
    parser.add_argument("--outputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default=None,
                        help="run through LiteRT's CompiledModel on this accelerator (ai_edge_litert only)")
    parser.add_argument("--memory-limit-mb", type=int, default=0,
                        help="cap the process's data memory (RLIMIT_DATA) at this many MB; 0: no limit")
    args = parser.parse_args(argv)
    _limit_memory(args.memory_limit_mb)

    try:
        import numpy as np
    except ImportError:
        _fail("numpy is not installed where the runner runs; install numpy")
    Interpreter, runtime, version = _load_runtime("ai_edge_litert" if args.accelerator else args.runtime)
    if args.accelerator:
        accelerator = args.accelerator

        def Interpreter(model_path, num_threads):  # noqa: N802 - stands in for the Interpreter class
            return _Compiled(model_path, num_threads, accelerator)

        runtime = f"ai_edge_litert CompiledModel ({args.accelerator})"
    np.random.default_rng(0)  # numpy.random's first use maps several MB: part of the baseline, not of the model
    baseline_rss = _rss_mb()  # after imports: what the model and its runs add comes on top

    started = time.perf_counter()
    try:
        interp = Interpreter(model_path=args.model, num_threads=args.threads)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        text = str(exc).strip().lower()
        if MEMORY_LIMIT_MB and (not text or "alloc" in text or "memory" in text):
            _fail(f"allocating the model's tensors needed more than the runner's memory limit of {MEMORY_LIMIT_MB} MB")
        if args.accelerator == "gpu":
            _fail("LiteRT's GPU accelerator could not start here (no GPU adapter with working drivers: WebGPU/Vulkan or OpenCL); "
                  "it does not fall back to the CPU silently")
        _fail(f"{runtime} could not load the model: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}")
    init_ms = (time.perf_counter() - started) * 1000.0
    init_peak = _peak_rss_mb()  # the high-water mark of loading and allocating the model
    in_details = interp.get_input_details()
    out_details = interp.get_output_details()

    samples = None  # one array per model input, in the file's input order
    if args.inputs:
        # memory-mapped (.npy) and quantized one sample at a time: the dataset does not inflate the
        # process's memory, so the peak memory reported is the runtime's and the model's
        if args.inputs.endswith(".npz"):
            with np.load(args.inputs, allow_pickle=False) as npz:
                samples = [npz[f"in_{k}"] for k in range(len(npz.files))]
        else:
            samples = [np.load(args.inputs, mmap_mode="r", allow_pickle=False)]
        if len(samples) != len(in_details):
            _fail(f"the model has {len(in_details)} inputs, {len(samples)} input array(s) were given")
        resized = False
        for k, (arr, detail) in enumerate(zip(samples, in_details)):
            want = tuple(int(d) for d in detail["shape"][1:])
            if tuple(arr.shape[1:]) != want:
                _fail(f"input {k} has per-sample shape {tuple(arr.shape[1:])}, the model expects {want}")
            if int(detail["shape"][0]) != 1:
                interp.resize_tensor_input(detail["index"], [1, *want])
                resized = True
        if resized:
            interp.allocate_tensors()
            in_details = interp.get_input_details()
        first_feed = [_quantize(np, np.array(arr[0:1]), d) for arr, d in zip(samples, in_details)]
    else:
        first_feed = [_synthetic(np, d) for d in in_details]

    def set_inputs(values):
        for detail, value in zip(in_details, values):
            interp.set_tensor(detail["index"], value)

    def invoke() -> float:
        t0 = time.perf_counter_ns()
        interp.invoke()
        return (time.perf_counter_ns() - t0) / 1e6

    outputs: list[list] = [[] for _ in out_details]
    try:
        # latency first, on the first sample: first inference, warm-up, timed runs
        set_inputs(first_feed)
        first_ms = invoke()
        for _ in range(args.warmup):
            interp.invoke()
        timings = [invoke() for _ in range(args.runs)]
        peak_rss = _peak_rss_mb()  # before the accuracy pass touches the data
        if samples is not None:
            for i in range(samples[0].shape[0]):
                set_inputs([_quantize(np, np.array(arr[i: i + 1]), d) for arr, d in zip(samples, in_details)])
                interp.invoke()
                for k, detail in enumerate(out_details):
                    outputs[k].append(_dequantize(np, interp.get_tensor(detail["index"]), detail))
    except (ValueError, RuntimeError) as exc:
        _fail(f"{runtime} failed while running the model: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc}")

    if args.outputs and samples is not None:
        np.savez(args.outputs, **{f"out_{k}": np.concatenate(v) for k, v in enumerate(outputs)})  # type: ignore[arg-type]
    result = {
        "runner_version": RUNNER_VERSION,
        "runtime": runtime,
        "runtime_version": version,
        "threads": args.threads,
        "warmup": args.warmup,
        "init_ms": init_ms,
        "first_inference_ms": first_ms,
        "timings_ms": timings,
        "baseline_rss_mb": baseline_rss,
        "init_peak_rss_mb": init_peak,
        "peak_rss_mb": peak_rss,
        "memory_source": "VmHWM" if _status_mb("VmHWM") is not None else "ru_maxrss",
        "accelerator": args.accelerator,
        "fully_accelerated": getattr(interp, "fully_accelerated", None),
        "samples": 0 if samples is None else int(samples[0].shape[0]),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "pid": os.getpid(),
    }
    with open(args.result, "w") as fh:
        json.dump(result, fh)
    return 0


def _limit_memory(mb: int) -> None:
    """Caps the data segment (heap and private writable mappings, not address-space reservations) where the OS allows."""
    global MEMORY_LIMIT_MB
    if mb <= 0 or not hasattr(resource, "RLIMIT_DATA"):
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    want = mb * 2**20
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    try:
        resource.setrlimit(resource.RLIMIT_DATA, (want, hard))
        MEMORY_LIMIT_MB = want // 2**20
    except (ValueError, OSError):
        pass


MEMORY_LIMIT_MB = 0


def _main_bounded() -> int:
    try:
        return main()
    except MemoryError:
        _fail(f"the run needed more than the runner's memory limit of {MEMORY_LIMIT_MB} MB" if MEMORY_LIMIT_MB
              else "the run ran out of memory")
        return 3


if __name__ == "__main__":
    sys.exit(_main_bounded())
