"""``edgekit benchmark``: latency of an artifact on a device, with the conditions it was taken under."""

from __future__ import annotations

import contextlib

import click

from edgekit.cli.options import devices_dir_option, json_option
from edgekit.cli.render import console, err_console, kv_table, print_json


@click.command(short_help="Measure the latency of a .tflite artifact on a device.")
@click.argument("artifact", type=click.Path())
@click.option("--device", default="local", show_default=True, help="Device profile name or .yaml path (edgekit devices list).")
@click.option("--runs", default=50, show_default=True, type=int, help="Timed inference runs.")
@click.option("--warmup", default=5, show_default=True, type=int, help="Untimed warm-up runs before timing.")
@click.option("--threads", default=None, type=int, help="Interpreter threads [default: the profile's threads].")
@click.option("--runtime", type=click.Choice(["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"]), default=None,
              help="Runtime on a Linux device [default: the profile's runner.runtime, auto picks one that runs].")
@click.option("--target", default=None, help="Android: a target of the profile (cpu, gpu, nnapi, npu...) [default: benchmark.default_target].")
@devices_dir_option
@json_option
def benchmark(artifact, device, runs, warmup, threads, runtime, target, devices_dir, as_json):
    """Run ARTIFACT (.tflite) on --device and report latency (p50/p90/p99, first inference, init,
    peak memory), the runtime that ran it, and the device's thermal state before and after
    (a throttled run is flagged). Linux devices run edgekit's runner; Android devices run the
    benchmark_model binary named in the profile.
    """
    from edgekit.devices.profiles import load_profile
    from edgekit.workflows.benchmark import benchmark as run_benchmark

    profile = load_profile(device, devices_dir=devices_dir)
    with err_console.status(f"Benchmarking on {profile.name}...", spinner="dots") if not as_json else contextlib.nullcontext():
        report = run_benchmark(artifact, device=profile, runs=runs, warmup=warmup, threads=threads, runtime=runtime, target=target)
    if as_json:
        print_json(report.to_dict())
        return
    from edgekit.cli.cmd_devices import render_device_run

    lat = report.latency
    console.print(kv_table(f"Latency of {report.artifact} ({lat.runtime}, {lat.threads} thread(s), {lat.runs} runs after {lat.warmup} warm-up)", [
        ("mean ± std", f"{lat.mean_ms:.3f} ± {lat.std_ms:.3f} ms"),
        ("p50 / p90 / p99", f"{lat.p50_ms:.3f} / {lat.p90_ms:.3f} / {lat.p99_ms:.3f} ms"),
        ("min / max", f"{lat.min_ms:.3f} / {lat.max_ms:.3f} ms"),
        ("first inference", f"{lat.first_inference_ms:.3f} ms"),
        ("init", f"{lat.init_ms:.1f} ms"),
        ("peak memory", f"{lat.peak_memory_mb:.1f} MB" if lat.peak_memory_mb else "-"),
    ]))
    render_device_run(report.device)
