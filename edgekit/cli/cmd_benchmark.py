"""``edgekit benchmark``: latency of an artifact on a device, with the conditions it was taken under."""

from __future__ import annotations

import contextlib

import click

from edgekit.cli.options import devices_dir_option, fleet_option_group, ignore_manifest_option, json_option, timeout_option
from edgekit.cli.render import console, err_console, kv_table, memory_text, print_json


@click.command(short_help="Measure the latency of a .tflite artifact on a device.")
@click.argument("artifact", type=click.Path())
@click.option("--device", "devices", multiple=True, default=("local",), show_default=True,
              help="Device profile name or .yaml path (edgekit devices list); repeat it to run on several devices in parallel.")
@click.option("--runs", default=50, show_default=True, type=int, help="Timed inference runs.")
@click.option("--warmup", default=5, show_default=True, type=int, help="Untimed warm-up runs before timing.")
@click.option("--threads", default=None, help="Interpreter threads [default: the profile's threads]; a list (1,2,4) adds a thread sweep.")
@click.option("--runtime", type=click.Choice(["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"]), default=None,
              help="Runtime on a Linux device [default: the profile's runner.runtime, auto picks one that runs].")
@click.option("--target", default=None, help="Android: a target of the profile (cpu, gpu, nnapi, npu...) [default: benchmark.default_target].")
@click.option("--accelerator", type=click.Choice(["cpu", "gpu"]), default=None,
              help="Run through LiteRT's CompiledModel on this accelerator (this machine) and compare with the CPU Interpreter.")
@click.option("--profile-ops", is_flag=True, help="Also time every operator (cumulative truncation; an estimate where timing fails).")
@fleet_option_group
@devices_dir_option
@timeout_option
@ignore_manifest_option
@json_option
def benchmark(artifact, devices, runs, warmup, threads, runtime, target, accelerator, profile_ops, fleet_file, max_parallel, ray_address,
              devices_dir, timeout, ignore_manifest, as_json):
    """Run ARTIFACT (.tflite) on --device and report latency (p50/p90/p99, first inference, init,
    peak memory), the runtime that ran it, and the device's thermal state before and after
    (a throttled run is flagged). Linux devices run edgekit's runner; Android devices run the
    benchmark_model binary named in the profile.

    \b
    Several --device (or --fleet FILE) run in parallel, one measurement per device at a time, and
    print one row per device; a device that fails is a row with its error, and the exit code is
    that device's (7: unreachable).
    """
    from edgekit.devices.profiles import load_profile
    from edgekit.workflows.benchmark import benchmark as run_benchmark

    counts = _thread_counts(threads)
    if len(devices) > 1 or fleet_file is not None or ray_address is not None:
        explicit = click.get_current_context().get_parameter_source("devices") != click.core.ParameterSource.DEFAULT
        _benchmark_fleet(artifact, devices if explicit or fleet_file is None else (), fleet_file,
                         max_parallel, devices_dir, counts, runs=runs, warmup=warmup, runtime=runtime, target=target,
                         accelerator=accelerator, profile_ops=profile_ops, timeout=timeout, ignore_manifest=ignore_manifest, as_json=as_json,
                         ray_address=ray_address)
        return
    profile = load_profile(devices[0], devices_dir=devices_dir)
    with err_console.status(f"Benchmarking on {profile.name}...", spinner="dots") if not as_json else contextlib.nullcontext():
        report = run_benchmark(artifact, device=profile, runs=runs, warmup=warmup, threads=counts[0] if counts else None, runtime=runtime,
                               target=target, profile_operators=profile_ops, thread_counts=counts, accelerator=accelerator,
                               timeout=timeout, ignore_manifest=ignore_manifest)
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
        ("memory", memory_text(lat)),
    ]))
    render_device_run(report.device)
    if report.accelerator is not None:
        acc = report.accelerator
        console.print(f"accelerator {acc['name']}: fully accelerated: {acc['fully_accelerated']}; {acc['verdict']}")
        if acc.get("warning"):
            err_console.print(f"warning: {acc['warning']}")
    if report.thread_sweep:
        render_thread_sweep(report.thread_sweep)
    if report.op_profile is not None:
        render_op_profile(report.op_profile)


def _benchmark_fleet(artifact, devices, fleet_file, max_parallel, devices_dir, counts, *, runs, warmup, runtime, target, accelerator,
                     profile_ops, timeout, ignore_manifest, as_json, ray_address=None) -> None:
    from edgekit.core.errors import InputError
    from edgekit.workflows.benchmark import benchmark_fleet
    for flag, given in (("--accelerator", accelerator is not None), ("--profile-ops", profile_ops), ("a --threads list", len(counts) > 1)):
        if given:
            raise InputError(f"{flag} runs on one device, not a fleet", hint="benchmark one --device with it")
    profiles, parallel = fleet_profiles(devices, fleet_file, max_parallel, devices_dir)
    with err_console.status(f"Benchmarking on {len(profiles)} devices...", spinner="dots") if not as_json else contextlib.nullcontext():
        fleet = benchmark_fleet(artifact, profiles, max_parallel=parallel, runs=runs, warmup=warmup, threads=counts[0] if counts else None,
                                runtime=runtime, target=target, timeout=timeout, ignore_manifest=ignore_manifest, ray_address=ray_address)
    show_fleet(fleet, f"Latency of {artifact} on {len(fleet.rows)} devices", as_json)


def fleet_profiles(devices, fleet_file, max_parallel, devices_dir):
    """The fleet's profiles and how many run at once (--max-parallel, else the fleet file's), checked before any run."""
    from edgekit.workflows.fleet import check_max_parallel, load_fleet

    profiles, file_parallel = load_fleet(devices, fleet_file, devices_dir)
    return profiles, check_max_parallel(max_parallel) if max_parallel is not None else file_parallel


def show_fleet(fleet, title: str, as_json: bool) -> None:
    """Prints the fleet's rows (JSON or a table), then exits with the first failed device's code."""
    if as_json:
        print_json(fleet.to_dict())
    else:
        render_fleet(fleet, title)
    if fleet.exit_code:
        click.get_current_context().exit(fleet.exit_code)


def render_fleet(fleet, title: str) -> None:
    """One row per device: its latency (and accuracy for validate), or its error."""
    from rich.table import Table

    from edgekit.core.datatypes import format_metric

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    with_accuracy = fleet.command == "validate"
    columns = ["device", "via", "runtime", "p50 ms", "p90 ms", *(["metric"] if with_accuracy else []), "model MB", "status"]
    for col in columns:
        table.add_column(col, justify="right" if col.endswith(("ms", "MB")) else "left", overflow="fold")
    for row in fleet.rows:
        if not row.ok:
            table.add_row(row.device, row.transport, "-", "-", "-", *(["-"] if with_accuracy else []), "-", f"FAILED ({row.exit_code})")
            continue
        lat = row.result.latency
        memory = f"{lat.model_overall_mb:.1f}" if lat.model_overall_mb is not None else "-"
        cells = [row.device, row.transport, str(lat.runtime).split()[0], f"{lat.p50_ms:.3f}", f"{lat.p90_ms:.3f}"]
        if with_accuracy:
            acc = row.result.accuracy
            cells.append(format_metric(acc.metric, acc.value) if acc is not None and acc.value is not None else "-")
        table.add_row(*cells, memory, "ok")
    console.print(table)
    failed = fleet.failed
    for row in failed:
        console.print(f"{row.device} failed (exit {row.exit_code}): {row.error.message}", highlight=False)
    console.print(f"{len(fleet.rows) - len(failed)} of {len(fleet.rows)} devices ran; at most {fleet.max_parallel} at once"
                  + (f" on the {fleet.where}" if fleet.where != "this machine" else "")
                  + (f"; failed: {', '.join(r.device for r in failed)}" if failed else ""), highlight=False)


def _thread_counts(text: str | None) -> tuple[int, ...]:
    if text is None:
        return ()
    try:
        counts = tuple(int(part) for part in str(text).split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected a thread count or a list like 1,2,4, got '{text}'", param_hint="--threads") from None
    if not counts or any(c < 1 for c in counts):
        raise click.BadParameter(f"thread counts must be at least 1, got '{text}'", param_hint="--threads")
    return counts


def render_thread_sweep(rows) -> None:
    from rich.table import Table

    table = Table(title="Thread scaling (interleaved rounds; p50 with its interval)", title_justify="left", box=None, pad_edge=False)
    for col in ("threads", "p50 ms", "interval ms", "speed-up", "efficiency"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r.threads), f"{r.spread.p50.value:.4f}", f"{r.spread.p50.low:.4f}-{r.spread.p50.high:.4f}",
                      f"x{r.speedup:.2f}", f"{r.efficiency:.0%}")
    console.print(table)


def render_op_profile(profile, top: int = 15) -> None:
    from rich.table import Table

    console.print(f"Per-operator time: {profile.method}")
    table = Table(title="By operator type", title_justify="left", box=None, pad_edge=False)
    for col in ("op", "count", "ms", "share", "MFLOPs"):
        table.add_column(col, justify="right" if col != "op" else "left")
    for t in profile.by_type():
        table.add_row(t.op, str(t.count), f"{t.time_ms:.4f}", f"{t.share:.1%}", f"{t.flops / 1e6:.2f}")
    console.print(table)
    nodes = Table(title=f"Slowest {min(top, len(profile.ops))} of {len(profile.ops)} operators", title_justify="left", box=None, pad_edge=False)
    for col in ("#", "op", "ms", "share", "output"):
        nodes.add_column(col, justify="right" if col in ("#", "ms", "share") else "left", overflow="fold")
    for o in sorted(profile.ops, key=lambda o: -o.time_ms)[:top]:
        nodes.add_row(str(o.index), o.op, f"{o.time_ms:.4f}", f"{o.share:.1%}", o.output.split(";")[0])  # fused names: --json has all
    console.print(nodes)
    console.print(f"sum of operators {profile.sum_ms:.4f} ms; whole model {profile.total_ms:.4f} ms (p50, {profile.threads} thread(s))")
