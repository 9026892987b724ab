"""Tests for edgekit.devices.benchmark_output against recorded benchmark_model / LiteRT outputs.

The fixtures live in tests/fixtures/benchmark_model/ (see the README there for where each line
format comes from). Numbers are asserted exactly: the parser converts microseconds to
milliseconds with decimal arithmetic, so ``avg=1250.5`` must give exactly ``1.2505``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgekit.devices.benchmark_output import NativeBenchmarkResult, parse_benchmark_output

FIXTURES = Path(__file__).parent / "fixtures" / "benchmark_model"


def _fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def _parse(name: str) -> NativeBenchmarkResult:
    return parse_benchmark_output(_fixture(name))


# --- classic benchmark_model ---------------------------------------------------------------------


def test_classic_cpu_xnnpack_takes_the_measured_stats_line_not_the_warmup_one() -> None:
    r = _parse("tflite_cpu_xnnpack.txt")
    assert r.flavour == "tflite"
    # measured runs: count=800 first=1251 curr=1272 min=1168 max=1602 avg=1250.5 std=30
    assert r.count == 800
    assert r.first_ms == 1.251
    assert r.min_ms == 1.168
    assert r.max_ms == 1.602
    assert r.avg_ms == 1.2505
    assert r.std_ms == 0.03
    assert (r.p5_ms, r.p50_ms, r.p95_ms) == (None, None, None)
    # Inference timings in us: Init: 4211, First inference: 2210, Warmup (avg): 1249.28, ...
    assert r.init_ms == 4.211
    assert r.first_inference_ms == 2.21
    assert r.warmup_avg_ms == 1.24928
    assert r.peak_memory_init_mb == 2.83594
    assert r.peak_memory_overall_mb == 3.30859


def test_classic_cpu_default_xnnpack_coverage_comes_from_the_replacing_line() -> None:
    r = _parse("tflite_cpu_xnnpack.txt")
    assert r.delegate == "XNNPACK"
    assert r.delegate_coverage == "partial"  # 63 of 65 nodes, 3 partitions
    assert r.delegate_kernels is None  # no "Explicitly applied" line without --use_xnnpack
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (63, 65, 3)
    assert r.raw_warnings == []


def test_classic_gpu_fully_delegated_old_build_without_log_prefixes() -> None:
    r = _parse("tflite_gpu_full.txt")
    assert r.flavour == "tflite"
    assert r.count == 100
    assert r.first_ms == 11.093
    assert r.min_ms == 10.728
    assert r.max_ms == 12.688
    assert r.avg_ms == 11.0382
    assert r.std_ms == 0.223
    assert r.init_ms == 612.904
    assert r.first_inference_ms == 78.53
    assert r.warmup_avg_ms == 12.7086
    # old wording: "Peak memory footprint (MB): init=7.62891 overall=41.2305"
    assert r.peak_memory_init_mb == 7.62891
    assert r.peak_memory_overall_mb == 41.2305
    assert r.delegate == "GPU"
    assert r.delegate_coverage == "complete"
    assert r.delegate_kernels == 1
    # this build does not print the "Replacing X out of Y node(s)" line
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (None, None, None)


def test_classic_gpu_partial_reports_the_gpu_not_the_xnnpack_leftovers() -> None:
    r = _parse("tflite_gpu_partial.txt")
    assert r.count == 50
    assert r.avg_ms == 23.3598
    assert r.min_ms == 22.687
    assert r.max_ms == 24.97
    assert r.std_ms == 0.345
    assert r.init_ms == 1487.362
    assert r.first_inference_ms == 61.877
    assert r.warmup_avg_ms == 25.4613
    assert r.peak_memory_init_mb == 92.9023
    assert r.peak_memory_overall_mb == 99.4023
    assert r.delegate == "GPU"
    assert r.delegate_coverage == "partial"
    assert r.delegate_kernels == 1
    # GPU line "Replacing 148 out of 151 ... yielding 2 partitions", not XNNPACK's "1 out of 4"
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (148, 151, 2)
    assert r.raw_warnings == ["ERROR: Following operations are not supported by GPU delegate:"]


def test_classic_nnapi_not_delegated_from_a_logcat_capture() -> None:
    r = _parse("tflite_nnapi_none_logcat.txt")
    assert r.flavour == "tflite"
    assert r.count == 50
    assert r.first_ms == 27.402
    assert r.min_ms == 26.354
    assert r.max_ms == 29.986
    assert r.avg_ms == 27.3846
    assert r.std_ms == 0.477
    assert r.init_ms == 57.302
    assert r.first_inference_ms == 34.518
    assert r.warmup_avg_ms == 27.6947
    assert r.peak_memory_init_mb == 17.2109
    assert r.peak_memory_overall_mb == 21.377
    assert r.delegate == "NNAPI"
    assert r.delegate_coverage == "none"
    assert r.delegate_kernels == 0
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (None, None, None)


def test_newer_classic_build_with_percentiles_and_two_delegates() -> None:
    r = _parse("tflite_gpu_nnapi_percentiles.txt")
    # count=100 first=15877 curr=15764 min=15167 max=17320 avg=15812.1 std=279 p5=15427 median=15809 p95=16187
    assert r.count == 100
    assert r.first_ms == 15.877
    assert r.min_ms == 15.167
    assert r.max_ms == 17.32
    assert r.avg_ms == 15.8121
    assert r.std_ms == 0.279
    assert r.p5_ms == 15.427
    assert r.p50_ms == 15.809
    assert r.p95_ms == 16.187
    assert r.init_ms == 1873.518
    assert r.first_inference_ms == 41.873
    assert r.warmup_avg_ms == 16.9236
    assert r.peak_memory_init_mb == 156.76
    assert r.peak_memory_overall_mb == 159.516
    # GPU took the whole graph; NNAPI, applied second, took nothing: the GPU is what ran.
    assert r.delegate == "GPU"
    assert r.delegate_coverage == "complete"
    assert r.delegate_kernels == 1
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (121, 121, 1)


# --- LiteRT benchmark_litert_model ---------------------------------------------------------------


def test_litert_cpu() -> None:
    r = _parse("litert_cpu.txt")
    assert r.flavour == "litert"
    # the count= line (exact microseconds) wins over the 2-decimal BENCHMARK RESULTS block
    assert r.count == 127
    assert r.first_ms == 7.911
    assert r.min_ms == 7.636
    assert r.max_ms == 8.84
    assert r.avg_ms == 7.89206
    assert r.std_ms == 0.125
    assert (r.p5_ms, r.p50_ms, r.p95_ms) == (7.725, 7.875, 8.07)
    assert r.init_ms == 48.213  # "Initialized session in 48.213ms." beats "Model initialization: 48.21 ms"
    assert r.first_inference_ms == 12.944
    assert r.warmup_avg_ms == 8.02216
    assert r.peak_memory_init_mb == 21.43
    assert r.peak_memory_overall_mb == 27.61
    assert r.delegate == "XNNPACK"
    assert r.delegate_coverage == "complete"
    assert r.delegate_kernels is None
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (126, 126, 1)
    assert r.raw_warnings == [
        "WARNING: [npu_registry.cc:34] NPU accelerator could not be loaded and registered: kLiteRtStatusErrorInvalidArgument.",
        "WARNING: [gpu_registry.cc:124] GPU accelerator could not be loaded and registered.",
    ]


def test_litert_gpu() -> None:
    r = _parse("litert_gpu.txt")
    assert r.flavour == "litert"
    assert r.count == 206
    assert r.avg_ms == 4.8577
    assert r.min_ms == 4.655
    assert r.max_ms == 5.722
    assert r.std_ms == 0.093
    assert r.p50_ms == 4.854
    assert r.init_ms == 734.518
    assert r.first_inference_ms == 31.208
    assert r.warmup_avg_ms == 5.15727
    assert r.peak_memory_init_mb == 182.92
    assert r.peak_memory_overall_mb == 188.13
    assert r.delegate == "GPU"  # kernel name LITERT_CL
    assert r.delegate_coverage == "complete"
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (178, 178, 1)


def test_litert_block_alone_is_enough_when_the_stats_lines_are_missing() -> None:
    # e.g. only stderr was captured: LITERT_LOG goes to stderr, TFLITE_LOG (count=...) to stdout.
    text = "\n".join(line for line in _fixture("litert_cpu.txt").splitlines() if "count=" not in line)
    r = parse_benchmark_output(text)
    assert r.flavour == "litert"
    assert r.count == 127
    assert r.avg_ms == 7.89
    assert r.min_ms == 7.64
    assert r.max_ms == 8.84
    assert r.std_ms == 0.12
    assert r.first_ms is None
    assert r.p50_ms is None
    assert r.first_inference_ms == 12.94
    assert r.warmup_avg_ms == 8.02


# --- failures ------------------------------------------------------------------------------------


def test_failed_gpu_delegate_raises_a_one_line_error_naming_the_cause() -> None:
    with pytest.raises(ValueError) as excinfo:
        _parse("tflite_gpu_failure.txt")
    message = str(excinfo.value)
    assert "\n" not in message
    assert "no inference timing" in message
    assert "count=" in message  # names what was missing
    assert "Failed to apply GPU delegate." in message
    assert "TfLiteGpuDelegate Init: FromTensorConverter: Batch size != 1 is not supported." in message


def test_warmup_only_output_is_not_mistaken_for_the_measured_runs() -> None:
    # Cut the CPU fixture right after the warm-up stats line (the process died mid-run).
    lines = _fixture("tflite_cpu_xnnpack.txt").splitlines()
    cut = next(i for i, line in enumerate(lines) if line.startswith("INFO: count=402"))
    text = "\n".join([*lines[: cut + 1], "Segmentation fault"])
    with pytest.raises(ValueError, match=r"only the warm-up 'count=' stats line.*Segmentation fault"):
        parse_benchmark_output(text)


def test_benchmarking_failed_after_timing_is_still_an_error() -> None:
    text = _fixture("tflite_cpu_xnnpack.txt") + ("ERROR: Node number 12 (CONV_2D) failed to invoke.\nERROR: Benchmarking failed.\n")
    with pytest.raises(ValueError, match=r"Benchmarking failed.*Node number 12 \(CONV_2D\) failed to invoke"):
        parse_benchmark_output(text)


def test_missing_binary_and_empty_output() -> None:
    with pytest.raises(ValueError, match="/data/local/tmp/benchmark_model: inaccessible or not found"):
        parse_benchmark_output("/system/bin/sh: /data/local/tmp/benchmark_model: inaccessible or not found\n")
    with pytest.raises(ValueError, match="output is empty"):
        parse_benchmark_output("")


def test_dry_run_count_zero_raises() -> None:
    text = "\n".join(
        [
            "INFO: STARTING!",
            "INFO: Running benchmark for at least 0 iterations and at least -1 seconds but terminate if exceeding 150 seconds.",
            "INFO: count=0",
            "",
            "INFO: Running benchmark for at least 0 iterations and at least -1 seconds but terminate if exceeding 150 seconds.",
            "INFO: count=0",
            "",
            "INFO: Inference timings in us: Init: 4211, First inference: 0, Warmup (avg): nan, Inference (avg): nan",
        ]
    )
    with pytest.raises(ValueError, match="count=0"):
        parse_benchmark_output(text)


# --- robustness ----------------------------------------------------------------------------------


def test_op_profiling_summary_lines_do_not_replace_the_measured_stats() -> None:
    # --enable_op_profiling=true appends StatsCalculator::GetShortSummary() after the summary.
    text = _fixture("tflite_cpu_xnnpack.txt") + (
        "Timings (microseconds): count=800 first=1190 curr=1201 min=1102 max=1544 avg=1188.1 std=29\n"
        "Memory (bytes): count=0\n"
        "65 nodes observed\n"
    )
    r = parse_benchmark_output(text)
    assert r.avg_ms == 1.2505
    assert r.first_ms == 1.251


def test_crlf_and_repeated_invocations_use_the_last_run() -> None:
    first = _fixture("tflite_gpu_full.txt")
    second = _fixture("tflite_cpu_xnnpack.txt")
    r = parse_benchmark_output((first + second).replace("\n", "\r\n"))
    assert r.avg_ms == 1.2505
    assert r.delegate == "XNNPACK"


def test_all_same_stats_line_and_scientific_notation() -> None:
    # Stat::OutputToStream prints "count=N curr=X(all same)" when min == max, and iostreams print
    # large averages in %g form, e.g. "Warmup (avg): 1.14039e+06".
    text = "\n".join(
        [
            "count=1 curr=1140390",
            "",
            "count=3 curr=3756(all same)",
            "",
            "Inference timings in us: Init: 13386, First inference: 1140390, Warmup (avg): 1.14039e+06, Inference (avg): 3756",
        ]
    )
    r = parse_benchmark_output(text)
    assert r.count == 3
    assert (r.first_ms, r.min_ms, r.max_ms, r.avg_ms, r.std_ms) == (3.756, 3.756, 3.756, 3.756, 0.0)
    assert r.warmup_avg_ms == 1140.39
    assert r.first_inference_ms == 1140.39
    assert r.init_ms == 13.386
    assert r.delegate is None
    assert r.delegate_coverage is None


def test_old_replacing_line_without_total_and_brief_logcat_format() -> None:
    text = "\n".join(
        [
            "I/tflite  (12345): Created TensorFlow Lite delegate for GPU.",
            "I/tflite  (12345): Replacing 31 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions.",
            "W/tflite  (12345): Tensor # 0 is named input but flags call it x",
            "I/tflite  (12345): count=9 first=5120 curr=4410 min=4377 max=5120 avg=4512.2 std=221",
            "I/tflite  (12345): count=50 first=4433 curr=4398 min=4361 max=4601 avg=4421.06 std=41",
        ]
    )
    r = parse_benchmark_output(text)
    assert r.avg_ms == 4.42106
    assert r.first_inference_ms == 5.12  # from the warm-up stats line, no summary line here
    assert r.warmup_avg_ms == 4.5122
    assert r.delegate == "GPU"
    assert r.delegate_coverage == "complete"  # one partition, and it is the delegate's
    assert (r.delegated_nodes, r.total_nodes, r.partitions) == (31, None, 1)
    assert r.raw_warnings == ["WARNING: Tensor # 0 is named input but flags call it x"]


def test_result_is_frozen() -> None:
    r = _parse("tflite_cpu_xnnpack.txt")
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.avg_ms = 0.0  # type: ignore[misc]


def test_op_profiling_table_of_the_timed_runs():
    """`--enable_op_profiling=true`: the per-node table of the regular runs, not of initialisation."""
    from edgekit.devices.benchmark_ops import parse_op_profiling

    text = (FIXTURES / "tflite_cpu_op_profiling.txt").read_text()
    rows = parse_op_profiling(text)
    assert len(rows) == 10
    assert [r.node_type for r in rows[:2]] == ["Convert (NC, F32, QS8)", "Convolution (NHWC, QC8)"]
    assert rows[1].avg_ms == 0.055 and rows[1].percent == 50.459 and rows[1].delegate == "XNNPACK"
    assert rows[-1].node_type == "DEQUANTIZE" and rows[-1].delegate is None and not rows[-1].overhead
    assert sum(r.percent for r in rows) == pytest.approx(100.0, abs=0.01)
    # the whole fixture still parses as a benchmark run
    assert parse_benchmark_output(text).avg_ms == pytest.approx(0.11962)


def test_op_profiling_litert_overhead_rows_are_marked():
    from edgekit.devices.benchmark_ops import parse_op_profiling

    text = "\n".join([
        "============================== Run Order ==============================",
        "\t[node type]\t[first]\t[avg ms]\t[%]\t[cdf%]\t[mem KB]\t[times called]\t[Name]",
        "\tLiteRT::Run[Buffer sync]\t0.013\t0.012\t2.982%\t2.982%\t0.000\t1\tLiteRT::Run[Buffer sync]/0",
        "\tAllocateTensors\t0.291\t0.291\t0.022%\t3.004%\t452.000\t0\tAllocateTensors/0",
        "\tFully Connected (NC, PF32) GEMM\t0.538\t0.382\t96.996%\t100.000%\t0.000\t1\tDelegate/Fully Connected (NC, PF32) GEMM:1",
        "",
    ])
    rows = parse_op_profiling(text)
    assert [r.overhead for r in rows] == [True, True, False]
    assert parse_op_profiling("no profile here") == ()
