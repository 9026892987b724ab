"""Runs an artifact on a device and brings back outputs, latency and the conditions of the run.

- Linux devices (``local``, ``ssh``): edgekit's self-contained runner (:mod:`edgekit.runtime.runner`) is
  copied to a fresh work folder with the model and the preprocessed inputs, runs there with the
  runtime the probe chose, and its outputs come back: accuracy is computed here from the
  device's own outputs, i.e. on the device's kernels.
- Android (``adb``): the user's ``benchmark_model`` (sha256 checked before it is pushed) measures
  latency on the phone with the target's options (CPU, ``--use_gpu``, ``--use_nnapi``...). It
  cannot return outputs, so accuracy is measured on this host with edgekit's runner and the
  report says so (``accuracy_measured_on: host``).

The thermal state is read before and after; a throttled run is flagged in the report. The work
folder on the device is removed afterwards, also when the run fails.

Example:
    >>> result = run_on_device("raspberry-pi-4", "model_int8.tflite", x_val)  # doctest: +SKIP
    >>> result.latency.p50_ms, result.report["runtime"]  # doctest: +SKIP
    (4.81, {'name': 'tflite_runtime', 'version': '2.14.0'})
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.datatypes import LatencyStats
from edgekit.core.errors import DeviceError, InputError, MemoryLimit, RuntimeFailure
from edgekit.core.fsutil import sha256_file
from edgekit.devices.benchmark_ops import parse_op_profiling
from edgekit.devices.benchmark_output import NativeBenchmarkResult, parse_benchmark_output
from edgekit.devices.connect import open_transport
from edgekit.devices.probe import (
    DeviceProbe,
    probe_android,
    probe_linux,
    python_argv,
    python_failure,
    read_thermal,
    runner_env,
    thermal_verdict,
)
from edgekit.devices.profiles import DeviceProfile, load_profile
from edgekit.devices.transport import Transport, work_dir
from edgekit.runtime.local import (
    Inputs,
    RunResult,
    check_run_options,
    latency_stats,
    load_run_result,
    memory_limit_mb,
    run_local,
    save_inputs,
)


@dataclass(frozen=True)
class DeviceRun:
    """One run on a device: raw results, latency statistics and the report's ``device`` entry."""

    run: RunResult
    latency: LatencyStats
    report: dict[str, Any]

    @property
    def throttled(self) -> bool:
        return bool(self.report.get("thermal", {}).get("throttled"))


def _taskset(profile: DeviceProfile, android: bool) -> list[str]:
    if profile.cpu_affinity is None:
        return []
    return ["taskset", profile.affinity_mask()] if android else ["taskset", "-c", profile.affinity_list()]  # type: ignore[list-item]


def _base_report(profile: DeviceProfile, probe: DeviceProbe, threads: int) -> dict[str, Any]:
    return {
        "name": profile.name,
        "transport": profile.transport,
        "address": profile.address,
        "profile": profile.source,
        "description": profile.description,
        "threads": threads,
        "cpu_affinity": profile.affinity_list(),
        "probe": probe.to_dict(),
    }


def _warnings(probe: DeviceProbe, thermal: dict[str, Any]) -> list[str]:
    warnings = list(probe.warnings)
    if thermal["throttled"]:
        warnings.append("the device was throttled (" + "; ".join(thermal["reasons"]) + "): latency is not representative")
    if not thermal["readable"]:
        warnings.append("the thermal state could not be read: throttling cannot be ruled out")
    return warnings


def _run_linux(transport: Transport, model: Path, inputs: Inputs | None, *, threads: int, runs: int, warmup: int,
               runtime: str | None) -> DeviceRun:
    profile = transport.profile
    with tempfile.TemporaryDirectory(prefix="edgekit-device-") as tmp:
        host = Path(tmp)
        with work_dir(transport) as work:
            probe = probe_linux(transport, work, runtime=runtime, require_runtime=True, verify_single=False)
            assert probe.runtime is not None
            model_copy = host / "model.tflite"
            model_copy.write_bytes(model.read_bytes())  # a fixed, shell-safe name on the device
            files = [model_copy]
            argv = [*_taskset(profile, android=False), *python_argv(profile), f"{work}/runner.py",
                    "--model", f"{work}/model.tflite", "--result", f"{work}/result.json",
                    "--threads", str(threads), "--runs", str(runs), "--warmup", str(warmup), "--runtime", probe.runtime.runtime]
            if inputs is not None:
                saved = save_inputs(host, inputs)
                files.append(saved)
                argv += ["--inputs", f"{work}/{saved.name}", "--outputs", f"{work}/outputs.npz"]
            memory_mb = memory_limit_mb(model, inputs)
            if memory_mb:
                argv += ["--memory-limit-mb", str(memory_mb)]
            transport.push(files, work)
            before = probe.thermal
            done = transport.run(argv, timeout_s=profile.runner_settings.timeout_s, env=runner_env(profile))
            after = read_thermal(transport)
            if not done.ok:
                if "memory limit of" in done.stderr:
                    message = next(ln for ln in done.stderr.splitlines() if "memory limit of" in ln).replace("EDGEKIT_ERROR: ", "")
                    raise MemoryLimit(f"{profile.name}: {model.name}: {message.strip()}",
                                      hint="run fewer --samples, or raise the limit with EDGEKIT_MEMORY_LIMIT_MB=N (0: none)")
                raise python_failure(done, profile, f"running {model.name} with {probe.runtime.runtime} {probe.runtime.version}")
            transport.pull(f"{work}/result.json", host / "result.json")
            outputs_path = None
            if inputs is not None:
                outputs_path = host / "outputs.npz"
                transport.pull(f"{work}/outputs.npz", outputs_path)
            run = load_run_result(host / "result.json", outputs_path)
        thermal = thermal_verdict(before, after, profile.thermal.throttle_temp_c)
    report = _base_report(profile, probe, threads)
    report.update({
        "runtime": {"name": run.runtime, "version": run.runtime_version},
        "accuracy_measured_on": "device" if inputs is not None else None,
        "latency_measured_by": f"edgekit runner ({run.runtime} {run.runtime_version} Interpreter, Python {run.meta.get('python')} on {run.meta.get('machine')})",
        "command": argv,
        "thermal": thermal,
        "work_dir": work,
        "work_dir_removed": True,
        "warnings": _warnings(probe, thermal),
    })
    return DeviceRun(run=run, latency=latency_stats(run), report=report)


def _nan_if_none(value: float | None) -> float:
    return math.nan if value is None else float(value)


def latency_from_native(native: NativeBenchmarkResult, *, threads: int, warmup: int, runtime: str) -> LatencyStats:
    """LatencyStats from benchmark_model's aggregate statistics.

    The tool prints count, min, max, mean and std (and the median in newer builds), not the
    per-run timings: p50 is the printed median or NaN, p90 and p99 are NaN.
    """
    return LatencyStats(
        runs=native.count, warmup=warmup, threads=threads, mean_ms=native.avg_ms, std_ms=_nan_if_none(native.std_ms),
        min_ms=_nan_if_none(native.min_ms), max_ms=_nan_if_none(native.max_ms), p50_ms=_nan_if_none(native.p50_ms),
        p90_ms=math.nan, p99_ms=math.nan, first_inference_ms=_nan_if_none(native.first_inference_ms),
        init_ms=_nan_if_none(native.init_ms), peak_memory_mb=native.peak_memory_overall_mb, runtime=runtime,
        # benchmark_model's "Memory footprint delta from the start of the tool": already what the model adds
        model_init_mb=native.peak_memory_init_mb, model_overall_mb=native.peak_memory_overall_mb,
    )


def _check_binary(profile: DeviceProfile) -> Path:
    settings = profile.benchmark_settings
    if settings.binary is None:
        raise DeviceError(
            f"{profile.name}: the profile names no benchmark binary (benchmark.binary)",
            hint=f"build benchmark_model for android_arm64, then set benchmark.binary and benchmark.sha256 in a copy of the profile "
                 f"(edgekit devices show {profile.name} > DIR/myphone.yaml, then --devices-dir DIR)",
        )
    path = Path(settings.binary)
    if not path.is_file():
        raise DeviceError(f"{profile.name}: benchmark binary {path} does not exist", hint="fix benchmark.binary in the profile")
    actual = sha256_file(path)
    if actual != settings.sha256:
        raise DeviceError(
            f"{profile.name}: benchmark binary {path} has sha256 {actual[:16]}..., the profile pins {str(settings.sha256)[:16]}...",
            hint="it is not the binary you pinned: rebuild it, or update benchmark.sha256 if you replaced it on purpose",
        )
    return path


def _run_android(transport: Transport, model: Path, inputs: Inputs | None, *, threads: int, runs: int, warmup: int,
                 target: str | None, runtime: str | None) -> DeviceRun:
    profile = transport.profile
    settings = profile.benchmark_settings
    target_name = target or settings.default_target
    if target_name not in settings.targets:
        raise InputError(f"{profile.name} has no target '{target_name}' (targets: {', '.join(settings.targets)})",
                         hint="pick one with --target or add it under benchmark.targets in the profile")
    binary = _check_binary(profile)  # before anything reaches the phone
    probe = probe_android(transport)
    with work_dir(transport) as work:
        with tempfile.TemporaryDirectory(prefix="edgekit-device-") as tmp:
            model_copy = Path(tmp) / "model.tflite"
            model_copy.write_bytes(model.read_bytes())
            transport.push([binary, model_copy], work)
        remote_binary = f"{work}/{binary.name}"
        chmod = transport.run(["chmod", "755", remote_binary], timeout_s=60)
        if not chmod.ok:
            raise DeviceError(f"{profile.name}: cannot make {remote_binary} executable ({chmod.tail()})", hint="check benchmark.work_root")
        argv = [*_taskset(profile, android=True), remote_binary, f"--graph={work}/model.tflite", f"--num_threads={threads}",
                f"--num_runs={runs}", f"--warmup_runs={max(warmup, 1)}", "--min_secs=0", "--warmup_min_secs=0",
                *settings.targets[target_name].args, *settings.extra_args]
        before = probe.thermal
        done = transport.run(argv, timeout_s=settings.timeout_s)
        after = read_thermal(transport)
    output = done.stdout + "\n" + done.stderr
    if done.signal_name:
        raise RuntimeFailure(f"{profile.name}: {binary.name} crashed with {done.signal_name} (target {target_name})",
                             hint="try another target, or run the same command with adb shell to see the log")
    try:
        native = parse_benchmark_output(output)
    except ValueError as exc:
        raise RuntimeFailure(f"{profile.name}: {binary.name} (target {target_name}): {exc}", hint="rerun with -v, or run the binary by hand with adb shell") from None
    if done.returncode != 0:
        raise RuntimeFailure(f"{profile.name}: {binary.name} exited with code {done.returncode}: {done.tail()}")
    thermal = thermal_verdict(before, after, profile.thermal.throttle_temp_c)
    latency = latency_from_native(native, threads=threads, warmup=max(warmup, 1), runtime=f"{binary.name} ({native.flavour} flavour, target {target_name})")
    outputs: list[np.ndarray] = []
    host_runtime = None
    if inputs is not None:
        host = run_local(model, inputs, threads=threads, runs=1, warmup=0, runtime=runtime or "auto")
        outputs = host.outputs
        host_runtime = f"{host.runtime} {host.runtime_version} on {host.meta.get('machine')}"
    run = RunResult(outputs=outputs, timings_ms=[], init_ms=latency.init_ms, first_inference_ms=latency.first_inference_ms,
                    peak_rss_mb=native.peak_memory_overall_mb, baseline_rss_mb=None, runtime=binary.name,
                    runtime_version=native.flavour, threads=threads, warmup=warmup, meta={"native": native.__dict__})
    warnings = _warnings(probe, thermal)
    if native.delegate_coverage == "partial":
        warnings.append(f"the {native.delegate} delegate runs only part of the graph ({native.delegated_nodes} of {native.total_nodes} nodes): the rest falls back to the CPU")
    elif native.delegate_coverage == "none":
        warnings.append(f"the {native.delegate} delegate took no node: everything ran on the CPU")
    report = _base_report(profile, probe, threads)
    report.update({
        "target": target_name,
        "runtime": {"name": binary.name, "version": None, "flavour": native.flavour, "sha256": profile.benchmark_settings.sha256},
        "accuracy_measured_on": "host" if inputs is not None else None,
        "accuracy_note": (f"benchmark_model returns no outputs: accuracy was measured on this host ({host_runtime}), not on the phone's kernels"
                          if inputs is not None else None),
        "latency_measured_by": f"{binary.name} ({native.flavour} flavour) on the device, target {target_name}; "
                               "it prints aggregate statistics only (no p90/p99)",
        "native_benchmark": {k: v for k, v in native.__dict__.items()},
        # --enable_op_profiling=true in the target's or profile's args: the tool's per-node table
        "op_profile": [dataclasses.asdict(r) for r in parse_op_profiling(output)],
        "command": argv,
        "thermal": thermal,
        "work_dir": work,
        "work_dir_removed": True,
        "warnings": warnings,
    })
    return DeviceRun(run=run, latency=latency, report=report)


def run_on_device(
    device: str | DeviceProfile,
    model_path: str | os.PathLike[str],
    inputs: Inputs | None = None,
    *,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 5,
    runtime: str | None = None,
    target: str | None = None,
    devices_dir: str | os.PathLike[str] | None = None,
) -> DeviceRun:
    """Runs a (pre-checked) .tflite file on a device; see the module docstring.

    Args:
        device: a profile name, a profile path, or a :class:`DeviceProfile`.
        model_path: the .tflite file (check it with :func:`edgekit.core.tflite_file.read_tflite` first).
        inputs: preprocessed float32 samples (N, ...) for accuracy, or None for latency only.
        threads: interpreter threads; None: the profile's ``threads``.
        runtime: ``auto`` or a runtime name; None: the profile's ``runner.runtime``.
        target: Android only: a key of ``benchmark.targets`` (default: ``benchmark.default_target``).

    Raises:
        DeviceError: the device is unreachable or lacks what the run needs.
        RuntimeFailure: the runtime failed or crashed on the device.
    """
    profile = load_profile(device, devices_dir=devices_dir)
    threads = profile.threads if threads is None else threads
    check_run_options(runs, warmup, threads)
    if target is not None and profile.transport != "adb":
        raise InputError(f"--target is for Android devices; {profile.name} runs edgekit's runner", hint="drop --target")
    model = Path(model_path)
    transport = open_transport(profile)
    try:
        if profile.transport == "adb":
            return _run_android(transport, model, inputs, threads=threads, runs=runs, warmup=warmup, target=target, runtime=runtime)
        return _run_linux(transport, model, inputs, threads=threads, runs=runs, warmup=warmup, runtime=runtime)
    finally:
        transport.close()


def runs_here(profile: DeviceProfile) -> bool:
    """Whether a run on ``profile`` is a plain child process on this machine (no probe, no pinning, no custom runner)."""
    return profile.transport == "local" and profile.cpu_affinity is None and profile.runner is None


def run_model(
    profile: DeviceProfile,
    model_path: str | os.PathLike[str],
    inputs: Inputs | None = None,
    *,
    threads: int | None = None,
    runs: int = 50,
    warmup: int = 5,
    runtime: str | None = None,
    target: str | None = None,
    with_probe: bool = False,
    accelerator: str | None = None,
    timeout_s: float | None = None,
) -> DeviceRun:
    """Runs a (pre-checked) .tflite file on ``profile``: where every measurement in edgekit runs.

    The plain ``local`` profile runs edgekit's runner in a child process here
    (:func:`edgekit.runtime.local.run_local`); every other profile (pinned CPUs, another Python,
    SSH, ADB) goes through :func:`run_on_device` and its probe. ``with_probe`` takes that path
    for the local profile too, so the report records the conditions of the run (probe, runtime
    choice, thermal state, work folder), as ``edgekit benchmark`` does.

    Example:
        >>> run = run_model(load_profile("local"), "model_int8.tflite", x_val, runs=20)  # doctest: +SKIP
        >>> run.latency.p50_ms, run.report["name"]  # doctest: +SKIP
        (0.21, 'local')
    """
    threads = profile.threads if threads is None else threads
    if profile.transport == "mcu":
        raise InputError(f"{profile.name} is a microcontroller board profile: edgekit exports for it but does not run there",
                         hint=f"use export --target mcu --device {profile.name} (TFLite Micro on this machine checks ops, arena and accuracy)")
    if accelerator is not None:
        if profile.transport != "local":
            raise InputError(f"accelerator runs LiteRT's CompiledModel on this machine; {profile.name} is reached over {profile.transport}",
                             hint="on Android pick a target of the profile (gpu, npu...) instead", settings=("accelerator",))
        run = run_local(Path(model_path), inputs, threads=threads, runs=runs, warmup=warmup, accelerator=accelerator, timeout_s=timeout_s)
        report = {"name": profile.name, "transport": "local", "address": "this machine",
                  "runtime": {"name": run.runtime, "version": run.runtime_version}, "accelerator": accelerator,
                  "fully_accelerated": run.meta.get("fully_accelerated"),
                  "accuracy_measured_on": "this machine" if inputs is not None else None}
        return DeviceRun(run=run, latency=latency_stats(run), report=report)
    if runs_here(profile) and not with_probe:
        if target is not None:
            raise InputError(f"target is for Android devices; {profile.name} runs edgekit's runner", hint="drop the target")
        run = run_local(Path(model_path), inputs, threads=threads, runs=runs, warmup=warmup, runtime=runtime or "auto", timeout_s=timeout_s)
        report = {"name": profile.name, "transport": "local", "address": "this machine",
                  "runtime": {"name": run.runtime, "version": run.runtime_version},
                  "accuracy_measured_on": "this machine" if inputs is not None else None}
        return DeviceRun(run=run, latency=latency_stats(run), report=report)
    if timeout_s is not None and profile.transport != "adb":  # the limit of the runner on the device
        profile = profile.model_copy(update={"runner": profile.runner_settings.model_copy(update={"timeout_s": max(1, int(timeout_s))})})
    return run_on_device(profile, model_path, inputs, threads=threads, runs=runs, warmup=warmup, runtime=runtime, target=target)
