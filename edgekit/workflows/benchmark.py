"""``edgekit benchmark``: the latency of one artifact on one device, with the conditions it was taken under.

Example:
    >>> report = benchmark("model_int8.tflite", device="raspberry-pi-5", runs=100)  # doctest: +SKIP
    >>> report.latency.p50_ms, report.throttled  # doctest: +SKIP
    (3.2, False)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from edgekit.core.datatypes import LatencyStats, SizeInfo
from edgekit.core.fsutil import require_file, sha256_file, size_info
from edgekit.core.manifest import check_integrity, versions
from edgekit.core.tflite_verify import read_verified_tflite
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.devices.run import run_model
from edgekit.export.delegates import check_compatibility
from edgekit.measure.noise import LatencySpread, compare_speed, spread_of
from edgekit.measure.op_profile import OpProfile, profile_ops
from edgekit.runtime.local import check_run_options
from edgekit.workflows.fleet import run_fleet


@dataclass(frozen=True)
class ThreadRow:
    """One thread count of a thread sweep: its latency interval and its speed-up over the first count."""

    threads: int
    spread: LatencySpread
    speedup: float  # first row's p50 / this row's p50
    efficiency: float  # speedup / (threads / first row's threads)

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "p50_ms": round(self.spread.p50.value, 5), "p50_low_ms": round(self.spread.p50.low, 5),
                "p50_high_ms": round(self.spread.p50.high, 5), "p90_ms": round(self.spread.p90.value, 5),
                "speedup": round(self.speedup, 3), "efficiency": round(self.efficiency, 3)}


@dataclass(frozen=True)
class BenchmarkReport:
    """What ``edgekit benchmark`` measured: latency of one artifact on one device."""

    artifact: str
    sha256: str
    size: SizeInfo
    latency: LatencyStats
    device: dict[str, Any]
    versions: dict[str, Any] = field(default_factory=dict)
    op_profile: OpProfile | None = None
    thread_sweep: tuple[ThreadRow, ...] = ()
    accelerator: dict[str, Any] | None = None  # the CompiledModel run: fully accelerated?, offline check, vs the CPU

    @property
    def throttled(self) -> bool:
        return bool(self.device.get("thermal", {}).get("throttled"))

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact, "sha256": self.sha256, "size": self.size.to_dict(),
                "latency": self.latency.to_dict(), "device": self.device, "versions": self.versions,
                "op_profile": self.op_profile.to_dict() if self.op_profile else None,
                "accelerator": self.accelerator,
                "thread_sweep": [row.to_dict() for row in self.thread_sweep]}


def sweep_threads(profile: DeviceProfile, path: Any, counts: tuple[int, ...], *, runs: int, warmup: int, rounds: int = 3,
                  runtime: str | None = None) -> tuple[ThreadRow, ...]:
    """Latency at each thread count, timed in interleaved rounds (1, 2, 4, 1, 2, 4, ...)."""
    timings: dict[int, list[list[float]]] = {t: [] for t in counts}
    for _ in range(rounds):
        for t in counts:
            done = run_model(profile, path, None, threads=t, runs=runs, warmup=warmup, runtime=runtime)
            timings[t].append(list(done.run.timings_ms))
    spreads = {t: spread_of(timings[t]) for t in counts}
    base = spreads[counts[0]].p50.value
    return tuple(ThreadRow(threads=t, spread=spreads[t], speedup=base / spreads[t].p50.value,
                           efficiency=(base / spreads[t].p50.value) / (t / counts[0])) for t in counts)


def benchmark(
    artifact: str | os.PathLike[str],
    *,
    device: str | DeviceProfile = "local",
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = None,
    runtime: str | None = None,
    target: str | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
    profile_operators: bool = False,
    thread_counts: tuple[int, ...] = (),
    accelerator: str | None = None,
    timeout: float | None = None,
    ignore_manifest: bool = False,
) -> BenchmarkReport:
    """Measures the latency of ``artifact`` on ``device`` (synthetic input, no accuracy).

    The run always goes through the device path (probe, runtime choice, thermal state before and
    after, a fresh work folder), this machine included, so the report says what it ran under.

    Args:
        artifact: the .tflite file.
        device: a profile name, a profile path, or a :class:`DeviceProfile` (default: this machine).
        runs, warmup: timed and untimed inference runs.
        threads: interpreter threads; None: the profile's ``threads``.
        runtime: ``auto`` or a runtime name; None: the profile's ``runner.runtime``.
        target: Android only: a key of the profile's ``benchmark.targets``.
        devices_dir: a folder of the user's own device profiles.
        profile_operators: also time every operator (:func:`edgekit.measure.op_profile.profile_ops`).
        thread_counts: two or more thread counts: also a thread sweep in interleaved rounds.
        accelerator: ``cpu`` or ``gpu``: run through LiteRT's CompiledModel on that accelerator (this
            machine); the report says whether the model was fully accelerated, what ``check --target
            gpu`` predicted, and how the run compares with the CPU Interpreter (interleaved rounds).

    Raises:
        InputError: a bad option or an unknown device (before anything runs).
        DeviceError, RuntimeFailure: the device or the runtime failed.
    """
    profile = load_profile(device, devices_dir=devices_dir)
    check_run_options(runs, warmup, threads if threads is not None else 1)
    path = require_file(artifact, "artifact")
    read_verified_tflite(path)  # parse and bounds-check before any runtime sees the file
    check_integrity(path, ignore=ignore_manifest)  # a modified edgekit artifact is refused
    for t in thread_counts:
        check_run_options(runs, warmup, t)
    if accelerator is not None:
        return _accelerated(path, profile, accelerator, threads=threads, runs=runs, warmup=warmup)
    result = run_model(profile, path, None, threads=threads, runs=runs, warmup=warmup, runtime=runtime, target=target, with_probe=True,
                       timeout_s=timeout)
    ops = None
    if profile_operators:
        ops = profile_ops(path, profile, threads=result.latency.threads, runs=max(10, min(runs, 50)), warmup=warmup)
    sweep = sweep_threads(profile, path, thread_counts, runs=runs, warmup=warmup, runtime=runtime) if len(thread_counts) > 1 else ()
    return BenchmarkReport(artifact=str(path), sha256=sha256_file(path), size=size_info(path), latency=result.latency,
                           device=result.report, versions=versions(), op_profile=ops, thread_sweep=sweep)


def _accelerated(path: Any, profile: DeviceProfile, accelerator: str, *, threads: int | None, runs: int, warmup: int,
                 rounds: int = 3) -> BenchmarkReport:
    """The CompiledModel run on ``accelerator``, timed in interleaved rounds with the CPU Interpreter."""
    acc_runs, cpu_runs = [], []
    done = None
    for _ in range(rounds):
        done = run_model(profile, path, None, threads=threads, runs=runs, warmup=warmup, accelerator=accelerator)
        acc_runs.append(list(done.run.timings_ms))
        cpu_runs.append(list(run_model(profile, path, None, threads=threads, runs=runs, warmup=warmup).run.timings_ms))
    assert done is not None
    speed = compare_speed(spread_of(acc_runs), spread_of(cpu_runs))
    fully = done.report.get("fully_accelerated")
    details: dict[str, Any] = {"name": accelerator, "fully_accelerated": fully, "vs_cpu_interpreter": speed.to_dict(),
                               "verdict": speed.sentence(f"CompiledModel ({accelerator})", "the CPU Interpreter")}
    if accelerator == "gpu":
        predicted = check_compatibility(read_verified_tflite(path), "gpu").full_coverage
        details["check_target_gpu_predicted_full"] = predicted
        if fully is not None and predicted != fully:
            details["warning"] = (f"check --target gpu predicted {'full' if predicted else 'partial'} coverage but the accelerator reports "
                                  f"{'full' if fully else 'partial'} acceleration: trust the accelerator, and report the op")
    latency = LatencyStats.from_samples([t for r in acc_runs for t in r], warmup=warmup, threads=done.latency.threads,
                                        first_inference_ms=done.latency.first_inference_ms, init_ms=done.latency.init_ms,
                                        peak_memory_mb=done.latency.peak_memory_mb, runtime=done.latency.runtime,
                                        model_init_mb=done.latency.model_init_mb, model_overall_mb=done.latency.model_overall_mb)
    return BenchmarkReport(artifact=str(path), sha256=sha256_file(path), size=size_info(path), latency=latency, device=done.report,
                           versions=versions(), accelerator=details)


def benchmark_fleet(artifact: str | os.PathLike[str], devices: Any, *, max_parallel: int | None = None, runs: int = 50, warmup: int = 5,
                    threads: int | None = None, runtime: str | None = None, target: str | None = None, timeout: float | None = None,
                    ignore_manifest: bool = False, ray_address: str | None = None) -> Any:
    """:func:`benchmark` on several devices at once (``devices``: profiles from
    :func:`edgekit.workflows.fleet.load_fleet`); one row per device with its report or its error.

    The artifact is checked once before any device runs (a bad file fails the command, not a row).
    """
    check_run_options(runs, warmup, threads if threads is not None else 1)
    path = require_file(artifact, "artifact")
    read_verified_tflite(path)
    check_integrity(path, ignore=ignore_manifest)

    def measure(profile: DeviceProfile) -> BenchmarkReport:
        return benchmark(path, device=profile, runs=runs, warmup=warmup, threads=threads, runtime=runtime,
                         target=target if profile.transport == "adb" else None, timeout=timeout, ignore_manifest=ignore_manifest)

    return run_fleet(list(devices), measure, command="benchmark", max_parallel=max_parallel, ray_address=ray_address)
