"""``edgekit optimize MODEL``: the smallest, fastest model within an accuracy budget."""

from __future__ import annotations

import contextlib

import click

from edgekit.cli.options import (
    data_key_options,
    devices_dir_option,
    force_option,
    json_option,
    model_loading_options,
    preprocessing_from_options,
    preprocessing_options,
    task_option,
)
from edgekit.cli.render import console, err_console, fmt, human_bytes, show_gated_report


@contextlib.contextmanager
def candidate_progress(enabled: bool):
    """A rich progress bar over the candidates (stderr); a no-op when disabled."""
    if not enabled:
        yield lambda _msg, _done, _total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("candidates"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=err_console, transient=False) as bar:
        task = bar.add_task("starting", total=1)

        def update(message: str, done: int, total: int) -> None:
            bar.update(task, description=message, completed=done, total=max(total, done, 1))

        yield update


@click.command(short_help="Search for the smallest, fastest model within an accuracy budget.")
@click.argument("model", type=click.Path())
@click.option("--data", required=True, type=click.Path(), help="Calibration data (.npz x/y, .npy, image folder); with labels also used to fine-tune.")
@click.option("--val", type=click.Path(), default=None, help="Labelled validation data [default: 20% of --data held out].")
@click.option("--device", default=None, help="Measure accuracy and latency on this device profile (name or .yaml path).")
@click.option("--max-drop", type=float, default=1.0, show_default=True, help="Accuracy budget: points of top-1 the model may lose.")
@click.option("--relative", is_flag=True, help="--max-drop is a percentage of the float32 top-1 instead of points.")
@click.option("--max-latency-ms", type=float, default=None, help="Latency limit on the device (or this machine).")
@click.option("--percentile", type=click.Choice(["p50", "p90"]), default="p50", show_default=True, help="Latency statistic the limit applies to.")
@click.option("--max-kb", type=float, default=None, help="Size limit in KB (1024 bytes).")
@click.option("--size-metric", type=click.Choice(["bytes", "gzip"]), default="bytes", show_default=True,
              help="Size means bytes on disk, or gzip bytes (what an app store download costs).")
@click.option("--allow-slower", is_flag=True, help="Accept candidates slower than float32.")
@click.option("--budget-minutes", type=float, default=None, help="Wall-clock budget: no new candidate starts after it.")
@click.option("--effort", type=click.Choice(["quick", "auto", "full"]), default="auto", show_default=True,
              help="quick: PTQ and mixed int8; auto: + QAT/pruning when PTQ misses the budget; full: try everything.")
@click.option("--prefer", type=click.Choice(["size", "latency"]), default="size", show_default=True,
              help="Recommend the smallest or the fastest feasible candidate.")
@click.option("--no-equalize", is_flag=True, help="Do not try int8 after cross-layer equalization.")
@click.option("--search", type=click.Choice(["enumerate", "optuna"]), default="enumerate", show_default=True,
              help="enumerate: the fixed steps; optuna: then --trials of a multi-objective Optuna search (pip install 'edgekit[distributed]').")
@click.option("--trials", type=int, default=24, show_default=True, help="With --search optuna: trials of the study (finished ones count).")
@click.option("--study", default=None, help="With --search optuna: the study's storage URL [default: sqlite in OUT.optuna/, then OUT/study.db]; "
              "an interrupted search resumes from it.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS|auto",
              help="Build candidates as Ray tasks on this cluster (auto: RAY_ADDRESS or the local `ray start` one); measured here.")
@click.option("--max-parallel", type=int, default=None, help="With --ray: at most this many builds at once [default: the cluster's CPUs].")
@click.option("--max-float-layers", type=int, default=4, show_default=True, help="At most this many layers kept in float by mixed candidates.")
@click.option("--epochs", type=int, default=1, show_default=True, help="Fine-tuning epochs of the QAT and pruning candidates.")
@click.option("--runs", type=int, default=50, show_default=True, help="Timed runs per latency round.")
@click.option("--rounds", type=int, default=3, show_default=True, help="Interleaved latency rounds.")
@click.option("--threads", type=int, default=None, help="Interpreter threads [default: the device profile's, 1 locally].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for sampling, hold-out and training.")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (absent or empty unless --force).")
@click.option("--no-html", is_flag=True, help="Skip report.html.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@preprocessing_options
@data_key_options
@task_option
@model_loading_options
@devices_dir_option
@force_option
@json_option
def optimize(model, data, val, device, max_drop, relative, max_latency_ms, percentile, max_kb, size_metric, allow_slower,
             budget_minutes, effort, prefer, no_equalize, search, trials, study, ray_address, max_parallel, max_float_layers, epochs, runs, rounds, threads, seed, out_dir, no_html, quiet, scale, mean, std,
             x_key, y_key, tasks, unsafe, custom_objects, devices_dir, force, as_json):
    """Try float16, dynamic, int8 (per-channel, per-tensor, int8 I/O), int16x8, int8 after
    cross-layer equalization, int8 with the most sensitive layers kept in float, and (with labelled --data) QAT and pruning; measure each for
    accuracy, size and latency; recommend the smallest (or fastest) within the budget.

    \b
    Writes OUT/: model.tflite + model.json (the recommendation), recipe.yaml (rerun it with
    `edgekit run`), candidates/ (every candidate built), report.json and report.html (the Pareto
    front and why each candidate was rejected). Exits 8 when no candidate meets the budget.
    --search optuna keeps its study in OUT.optuna/ until it finishes: rerun the same command after
    an interruption and it resumes without rebuilding finished trials.

    \b
    Example:
      edgekit optimize examples/fashion_mnist/model.keras --data examples/fashion_mnist/calib.npz \\
          --val examples/fashion_mnist/val.npz --scale 1/255 --max-drop 1.0 -o out/opt
    """
    from edgekit.core.errors import GateFailed
    from edgekit.workflows.optimize import optimize as run_optimize

    show = not (quiet or as_json)
    failure = None
    report = None
    with candidate_progress(show) as progress:
        try:
            result = run_optimize(
                model, data, out_dir=out_dir, val=val, device=device, devices_dir=devices_dir, max_drop=max_drop, relative=relative,
                max_latency_ms=max_latency_ms, percentile=percentile,
                max_size_bytes=int(round(max_kb * 1024)) if max_kb is not None else None, size_metric=size_metric,
                allow_slower=allow_slower, budget_minutes=budget_minutes, effort=effort, prefer=prefer, epochs=epochs, runs=runs,
                try_equalize=not no_equalize, max_float_layers=max_float_layers, search=search, n_trials=trials, study=study,
                ray_address=ray_address, max_parallel=max_parallel,
                rounds=rounds, threads=threads, seed=seed, preprocessing=preprocessing_from_options(scale, mean, std),
                x_key=x_key, y_key=y_key, tasks=tasks, force=force, unsafe=unsafe, custom_objects=custom_objects, progress=progress,
                training_progress=False, html=not no_html)  # one live display: the candidates bar
            report = result.report
        except GateFailed as exc:
            failure = exc
    show_gated_report(report, failure, out_dir, as_json=as_json, quiet=quiet, render=render_optimize)


def _short_reason(reasons: list[str]) -> str:
    if not reasons:
        return ""
    first = reasons[0].split(" (")[0]
    return first + (f" (+{len(reasons) - 1})" if len(reasons) > 1 else "")


def render_optimize(report: dict, out_dir: str) -> None:
    from rich.table import Table

    from edgekit.core.datatypes import METRIC_LABELS, PERCENT_METRICS

    metric = next((r.get("metric") for r in report["candidates"] if r.get("metric")), "top1")
    label = METRIC_LABELS.get(metric, metric) + (" %" if metric in PERCENT_METRICS else "")
    table = Table(title="Candidates (against float32, same data and machine)", title_justify="left", box=None, pad_edge=False)
    for col in ("candidate", "status", "bytes", "smaller", label, "drop", "p50 ms", "faster", "why"):
        table.add_column(col, justify="right" if col in ("bytes", "smaller", label, "drop", "p50 ms", "faster") else "left",
                         no_wrap=col != "why", overflow="fold" if col == "why" else "ellipsis")
    colors = {"recommended": "green", "feasible": "cyan", "rejected": "red", "failed": "magenta", "skipped": "yellow"}
    for row in report["candidates"]:
        status = row.get("status", "")
        color = colors.get(status)
        table.add_row(row["name"] + (" *" if row.get("pareto") else ""), f"[{color}]{status}[/{color}]" if color else status,
                      human_bytes(row.get("bytes")), fmt(row.get("smaller_than_reference")) + ("x" if row.get("bytes") else ""),
                      fmt(row.get("value")), fmt(row.get("drop")), fmt(row.get("p50_ms"), 4),
                      fmt(row.get("faster_than_reference")) + ("x" if row.get("bytes") else ""), _short_reason(row.get("reasons") or []))
    console.print(table)
    console.print("* on the Pareto front (size, latency, accuracy drop)")
    rec = report.get("recommended")
    if rec:
        console.print(f"[green]recommended:[/green] {rec['name']}: {rec['bytes']:,} bytes ({fmt(rec.get('smaller_than_reference'))}x smaller), "
                      f"{METRIC_LABELS.get(metric, metric)} {fmt(rec.get('value'))}{'%' if metric in PERCENT_METRICS else ''} (drop {fmt(rec.get('drop'))}), p50 {fmt(rec.get('p50_ms'), 4)} ms "
                      f"({fmt(rec.get('faster_than_reference'))}x faster); {report.get('why_recommended', '')}")
        console.print(f"wrote {out_dir}/: model.tflite, model.json, recipe.yaml (rerun with edgekit run), candidates/, report.json, report.html")
    else:
        console.print(f"[red]no recommendation:[/red] {report.get('why_recommended', '')}")
    for note in report.get("warnings", []):
        console.print(f"[yellow]note:[/yellow] {note}")
