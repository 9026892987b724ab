"""``edgekit validate``: accuracy, fidelity to the float model, latency and size of an artifact."""

from __future__ import annotations

import contextlib

import click

from edgekit.cli.options import (
    data_key_options,
    devices_dir_option,
    fleet_option_group,
    ignore_manifest_option,
    json_option,
    model_loading_options,
    preprocessing_from_options,
    preprocessing_options,
    run_options,
    task_option,
    timeout_option,
)
from edgekit.cli.render import console, err_console, fmt, human_bytes, kv_table, memory_text, print_json


@click.command(short_help="Measure accuracy, latency and size of a .tflite artifact.")
@click.argument("artifact", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Validation data: .npz (x, y), .npy or an image folder.")
@click.option("--reference", type=click.Path(), default=None, help="The float model to compare outputs with (.keras, .h5, SavedModel).")
@run_options
@click.option("--samples", type=int, default=None, help="Validate on a seeded subset of this many samples.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for --samples.")
@click.option("--report", type=click.Path(dir_okay=False), default=None, help="Where to write the JSON report [default: ARTIFACT stem + .validate.report.json].")
@click.option("--runtime", type=click.Choice(["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"]), default="auto", show_default=True, help="Which TFLite runtime runs the artifact.")
@preprocessing_options
@data_key_options
@task_option
@model_loading_options
@click.option("--device", "devices", multiple=True, help="Run on this device profile (name or .yaml path; edgekit devices list) instead of "
              "this machine; repeat it to run on several devices in parallel.")
@fleet_option_group
@devices_dir_option
@timeout_option
@ignore_manifest_option
@json_option
def validate(artifact, data, reference, runs, warmup, threads, samples, seed, report, runtime, scale, mean, std,
             x_key, y_key, tasks, unsafe, custom_objects, devices, fleet_file, max_parallel, ray_address, devices_dir, timeout, ignore_manifest,
             as_json):
    """Run ARTIFACT (.tflite) with LiteRT on this machine and report accuracy against labels,
    agreement with --reference, latency (p50/p90/p99, first inference, init, peak memory) and size.

    Preprocessing defaults to the one recorded in the artifact's manifest (ARTIFACT .json).

    \b
    Several --device (or --fleet FILE) run in parallel, one run per device at a time; the data
    and reference are loaded once; one row per device, a failed device is a row with its error
    and the exit code is that device's (7: unreachable).
    """
    from edgekit.workflows.validate import validate as run_validate

    if len(devices) > 1 or fleet_file is not None or ray_address is not None:
        from edgekit.cli.cmd_benchmark import fleet_profiles, show_fleet
        from edgekit.workflows.validate import validate_fleet

        profiles, parallel = fleet_profiles(devices, fleet_file, max_parallel, devices_dir)
        with err_console.status(f"Validating on {len(profiles)} devices...", spinner="dots") if not as_json else contextlib.nullcontext():
            given = click.get_current_context().get_parameter_source("threads") != click.core.ParameterSource.DEFAULT
            fleet = validate_fleet(
                artifact, data, profiles, max_parallel=parallel, reference=reference, preprocessing=preprocessing_from_options(scale, mean, std),
                runs=runs, warmup=warmup, threads=threads if given else None, samples=samples, seed=seed, x_key=x_key, y_key=y_key, tasks=tasks, report=report,
                unsafe=unsafe, custom_objects=custom_objects, runtime=runtime, timeout=timeout, ignore_manifest=ignore_manifest,
                ray_address=ray_address)
        show_fleet(fleet, f"Validation of {artifact} on {len(fleet.rows)} devices", as_json)
        return
    device = devices[0] if devices else None
    profile = None
    if device is not None:
        from edgekit.devices.profiles import load_profile

        profile = load_profile(device, devices_dir=devices_dir)
        if click.get_current_context().get_parameter_source("threads") == click.core.ParameterSource.DEFAULT:
            threads = profile.threads  # the profile's threads unless --threads

    with err_console.status("Validating...", spinner="dots") if not as_json else contextlib.nullcontext():
        result = run_validate(
            artifact, data, reference=reference, preprocessing=preprocessing_from_options(scale, mean, std),
            runs=runs, warmup=warmup, threads=threads, samples=samples, seed=seed, x_key=x_key, y_key=y_key,
            tasks=tasks, report=report, unsafe=unsafe, custom_objects=custom_objects, runtime=runtime,
            device=profile, timeout=timeout, ignore_manifest=ignore_manifest,
        )
    if as_json:
        print_json(result.to_dict())
        return
    render_validation(result)
    if device is not None:
        from edgekit.cli.cmd_devices import render_device_run

        render_device_run(result.device)


def render_validation(result) -> None:
    """Prints a ValidationReport as tables."""
    from rich.table import Table

    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    console.print(kv_table(f"Accuracy of {result.artifact}", accuracy_rows(result)))
    if result.comparisons:
        table = Table(title="Against the reference model", title_justify="left", box=None, pad_edge=False)
        for col in ("output", "top-1 agreement", "max abs err", "mean abs err", "cosine", "SQNR dB"):  # agreement: categorical outputs
            table.add_column(col, justify="right" if col != "output" else "left", overflow="fold")
        for c in result.comparisons:
            table.add_row(c.output, fmt(c.top1_agreement) + ("%" if c.top1_agreement is not None else ""),
                          f"{c.max_abs_error:.3g}", f"{c.mean_abs_error:.3g}", f"{c.cosine_similarity:.6f}", fmt(c.sqnr_db, 1))
        console.print(table)
    lat = result.latency
    console.print(kv_table(f"Latency ({lat.runtime}, {lat.threads} thread(s), {lat.runs} runs after {lat.warmup} warm-up)", [
        ("mean ± std", f"{lat.mean_ms:.3f} ± {lat.std_ms:.3f} ms"),
        ("p50 / p90 / p99", f"{lat.p50_ms:.3f} / {lat.p90_ms:.3f} / {lat.p99_ms:.3f} ms"),
        ("first inference", f"{lat.first_inference_ms:.3f} ms"),
        ("init", f"{lat.init_ms:.1f} ms"),
        ("memory", memory_text(lat)),
    ]))
    console.print(kv_table("Size", [
        ("on disk", f"{human_bytes(result.size.bytes)} ({result.size.bytes:,} B)"),
        ("gzip", f"{human_bytes(result.size.gzip_bytes)} ({result.size.gzip_bytes:,} B)"),
        ("report", result.report_path or "-"),
    ]))


def accuracy_rows(result) -> list[tuple[str, str]]:
    """samples, each output's task and metrics, and the reference's primary metric with the artifact's drop."""
    from edgekit.core.datatypes import LOWER_IS_BETTER, METRIC_LABELS, PERCENT_METRICS, format_metric

    rows: list[tuple[str, str]] = [("samples", str(result.samples))]
    several = len(result.tasks) > 1
    for task in result.tasks:
        rows.append((f"task {task['output']}" if several else "task", f"{task['task']} ({task['reason']})"))
    acc, ref = result.accuracy, result.reference_accuracy
    per_output = list(acc.outputs) if acc is not None and acc.outputs else ([{"output": acc.output, "values": acc.values}] if acc else [])
    ref_by = {o["output"]: o for o in (ref.outputs if ref is not None and ref.outputs else
                                       ([{"output": ref.output, "values": ref.values, "primary": ref.metric}] if ref else []))}
    for entry in per_output:
        prefix = f"{entry['output']} " if several else ""
        for metric, value in entry["values"].items():
            rows.append((prefix + METRIC_LABELS.get(metric, metric), format_metric(metric, value)))
        reference = ref_by.get(entry["output"])
        primary = entry.get("primary") or (acc.metric if acc is not None else None)
        if reference is not None and primary is not None and primary in reference["values"] and primary in entry["values"]:
            r, a = reference["values"][primary], entry["values"][primary]
            diff = a - r
            if primary in PERCENT_METRICS:
                text = f"{format_metric(primary, r)}  (artifact {diff:+.2f} points)"
            else:
                worse = diff > 0 if primary in LOWER_IS_BETTER else diff < 0
                text = f"{format_metric(primary, r)}  (artifact {diff:+.4g}: {'worse' if worse else 'better' if diff else 'the same'})"
            rows.append((f"{prefix}reference {METRIC_LABELS.get(primary, primary)}", text))
    if acc is None and result.data.get("labelled") is False:
        rows.append(("labels", "none in the data: agreement with the reference only"))
    return rows
