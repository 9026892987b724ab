"""Parse the text printed by the native TFLite / LiteRT benchmark tools.

Two flavours of the C++ tool exist and both are run on the phone through ``adb``:

* ``tflite``: the classic ``benchmark_model`` (tensorflow/lite/tools/benchmark). It logs through
  ``TFLITE_LOG`` (``INFO: ...`` in recent builds, no prefix in old ones), prints one
  ``count=... first=... curr=... min=... max=... avg=... std=...`` line for the warm-up runs and one
  for the measured runs (newer builds append ``p5=... median=... p95=...``), then
  ``Inference timings in us: Init: ..., First inference: ..., Warmup (avg): ..., Inference (avg): ...``
  and a memory line. Delegates announce themselves with ``Explicitly applied GPU delegate, and the
  model graph will be completely executed by the delegate.`` and friends.
* ``litert``: ``benchmark_litert_model`` from google-ai-edge/LiteRT. It reuses the classic
  ``BenchmarkModel::Run`` (so the same ``count=`` lines appear) but replaces the final summary with a
  ``========== BENCHMARK RESULTS ==========`` block in milliseconds, logged through ``LITERT_LOG``
  (``INFO: [benchmark_litert_model.h:94] Model initialization: 23.45 ms``).

All times in the tool's stats lines are microseconds; :class:`NativeBenchmarkResult` holds
milliseconds. Output copied from ``adb logcat`` (``05-30 15:16:44.857  3380  3380 I tflite  : ...``)
is accepted too. Only the standard library is used, so this module can be imported anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

from edgekit.devices.benchmark_log import (
    GENERIC_FAILURE,
    WARNING_SEVERITIES,
    Coverage,
    LogLine,
    clean_line,
    delegate_facts,
    last_invocation,
    most_telling_error,
    warning_text,
)

__all__ = ["NativeBenchmarkResult", "parse_benchmark_output"]

Flavour = Literal["tflite", "litert"]

# A number as C++ iostreams print it: 1250.5, 11403859, 1.14039e+06, nan, inf.
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?nan|[-+]?inf"


# --- classic benchmark_model lines ------------------------------------------------------------
_STATS = re.compile(r"^count=(\d+)(.*)$")
_STATS_FIELD = re.compile(rf"\b(first|curr|min|max|avg|std|p5|median|p95)=({_NUM})")
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
    rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})"
)
# TF 1.x wording: "Average inference timings in us: Warmup: 76605.9, Init: 9933, no stats: 66767.6"
_OLD_TIMINGS = re.compile(rf"Average inference timings in us: Warmup: ({_NUM}), Init: ({_NUM}),")
_SESSION_INIT = re.compile(rf"Initialized session in ({_NUM}) ?ms")
_MEMORY = re.compile(
    rf"(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\): "
    rf"init=({_NUM}) overall=({_NUM})"
)

# --- LiteRT "BENCHMARK RESULTS" block (litert/tools/benchmark_litert_model.h) -----------------
_LITERT_HEADER = re.compile(r"=+ BENCHMARK RESULTS =+")
_LITERT_INIT = re.compile(rf"^Model initialization:\s+({_NUM}) ms")
_LITERT_WARMUP_FIRST = re.compile(rf"^Warmup \(first\):\s+({_NUM}) ms")
_LITERT_WARMUP_AVG = re.compile(rf"^Warmup \(avg\):\s+({_NUM}) ms")
_LITERT_AVG = re.compile(rf"^Inference \(avg\):\s+({_NUM}) ms \((\d+) runs\)")
_LITERT_MIN = re.compile(rf"^Inference \(min\):\s+({_NUM}) ms")
_LITERT_MAX = re.compile(rf"^Inference \(max\):\s+({_NUM}) ms")
_LITERT_STD = re.compile(rf"^Inference \(std\):\s+({_NUM})")
# Printed by the Python mirror of the tool (ai_edge_litert.tools.benchmark_litert_model), not the C++.
_LITERT_MEDIAN = re.compile(rf"^Inference \(median\):\s+({_NUM}) ms")
_LITERT_P5 = re.compile(rf"^Inference \(p5\):\s+({_NUM}) ms")
_LITERT_P95 = re.compile(rf"^Inference \(p95\):\s+({_NUM}) ms")
_LITERT_INIT_MEM = re.compile(rf"^Init footprint:\s+({_NUM}) MB")
_LITERT_OVERALL_MEM = re.compile(rf"^Overall footprint:\s+({_NUM}) MB")
_LITERT_MARKERS = (
    re.compile(r"benchmark_litert_model"),
    re.compile(r"Loading model from: "),
    re.compile(r"LiteRT environment"),
    re.compile(r"accelerator(?:\([^)]*\))? registered"),
)


@dataclass(frozen=True)
class NativeBenchmarkResult:
    """What one run of the native benchmark tool measured, in milliseconds and megabytes.

    Attributes:
        flavour: ``"tflite"`` for the classic ``benchmark_model``, ``"litert"`` for
            ``benchmark_litert_model``.
        count: Number of measured (non-warm-up) inference runs.
        first_ms: Latency of the first measured run (not the first warm-up run).
        min_ms: Fastest measured run.
        max_ms: Slowest measured run.
        avg_ms: Mean latency of the measured runs.
        std_ms: Population standard deviation of the measured runs (the tool truncates it to whole
            microseconds).
        p50_ms: Median of the measured runs when the build prints it (``median=``), else None.
        p5_ms: 5th percentile when printed, else None.
        p95_ms: 95th percentile when printed, else None.
        init_ms: Model load + interpreter/compiled-model initialisation time.
        first_inference_ms: The very first (warm-up) inference, which includes one-off costs such
            as GPU kernel compilation.
        warmup_avg_ms: Mean of the warm-up runs.
        peak_memory_init_mb: The ``init=`` memory figure (MB) printed after initialisation
            (``Peak memory footprint (MB)`` in old builds, ``Memory footprint delta ... (MB)`` in
            newer ones, ``Init footprint`` for LiteRT). The tool calls it approximate.
        peak_memory_overall_mb: The ``overall=`` memory figure (MB) at the end of the run.
        delegate: Delegate that runs (part of) the graph, named as the tool names it: ``"GPU"``,
            ``"NNAPI"``, ``"XNNPACK"``, ``"Hexagon"``...; the kernel name from the
            ``Replacing ...`` line when no better name is known; None when no delegate is
            mentioned.
        delegate_coverage: ``"complete"`` (whole graph on the delegate), ``"partial"`` (some ops
            fall back to the CPU kernels), ``"none"`` (delegate applied but took no node), or None
            when the output does not say.
        delegate_kernels: Number of delegate kernels (partitions handed to the delegate) from the
            ``Explicitly applied ...`` line: 1 when complete, N from ``w/ N delegate kernels``, 0
            when none; None when the tool did not print that line.
        delegated_nodes: ``X`` of ``Replacing X out of Y node(s) with delegate``.
        total_nodes: ``Y`` of that line (None for old builds that print only ``Replacing X
            node(s)``).
        partitions: ``Z`` of ``yielding Z partitions`` (delegated and CPU partitions together).
        raw_warnings: Every ERROR / WARNING / WARN / FATAL line, in order; logcat or glog prefixes
            are reduced to the severity word.
    """

    flavour: Flavour
    count: int
    first_ms: float | None
    min_ms: float | None
    max_ms: float | None
    avg_ms: float
    std_ms: float | None
    p50_ms: float | None
    p5_ms: float | None
    p95_ms: float | None
    init_ms: float | None
    first_inference_ms: float | None
    warmup_avg_ms: float | None
    peak_memory_init_mb: float | None
    peak_memory_overall_mb: float | None
    delegate: str | None
    delegate_coverage: Coverage | None
    delegate_kernels: int | None
    delegated_nodes: int | None
    total_nodes: int | None
    partitions: int | None
    raw_warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Stats:
    """A parsed ``count=...`` line (values still in microseconds, as strings)."""

    count: int
    fields: dict[str, str]



def parse_benchmark_output(text: str) -> NativeBenchmarkResult:
    """Parse the stdout/stderr of ``benchmark_model`` or ``benchmark_litert_model``.

    The flavour is detected from the text. The measured-run statistics come from the last
    ``count=`` line of the last invocation in the text (the tool prints one for the warm-up runs
    and then one for the measured runs); LiteRT's ``BENCHMARK RESULTS`` block is used when that
    line is missing. Microseconds are converted to milliseconds exactly (decimal arithmetic), so
    ``avg=1250.5`` gives ``avg_ms == 1.2505``.

    Args:
        text: Everything the tool printed (stdout and stderr, in any order), or a logcat capture
            of the benchmark app.

    Returns:
        The parsed result.

    Raises:
        ValueError: If the output holds no timing for the measured runs (the binary crashed,
            failed to apply a delegate, ran only the warm-up, ...) or the tool reported
            ``Benchmarking failed.``. The message is one line that names what was missing and
            quotes the most telling error line.
    """
    lines = last_invocation([clean_line(raw) for raw in text.splitlines()])
    flavour: Flavour = "litert" if _looks_like_litert(lines) else "tflite"
    warnings = [warning_text(line) for line in lines if line.severity in WARNING_SEVERITIES]

    stats = [_parse_stats(line.message) for line in lines if _STATS.match(line.message)]
    measured = stats[-1] if len(stats) >= 2 else None
    warmup = stats[-2] if len(stats) >= 2 else (stats[0] if stats else None)
    block = _parse_litert_block(lines) if flavour == "litert" else {}

    failed = any(line.message.strip() == GENERIC_FAILURE for line in lines)
    if failed or not _has_measured_timing(measured, block):
        raise ValueError(_missing_timing_message(lines, stats, measured, block, flavour, failed))

    if measured is not None and measured.count > 0:
        timing = _timing_from_stats(measured)
    else:
        timing = _timing_from_block(block)

    init_ms, first_inference_ms, warmup_avg_ms = _init_and_warmup(lines, block, warmup)
    memory = _memory(lines, block)
    delegate = delegate_facts(lines)

    return NativeBenchmarkResult(
        flavour=flavour,
        count=timing["count"],
        first_ms=timing["first_ms"],
        min_ms=timing["min_ms"],
        max_ms=timing["max_ms"],
        avg_ms=timing["avg_ms"],
        std_ms=timing["std_ms"],
        p50_ms=timing["p50_ms"],
        p5_ms=timing["p5_ms"],
        p95_ms=timing["p95_ms"],
        init_ms=init_ms,
        first_inference_ms=first_inference_ms,
        warmup_avg_ms=warmup_avg_ms,
        peak_memory_init_mb=memory[0],
        peak_memory_overall_mb=memory[1],
        delegate=delegate["delegate"],
        delegate_coverage=delegate["coverage"],
        delegate_kernels=delegate["kernels"],
        delegated_nodes=delegate["delegated_nodes"],
        total_nodes=delegate["total_nodes"],
        partitions=delegate["partitions"],
        raw_warnings=warnings,
    )


# --- line handling -----------------------------------------------------------------------------



def _looks_like_litert(lines: Iterable[LogLine]) -> bool:
    for line in lines:
        if _LITERT_HEADER.search(line.text):
            return True
        if any(marker.search(line.text) for marker in _LITERT_MARKERS):
            return True
    return False


# --- numbers -----------------------------------------------------------------------------------


def _decimal(value: str) -> Decimal | None:
    """The exact decimal value of a printed number; None for nan/inf or garbage."""
    try:
        number = Decimal(value)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _us_to_ms(value: str | None) -> float | None:
    if value is None:
        return None
    number = _decimal(value)
    return None if number is None else float(number / 1000)


def _as_float(value: str | None) -> float | None:
    if value is None:
        return None
    number = _decimal(value)
    return None if number is None else float(number)


# --- timing ------------------------------------------------------------------------------------


def _parse_stats(message: str) -> _Stats:
    match = _STATS.match(message)
    assert match is not None  # callers check first
    fields = dict(_STATS_FIELD.findall(match.group(2)))
    if "first" not in fields and "curr" in fields:
        # "count=1 curr=11403859" / "count=50 curr=3(all same)": every run took the same time.
        for key in ("first", "min", "max", "avg"):
            fields[key] = fields["curr"]
        fields.setdefault("std", "0")
    return _Stats(count=int(match.group(1)), fields=fields)


def _timing_from_stats(stats: _Stats) -> dict:
    f = stats.fields
    avg_ms = _us_to_ms(f.get("avg"))
    assert avg_ms is not None  # a non-empty Stat always prints avg (or curr)
    return {
        "count": stats.count,
        "first_ms": _us_to_ms(f.get("first")),
        "min_ms": _us_to_ms(f.get("min")),
        "max_ms": _us_to_ms(f.get("max")),
        "avg_ms": avg_ms,
        "std_ms": _us_to_ms(f.get("std")),
        "p50_ms": _us_to_ms(f.get("median")),
        "p5_ms": _us_to_ms(f.get("p5")),
        "p95_ms": _us_to_ms(f.get("p95")),
    }


def _parse_litert_block(lines: list[LogLine]) -> dict[str, str]:
    """Values of LiteRT's ``BENCHMARK RESULTS`` block (strings, in ms / MB as printed)."""
    patterns = {
        "init": _LITERT_INIT,
        "warmup_first": _LITERT_WARMUP_FIRST,
        "warmup_avg": _LITERT_WARMUP_AVG,
        "avg": _LITERT_AVG,
        "min": _LITERT_MIN,
        "max": _LITERT_MAX,
        "std": _LITERT_STD,
        "median": _LITERT_MEDIAN,
        "p5": _LITERT_P5,
        "p95": _LITERT_P95,
        "init_mem": _LITERT_INIT_MEM,
        "overall_mem": _LITERT_OVERALL_MEM,
    }
    block: dict[str, str] = {}
    for line in lines:
        for key, pattern in patterns.items():
            match = pattern.match(line.message)
            if match:
                block[key] = match.group(1)
                if key == "avg":
                    block["count"] = match.group(2)
    return block


def _has_measured_timing(measured: _Stats | None, block: dict[str, str]) -> bool:
    if measured is not None and measured.count > 0:
        return True
    return int(block.get("count", "0")) > 0 and _as_float(block.get("avg")) is not None


def _timing_from_block(block: dict[str, str]) -> dict:
    avg_ms = _as_float(block.get("avg"))
    assert avg_ms is not None  # checked by _has_measured_timing
    return {
        "count": int(block["count"]),
        "first_ms": None,
        "min_ms": _as_float(block.get("min")),
        "max_ms": _as_float(block.get("max")),
        "avg_ms": avg_ms,
        "std_ms": _as_float(block.get("std")),
        "p50_ms": _as_float(block.get("median")),
        "p5_ms": _as_float(block.get("p5")),
        "p95_ms": _as_float(block.get("p95")),
    }


def _init_and_warmup(lines: list[LogLine], block: dict[str, str], warmup: _Stats | None) -> tuple[float | None, float | None, float | None]:
    """(init_ms, first_inference_ms, warmup_avg_ms), each from the most precise line carrying it.

    The classic summary line is exact (microseconds). Otherwise the warm-up ``count=`` line is exact
    for the warm-up figures, and for the init time ``Initialized session in X ms`` (6 significant
    digits) and LiteRT's ``Model initialization: X ms`` (2 decimals) compete on precision.
    """
    init_ms = first_ms = warmup_avg_ms = None
    for line in lines:
        match = _TIMINGS.search(line.message)
        if match:
            init_ms = _us_to_ms(match.group(1))
            first_ms = _us_to_ms(match.group(2))
            warmup_avg_ms = _us_to_ms(match.group(3))
            continue
        match = _OLD_TIMINGS.search(line.message)
        if match:
            warmup_avg_ms = _us_to_ms(match.group(1))
            init_ms = _us_to_ms(match.group(2))
    if warmup is not None and warmup.count > 0:
        if first_ms is None:
            first_ms = _us_to_ms(warmup.fields.get("first"))
        if warmup_avg_ms is None:
            warmup_avg_ms = _us_to_ms(warmup.fields.get("avg"))
    if first_ms is None:
        first_ms = _as_float(block.get("warmup_first"))
    if warmup_avg_ms is None:
        warmup_avg_ms = _as_float(block.get("warmup_avg"))
    if init_ms is None:
        candidates = [m.group(1) for line in lines if (m := _SESSION_INIT.search(line.message))][-1:]
        if "init" in block:
            candidates.append(block["init"])
        best = max(candidates, key=_significant_digits, default=None)
        init_ms = _as_float(best)
    return init_ms, first_ms, warmup_avg_ms


def _significant_digits(value: str) -> int:
    """How many significant digits a printed number carries (``734.518`` -> 6, ``734.52`` -> 5)."""
    mantissa = re.split(r"[eE]", value)[0]
    return len(mantissa.replace("-", "").replace("+", "").replace(".", "").lstrip("0"))


def _memory(lines: list[LogLine], block: dict[str, str]) -> tuple[float | None, float | None]:
    init_mb = overall_mb = None
    for line in lines:
        match = _MEMORY.search(line.message)
        if match:
            init_mb, overall_mb = _as_float(match.group(1)), _as_float(match.group(2))
    if init_mb is None and overall_mb is None and block:
        init_mb, overall_mb = _as_float(block.get("init_mem")), _as_float(block.get("overall_mem"))
    return init_mb, overall_mb




def _missing_timing_message(
    lines: list[LogLine],
    stats: list[_Stats],
    measured: _Stats | None,
    block: dict[str, str],
    flavour: Flavour,
    failed: bool,
) -> str:
    tool = "benchmark_litert_model" if flavour == "litert" else "benchmark_model"
    if not any(line.message for line in lines):
        what = "the output is empty"
    elif failed and measured is not None and measured.count > 0:
        what = f"{tool} reported 'Benchmarking failed.' after timing the runs, so the numbers are not trusted"
    elif measured is not None and measured.count == 0:
        what = "the measured runs report count=0 (was --dry_run or --num_runs=0 given?)"
    elif len(stats) == 1:
        what = "only the warm-up 'count=' stats line was found; the measured runs never reported"
    elif flavour == "litert":
        what = "no 'count=' stats line for the measured runs and no 'Inference (avg)' line in a BENCHMARK RESULTS block"
    else:
        what = "no 'count=' stats line for the measured runs (nor an 'Inference timings in us' summary)"
    message = f"{tool} output has no inference timing: {what}"
    error = most_telling_error(lines)
    if error:
        message = f"{message}; error: {error}"
    return " ".join(message.split())


