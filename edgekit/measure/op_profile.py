"""Per-operator time: which ops a model spends its latency in.

The LiteRT Python wheel exposes no op profiler (``benchmark_model --enable_op_profiling`` is a C++
tool, run on Android by :mod:`edgekit.devices.adb`), so on this machine and over SSH edgekit
measures per-operator time by **cumulative truncation**: the model cut after its first *k*
operators (the execution plan's order; the cut's output is operator *k*'s output) is timed for
every *k* on the same device, and operator *k*'s time is ``T(k) - T(k-1)``. Each cut is timed in
``rounds`` interleaved rounds (cut 1, 2, ..., N, 1, 2, ...) and its median taken; the medians are
then fitted with an isotonic (non-decreasing) regression, so no operator gets a negative time, noise
does not pile up at the end (a running maximum would bias the total upward), and the per-op times
add up to the fitted time of the whole graph. XNNPACK partitions a truncated graph like the full one up to the
cut, so fused kernels are split at the cut: treat single-op figures as an attribution, and the
per-type summary as the answer to "where does the time go".

With ``measure=False`` (or when timing fails) the profile is an **estimate**: each operator's
share of the measured total is its share of the model's arithmetic (multiply-adds from the tensor
shapes, plus bytes moved for ops without arithmetic) — labelled as such in every report.

Example:
    >>> profile = profile_ops("model.tflite", load_profile("local"))  # doctest: +SKIP
    >>> profile.by_type()[0]  # doctest: +SKIP
    OpTypeTime(op='CONV_2D', count=13, time_ms=0.91, share=0.62, flops=...)
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.datatypes import Serializable
from edgekit.core.errors import DeviceError, EdgekitError
from edgekit.core.fsutil import write_bytes_atomic
from edgekit.core.tflite_file import OperatorInfo, TfliteInfo, parse_tflite_bytes
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.run import run_model

MEASURED = "measured (cumulative truncation: T(first k ops) - T(first k-1 ops), same device, same runs)"
NATIVE = "measured by benchmark_model --enable_op_profiling on the device (its per-node averages)"
OP_PROFILING_FLAG = "--enable_op_profiling=true"
ESTIMATED = "estimate (each op's share of the model's arithmetic and bytes moved, applied to the measured total)"


@dataclass(frozen=True)
class OpTime(Serializable):
    """One operator: its time (ms) and share of the total, its arithmetic and its output."""

    index: int
    op: str
    output: str
    time_ms: float
    share: float
    flops: int
    bytes: int


@dataclass(frozen=True)
class OpTypeTime(Serializable):
    """All operators of one type together."""

    op: str
    count: int
    time_ms: float
    share: float
    flops: int


@dataclass(frozen=True)
class OpProfile(Serializable):
    """Per-operator times of one model on one device, and how they were obtained (``method``)."""

    ops: tuple[OpTime, ...]
    total_ms: float  # p50 of the whole model, timed like the cuts
    method: str
    measured: bool
    runtime: str | None = None
    threads: int | None = None

    @property
    def sum_ms(self) -> float:
        return float(sum(o.time_ms for o in self.ops))

    def by_type(self) -> list[OpTypeTime]:
        """Per operator type, most time first (``benchmark_model``'s "summary by node type")."""
        acc: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
        for o in self.ops:
            row = acc[o.op]
            row[0] += 1
            row[1] += o.time_ms
            row[2] += o.flops
        total = self.sum_ms or 1.0
        out = [OpTypeTime(op, int(c), float(t), float(t) / total, int(f)) for op, (c, t, f) in acc.items()]
        return sorted(out, key=lambda r: -r.time_ms)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["sum_ms"] = round(self.sum_ms, 5)
        data["by_type"] = [t.to_dict() for t in self.by_type()]
        return data


def _shape(info: TfliteInfo, index: int) -> tuple[int, ...]:
    return info.tensors[index].shape if 0 <= index < len(info.tensors) else ()


def op_flops(info: TfliteInfo, op: OperatorInfo) -> int:
    """Multiply-adds x2 of one operator, from its tensor shapes (0 for pure data movement)."""
    out = info.tensors[op.outputs[0]].elements if op.outputs and op.outputs[0] >= 0 else 0
    ins = [i for i in op.inputs if i >= 0]
    if op.op in ("CONV_2D", "CONV_3D", "TRANSPOSE_CONV") and len(ins) >= 2:
        w = _shape(info, ins[1] if op.op != "TRANSPOSE_CONV" else ins[1])
        per_out = int(np.prod(w[1:])) if len(w) > 1 else 1  # kh * kw * cin
        return 2 * out * per_out
    if op.op == "DEPTHWISE_CONV_2D" and len(ins) >= 2:
        w = _shape(info, ins[1])
        return 2 * out * (int(w[1] * w[2]) if len(w) == 4 else 1)
    if op.op in ("FULLY_CONNECTED", "BATCH_MATMUL") and len(ins) >= 2:
        w = _shape(info, ins[1])
        k = w[-1] if op.op == "FULLY_CONNECTED" and w else (w[-2] if len(w) >= 2 else 1)
        return 2 * out * int(k)
    if op.op in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "MEAN", "SUM") and ins:
        return info.tensors[ins[0]].elements
    if op.op in ("SOFTMAX", "LOGISTIC", "TANH", "EXP", "HARD_SWISH"):
        return 5 * out
    if op.op in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM"):
        return 8 * out * max(1, out)  # 4 gates x (input + recurrent) matmuls, rough
    return out  # elementwise ops, quantize/dequantize, reshapes: one per element


def op_bytes(info: TfliteInfo, op: OperatorInfo) -> int:
    """Bytes an operator reads and writes (inputs, weights and outputs)."""
    total = 0
    for i in (*op.inputs, *op.outputs):
        if 0 <= i < len(info.tensors):
            t = info.tensors[i]
            total += t.elements * (1 if "int8" in t.dtype else 2 if "16" in t.dtype else 4)
    return total


def truncated(flatbuffer: bytes, keep: int) -> bytes:
    """The model with only its first ``keep`` operators; their last one's outputs become the outputs."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    graph.operators = graph.operators[:keep]
    graph.outputs = [i for i in graph.operators[-1].outputs if i >= 0]
    model.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _estimate(info: TfliteInfo, main: list[OperatorInfo], total_ms: float) -> list[float]:
    flops = np.array([op_flops(info, o) for o in main], dtype=np.float64)
    moved = np.array([op_bytes(info, o) for o in main], dtype=np.float64)
    # arithmetic dominates where there is some; data movement gives the rest a small, non-zero weight
    weight = flops + moved / 4.0
    weight = weight / weight.sum() if weight.sum() > 0 else np.full(len(main), 1.0 / max(1, len(main)))
    return list(weight * total_ms)


def isotonic(values: list[float]) -> np.ndarray:
    """The non-decreasing sequence closest to ``values`` in squared error (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [mean, weight]
    for v in values:
        blocks.append([float(v), 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, w2), (m1, w1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2])
    return np.concatenate([np.full(int(w), m) for m, w in blocks]) if blocks else np.zeros(0)


def profile_ops(path: str | os.PathLike[str], device: DeviceProfile, *, threads: int | None = None, runs: int = 30,
                warmup: int = 3, measure: bool = True, total_ms: float | None = None, rounds: int = 3) -> OpProfile:
    """Per-operator times of the ``.tflite`` at ``path`` on ``device`` (see the module docstring)."""
    data = Path(path).read_bytes()
    info = parse_tflite_bytes(data, str(path))
    if device.transport == "adb":
        return _native_profile(path, device, threads=threads, runs=runs, warmup=warmup, info=info)
    main = [o for o in info.operators if o.subgraph == 0]
    threads = threads if threads is not None else device.threads
    times: list[float] = []
    runtime = None
    measured = measure and len(main) > 0
    if measured:
        try:
            with tempfile.TemporaryDirectory(prefix="edgekit-ops-") as tmp:
                cuts = []
                for k in range(1, len(main) + 1):
                    cut = Path(tmp) / f"cut-{k:04d}.tflite"
                    write_bytes_atomic(cut, data if k == len(main) else truncated(data, k))
                    cuts.append(cut)
                samples: list[list[float]] = [[] for _ in cuts]
                for _ in range(max(1, rounds)):
                    for k, cut in enumerate(cuts):
                        done = run_model(device, cut, None, threads=threads, runs=runs, warmup=warmup)
                        samples[k].append(done.latency.p50_ms)
                        runtime = done.latency.runtime
                times = [float(np.median(s)) for s in samples]
        except EdgekitError:
            measured, times = False, []
    if measured:
        fitted = isotonic(times)
        per_op = list(np.diff(np.concatenate([[0.0], fitted])))
        whole = float(times[-1])
    else:
        if total_ms is None:
            done = run_model(device, Path(path), None, threads=threads, runs=runs, warmup=warmup)
            total_ms, runtime = done.latency.p50_ms, done.latency.runtime
        whole = float(total_ms)
        per_op = _estimate(info, main, whole)
    denominator = sum(per_op) or 1.0
    ops = tuple(OpTime(index=o.index, op=o.op, output=info.tensors[o.outputs[0]].name if o.outputs and o.outputs[0] >= 0 else "",
                       time_ms=float(t), share=float(t) / denominator, flops=op_flops(info, o), bytes=op_bytes(info, o))
                for o, t in zip(main, per_op, strict=True))
    return OpProfile(ops=ops, total_ms=whole, method=MEASURED if measured else ESTIMATED, measured=measured, runtime=runtime,
                     threads=threads)


def _native_profile(path: str | os.PathLike[str], device: DeviceProfile, *, threads: int | None, runs: int, warmup: int,
                    info: TfliteInfo) -> OpProfile:
    """Android: the phone's own profiler (``benchmark_model --enable_op_profiling=true``)."""
    settings = device.benchmark_settings
    profiled = device.model_copy(update={"benchmark": settings.model_copy(update={"extra_args": [*settings.extra_args, OP_PROFILING_FLAG]})})
    done = run_model(profiled, Path(path), None, threads=threads, runs=runs, warmup=warmup)
    rows = [r for r in done.report.get("op_profile", []) if r["times_called"] > 0 and not str(r["node_type"]).startswith("LiteRT::")]
    if not rows:
        raise DeviceError(f"{device.name}: {settings.binary} printed no per-node table for {OP_PROFILING_FLAG}",
                           hint="use a benchmark_model build with op profiling (the stock TFLite/LiteRT builds have it)")
    total = sum(r["avg_ms"] for r in rows) or 1.0
    ops = tuple(OpTime(index=i, op=r["node_type"], output=r["name"], time_ms=float(r["avg_ms"]), share=float(r["avg_ms"]) / total,
                       flops=0, bytes=0) for i, r in enumerate(rows))
    return OpProfile(ops=ops, total_ms=float(done.latency.mean_ms), method=NATIVE, measured=True, runtime=done.latency.runtime,
                     threads=done.latency.threads)
