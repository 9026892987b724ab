"""Microcontrollers: TFLite Micro op coverage, tensor arena, MCU-kernel accuracy, and the C array firmware includes.

A microcontroller runs a model with TensorFlow Lite for Microcontrollers (TFLM): no operating
system, no heap, one statically sized *tensor arena* for every activation, and only the kernels the
firmware registers. The questions before flashing are: does every op exist in TFLM, how much RAM
(arena) and flash (model bytes) does the model need, and are the MCU kernels' results the ones we
validated? This module answers them with the ``tflite-micro`` Python interpreter
(``pip install 'edgekit[mcu]'``, nightly pre-releases, Linux x86-64), which runs TFLM's reference
kernels: arena use and results carry over to optimized kernels such as CMSIS-NN, speed does not.

- :func:`check_mcu_ops`: every op against TFLM's builtin kernels (``rules/tflm_ops.yaml``, checked
  against the installed interpreter), full-int8 tensors, missing ops named with a hint.
- :func:`measure_arena`: the arena the TFLM interpreter actually used (its recording allocator),
  confirmed by the smallest arena it runs with, plus a stated margin (:data:`ARENA_MARGIN`): CMSIS-NN
  kernels ask for scratch buffers the reference kernels do not, and targets align differently.
- :func:`run_tflm` / :func:`compare_with_litert`: outputs on the MCU kernels (int8 dequantized) and
  their accuracy next to LiteRT's on the same samples.
- :func:`write_c_array`: ``model_data.cc`` / ``model_data.h`` with the model bytes (16-byte
  aligned), ``kTensorArenaSize`` and a ``RegisterModelOps`` helper for ``MicroMutableOpResolver``.
- :func:`check_mcu_budget`: the gate of a device profile's ``max_arena_kb`` / ``max_flash_kb``.

Example:
    >>> ops = check_mcu_ops(flatbuffer)  # doctest: +SKIP
    >>> arena = measure_arena(flatbuffer)  # doctest: +SKIP
    >>> write_c_array(flatbuffer, "out/mcu", arena_bytes=arena.recommended_bytes)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edgekit.core.errors import GateFailed, InputError, ModelError, RuntimeFailure
from edgekit.core.extras import import_extra
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes

RULES_PATH = Path(__file__).with_name("rules") / "tflm_ops.yaml"
#: margin added to the measured arena (fraction of it), rounded up to 16 bytes
ARENA_MARGIN = 0.20
ARENA_ALIGN = 16
#: activations an MCU target takes (weights int8, biases int32); int16 for 16x8 models
MCU_ACTIVATION_TYPES = ("INT8", "INT16")
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([A-Z0-9_]+)'")
_ARENA_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
OP_HINTS = {
    "TOPK_V2": "do the top-k in application code on the model's output (or use ARG_MAX for top-1)",
    "BATCH_MATMUL": "use Dense (FULLY_CONNECTED) layers with constant weights",
    "REDUCE_MIN": "rewrite with -REDUCE_MAX(-x)",
    "GELU": "use relu or hard_swish activations",
    "SELECT": "use SELECT_V2 (tf.where with broadcasting)",
}


@cache
def tflm_op_table() -> dict[str, str]:
    """Builtin op name -> ``MicroMutableOpResolver`` method (``CONV_2D`` -> ``AddConv2D``)."""
    return dict(yaml.safe_load(RULES_PATH.read_text())["ops"])


@dataclass(frozen=True)
class McuOpCheck:
    """Op coverage of a model on TFLite Micro."""

    ops: dict[str, int]  # op -> nodes
    missing: dict[str, str]  # op TFLM lacks -> hint
    float_tensors: tuple[str, ...]  # non-constant tensors that are not int8/int16 (first few)
    resolver_calls: tuple[str, ...]  # AddConv2D... for the ops the model uses

    @property
    def ok(self) -> bool:
        return not self.missing and not self.float_tensors

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "ops": self.ops, "missing": self.missing, "float_tensors": list(self.float_tensors),
                "resolver_calls": list(self.resolver_calls)}

    def raise_if_missing(self) -> None:
        """ModelError naming every op TFLM lacks (with hints), or every float tensor."""
        if self.missing:
            listed = "; ".join(f"{op}: {hint}" for op, hint in self.missing.items())
            raise ModelError(f"TFLite Micro has no kernel for {', '.join(self.missing)}",
                             hint=f"{listed}; check the model with `edgekit inspect`")
        if self.float_tensors:
            raise ModelError(f"the model is not full-int8: {len(self.float_tensors)} activation tensor(s) are float, e.g. {self.float_tensors[0]}",
                             hint="export with mode int8 and int8 I/O (MCU kernels are integer); ops without an int8 kernel stay float")


def _hint(op: str) -> str:
    if op.startswith("FLEX:"):
        return "a TensorFlow (Flex) op never runs on TFLM; rewrite the layer with builtin ops"
    if op.startswith("CUSTOM:"):
        return "a custom op: register its kernel in your firmware (MicroMutableOpResolver::AddCustom)"
    return OP_HINTS.get(op, "rewrite the layer with supported ops, or run that part of the model on the host")


def check_mcu_ops(flatbuffer: bytes, *, confirm: bool = True) -> McuOpCheck:
    """Checks every op against TFLite Micro's kernels and every activation for int8/int16.

    Args:
        flatbuffer: the ``.tflite`` bytes.
        confirm: when the table flags ops, ask the installed TFLM interpreter (an op the table lacks
            but the interpreter resolves is not reported; one it cannot resolve is named from its
            own message). Needs the ``mcu`` extra only when there is something to confirm.
    """
    info = parse_tflite_bytes(flatbuffer)
    table = tflm_op_table()
    ops = info.op_histogram()
    missing = {op: _hint(op) for op in ops if op not in table}
    if missing and confirm:
        found = _interpreter_missing_op(flatbuffer)
        if found is None:  # the interpreter resolved every op: the table is older than the kernels
            missing = {}
        else:  # keep the table's findings and add the op the interpreter itself could not find
            missing[found] = _hint(found)
    constant = {t.index for t in info.tensors if t.is_constant}
    floats = tuple(t.name for t in info.tensors
                   if t.index not in constant and t.dtype not in (*MCU_ACTIVATION_TYPES, "INT32", "BOOL"))
    calls = tuple(sorted({table[op] for op in ops if op in table}))
    return McuOpCheck(ops=ops, missing=missing, float_tensors=floats[:20], resolver_calls=calls)


@contextlib.contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Captures what native code writes to file descriptor 2 (TFLM logs there) into ``lines``."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def _interpreter(flatbuffer: bytes, arena_size: int, log: list[str]) -> Any:
    runtime = import_extra("mcu").runtime  # tflite_micro exposes its interpreter module as an attribute
    with _native_stderr(log):
        return runtime.Interpreter.from_bytes(flatbuffer, arena_size=int(arena_size))


def _interpreter_missing_op(flatbuffer: bytes, arena_size: int = 16 << 20) -> str | None:
    log: list[str] = []
    try:
        _interpreter(flatbuffer, arena_size, log)
    except RuntimeError:
        for line in log:
            match = _MISSING_OP.search(line)
            if match:
                return match.group(1)
        raise RuntimeFailure(f"TFLite Micro could not prepare the model: {(log or ['no message'])[0][:300]}",
                             hint="run check_mcu_ops first; the arena may be too small") from None
    return None


@dataclass(frozen=True)
class ArenaMeasurement:
    """The tensor arena a model needs on TFLite Micro."""

    used_bytes: int  # what the TFLM recording allocator reported after an inference
    minimum_bytes: int  # the smallest arena the interpreter allocated and ran with (binary search)
    margin: float
    recommended_bytes: int  # max(used, minimum) plus the margin, 16-byte aligned

    def to_dict(self) -> dict[str, Any]:
        return {"used_bytes": self.used_bytes, "minimum_bytes": self.minimum_bytes, "margin": self.margin,
                "recommended_bytes": self.recommended_bytes,
                "note": "measured on TFLM's reference kernels; optimized kernels (CMSIS-NN) may need scratch buffers the margin covers"}


def _fits(flatbuffer: bytes, arena_size: int, sample: np.ndarray) -> bool:
    log: list[str] = []
    try:
        interp = _interpreter(flatbuffer, arena_size, log)
        with _native_stderr(log):
            interp.set_input(sample, 0)
            interp.invoke()
    except RuntimeError:
        return False
    return True


def measure_arena(flatbuffer: bytes, *, margin: float = ARENA_MARGIN, max_bytes: int = 64 << 20) -> ArenaMeasurement:
    """Measures the tensor arena on the TFLM interpreter (one inference on zeros).

    Raises:
        InputError: the ``mcu`` extra is missing, or a negative margin.
        ModelError: an op TFLM lacks (named), or the model does not fit ``max_bytes``.
    """
    if margin < 0:
        raise InputError(f"arena margin cannot be negative, got {margin}", hint="e.g. margin 0.2")
    info = parse_tflite_bytes(flatbuffer)
    sample = _zeros_like_input(info)
    log: list[str] = []
    try:
        interp = _interpreter(flatbuffer, max_bytes, log)
        with _native_stderr(log):
            interp.set_input(sample, 0)
            interp.invoke()
            interp.print_allocations()
    except RuntimeError:
        op = next((m.group(1) for m in map(_MISSING_OP.search, log) if m), None)
        if op:
            raise ModelError(f"TFLite Micro has no kernel for {op}", hint=_hint(op)) from None
        raise ModelError(f"TFLite Micro could not run the model in a {max_bytes >> 20} MiB arena: {(log or ['no message'])[0][:200]}",
                         hint="the model needs more RAM than a microcontroller has") from None
    used = next((int(m.group(1)) for m in map(_ARENA_TOTAL.search, log) if m), 0)
    low, high = 0, max(used, ARENA_ALIGN) * 2 if used else max_bytes
    while not _fits(flatbuffer, high, sample) and high < max_bytes:
        high = min(high * 2, max_bytes)
    while high - low > ARENA_ALIGN:  # smallest arena that works, to 16 bytes
        mid = (low + high) // 2
        low, high = (low, mid) if _fits(flatbuffer, mid, sample) else (mid, high)
    need = max(used, high)
    recommended = int(math.ceil(need * (1 + margin) / ARENA_ALIGN) * ARENA_ALIGN)
    return ArenaMeasurement(used_bytes=used, minimum_bytes=high, margin=margin, recommended_bytes=recommended)


def _zeros_like_input(info: TfliteInfo) -> np.ndarray:
    spec = info.inputs[0]
    shape = tuple(max(int(d), 1) for d in spec.shape)
    return np.zeros(shape, dtype=np.dtype(spec.dtype))


def run_tflm(flatbuffer: bytes, x: np.ndarray, *, arena_size: int | None = None) -> np.ndarray:
    """Runs preprocessed float samples ``x`` (N, ...) through TFLM; returns output 0, dequantized to float.

    Inputs are quantized with the model's own input scale and zero point, as a device would.
    """
    info = parse_tflite_bytes(flatbuffer)
    arena = arena_size or measure_arena(flatbuffer).recommended_bytes
    log: list[str] = []
    interp = _interpreter(flatbuffer, arena, log)
    in_spec, out_spec = info.inputs[0], info.outputs[0]
    outputs = []
    with _native_stderr(log):
        for sample in np.asarray(x, dtype=np.float32):
            interp.set_input(_quantize(sample[None], in_spec), 0)
            interp.invoke()
            outputs.append(_dequantize(np.array(interp.get_output(0)), out_spec))
    return np.concatenate(outputs)


def _quantize(x: np.ndarray, spec: Any) -> np.ndarray:
    if spec.dtype == "float32" or spec.quantization is None:
        return x.astype(np.dtype(spec.dtype))
    scale, zero = spec.quantization.scales[0], spec.quantization.zero_points[0]
    bounds = np.iinfo(np.dtype(spec.dtype))
    return np.clip(np.round(x / scale + zero), bounds.min, bounds.max).astype(np.dtype(spec.dtype))


def _dequantize(y: np.ndarray, spec: Any) -> np.ndarray:
    if spec.quantization is None or spec.dtype == "float32":
        return y.astype(np.float32)
    return (y.astype(np.float32) - spec.quantization.zero_points[0]) * spec.quantization.scales[0]


@dataclass(frozen=True)
class McuAccuracy:
    """Accuracy on TFLM's kernels next to LiteRT's, on the same samples."""

    samples: int
    tflm_top1: float | None  # percent, None without labels
    litert_top1: float | None
    top1_agreement: float  # percent of samples where both give the same class
    max_abs_diff: float  # between the dequantized outputs

    @property
    def drop_points(self) -> float | None:
        """LiteRT accuracy minus TFLM accuracy (percentage points)."""
        return None if self.tflm_top1 is None or self.litert_top1 is None else self.litert_top1 - self.tflm_top1

    def to_dict(self) -> dict[str, Any]:
        return {"samples": self.samples, "tflm_top1": self.tflm_top1, "litert_top1": self.litert_top1,
                "top1_agreement": self.top1_agreement, "max_abs_diff": self.max_abs_diff, "drop_points": self.drop_points}


def compare_with_litert(flatbuffer: bytes, x: np.ndarray, y: np.ndarray | None, litert_outputs: np.ndarray,
                        *, arena_size: int | None = None) -> McuAccuracy:
    """Runs ``x`` on TFLM and compares with LiteRT's (dequantized) outputs of the same file."""
    tflm = run_tflm(flatbuffer, x, arena_size=arena_size)
    litert = np.asarray(litert_outputs, dtype=np.float32).reshape(tflm.shape)
    top_tflm, top_litert = np.argmax(tflm, axis=-1), np.argmax(litert, axis=-1)

    def accuracy(top: np.ndarray) -> float | None:
        return None if y is None else float(100.0 * np.mean(top == np.asarray(y).reshape(top.shape)))

    return McuAccuracy(samples=int(len(tflm)), tflm_top1=accuracy(top_tflm), litert_top1=accuracy(top_litert),
                       top1_agreement=float(100.0 * np.mean(top_tflm == top_litert)),
                       max_abs_diff=float(np.max(np.abs(tflm - litert))) if tflm.size else 0.0)


@dataclass(frozen=True)
class McuBudget:
    """A model's RAM and flash needs against a board's limits."""

    arena_bytes: int
    flash_bytes: int
    max_arena_kb: float | None
    max_flash_kb: float | None
    failures: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "arena_bytes": self.arena_bytes, "flash_bytes": self.flash_bytes,
                "max_arena_kb": self.max_arena_kb, "max_flash_kb": self.max_flash_kb, "failures": list(self.failures)}

    def raise_if_failed(self) -> None:
        if self.failures:
            raise GateFailed("; ".join(self.failures), hint="shrink the model (prune, distill, int8) or pick a board with more memory")


def check_mcu_budget(arena_bytes: int, flash_bytes: int, max_arena_kb: float | None = None,
                     max_flash_kb: float | None = None) -> McuBudget:
    """Compares the arena (with its margin) and the model bytes with a board's limits (KiB, 1024 bytes).

    ``flash_bytes`` is the model alone: the firmware's code (TFLM, kernels, application) needs
    flash too, so leave room for it in ``max_flash_kb``.
    """
    failures = []
    if max_arena_kb is not None and arena_bytes > max_arena_kb * 1024:
        failures.append(f"tensor arena {arena_bytes / 1024:.1f} KiB exceeds max_arena_kb {max_arena_kb:g}")
    if max_flash_kb is not None and flash_bytes > max_flash_kb * 1024:
        failures.append(f"model {flash_bytes / 1024:.1f} KiB exceeds max_flash_kb {max_flash_kb:g}")
    return McuBudget(arena_bytes=int(arena_bytes), flash_bytes=int(flash_bytes), max_arena_kb=max_arena_kb,
                     max_flash_kb=max_flash_kb, failures=tuple(failures))


def write_c_array(flatbuffer: bytes, out_dir: str | os.PathLike[str], *, arena_bytes: int, name: str = "model_data",
                  resolver_calls: tuple[str, ...] | None = None, source: str = "model.tflite") -> tuple[Path, Path]:
    """Writes ``name.cc`` (the model as a 16-byte-aligned ``const unsigned char`` array) and ``name.h``.

    The header declares ``g_<name>``, ``g_<name>_len``, ``kTensorArenaSize`` (``arena_bytes``)
    and ``RegisterModelOps(resolver)``, which adds the model's ops to a
    ``tflite::MicroMutableOpResolver<kModelOpCount>``.

    Raises:
        InputError: a name that is not a C identifier.
    """
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise InputError(f"C array name {name!r} is not a C identifier", hint="e.g. model_data")
    calls = resolver_calls if resolver_calls is not None else check_mcu_ops(flatbuffer, confirm=False).resolver_calls
    digest = hashlib.sha256(flatbuffer).hexdigest()
    guard = f"EDGEKIT_{name.upper()}_H_"
    header = "\n".join([
        f"// Generated by edgekit from {source} (sha256 {digest}). Do not edit.",
        f"#ifndef {guard}", f"#define {guard}", "", "#include <cstddef>", "",
        f"extern const unsigned char g_{name}[];", f"extern const unsigned int g_{name}_len;", "",
        f"// Tensor arena measured on the TFLite Micro interpreter, plus a margin: {arena_bytes} bytes.",
        f"constexpr size_t kTensorArenaSize = {arena_bytes};", f"constexpr int kModelOpCount = {len(calls)};", "",
        "// Registers the model's ops: tflite::MicroMutableOpResolver<kModelOpCount> resolver; RegisterModelOps(resolver);",
        "template <typename Resolver>", "inline bool RegisterModelOps(Resolver& resolver) {",
        "  bool ok = true;", *[f"  ok = ok && static_cast<int>(resolver.{call}()) == 0;" for call in calls], "  return ok;", "}", "",
        f"#endif  // {guard}", "",
    ])
    rows = [", ".join(f"0x{b:02x}" for b in flatbuffer[i: i + 12]) for i in range(0, len(flatbuffer), 12)]
    body = "\n".join([
        f"// Generated by edgekit from {source} (sha256 {digest}). Do not edit.",
        f'#include "{name}.h"', "",
        "// 16-byte aligned: TFLite Micro reads the flatbuffer in place",
        f"alignas(16) const unsigned char g_{name}[] = {{", *[f"    {row}," for row in rows], "};",
        f"const unsigned int g_{name}_len = {len(flatbuffer)};", "",
    ])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cc, h = out / f"{name}.cc", out / f"{name}.h"
    h.write_text(header)
    cc.write_text(body)
    return cc, h
