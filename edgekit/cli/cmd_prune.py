"""``edgekit prune``: magnitude, 2:4 or channel pruning with fine-tuning, and what it buys."""

from __future__ import annotations

import click

from edgekit.cli.options import (
    data_key_options,
    force_option,
    json_option,
    model_loading_options,
    preprocessing_from_options,
    preprocessing_options,
    strategy_option,
    task_option,
)
from edgekit.cli.render import console, print_json, shown_worker_done

compression_options = [
    click.option("--data", required=True, type=click.Path(), help="Training data for fine-tuning: .npz (x, y) or an image folder."),
    click.option("--val", type=click.Path(), default=None, help="Validation data (x, y): accuracy before/after and of the int8 exports."),
    click.option("-o", "--output", required=True, type=click.Path(), help="The .keras file to write (OUT.COMMAND.report.json beside it)."),
    click.option("--layers", default=None, help="Only layers whose path matches this regex (e.g. 'conv|fc1', 'backbone/.*')."),
    click.option("--skip", default=None, help="Leave layers whose path matches this regex untouched."),
    click.option("--epochs", default=2, show_default=True, type=int, help="Fine-tuning epochs (0: no fine-tuning)."),
    click.option("--batch-size", default=64, show_default=True, type=int, help="Fine-tuning batch size."),
    click.option("--learning-rate", default=None, type=float, help="Fine-tuning learning rate [default: the model's optimizer's]."),
    click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default="constant", show_default=True,
                 help="Fine-tuning learning rate: constant, or cosine decay to 2% over all fine-tuning steps (helps after channel pruning)."),
    click.option("--loss", default=None, help="Loss for fine-tuning [default: the loss the model was compiled with]."),
    strategy_option,
    click.option("--seed", default=0, show_default=True, type=int, help="Seed for fine-tuning and initialization."),
    click.option("--export/--no-export", default=True, show_default=True,
                 help="Convert original and result to TFLite and compare size (gzip) and latency."),
    click.option("--export-mode", type=click.Choice(["int8", "dynamic", "float16", "float32"]), default="int8", show_default=True,
                 help="Quantization mode of the comparison export."),
    click.option("--runs", default=60, show_default=True, type=int, help="Timed runs per model for the latency comparison."),
    click.option("--threads", default=1, show_default=True, type=int, help="Interpreter threads for the latency comparison."),
]


def compression_command_options(func):
    for option in reversed(compression_options):
        func = option(func)
    return func


@click.command(short_help="Prune a Keras model (unstructured, 2:4 or channels) and fine-tune it.")
@click.argument("model", type=click.Path())
@compression_command_options
@click.option("--sparsity", type=float, default=None, help="Fraction of weights (or channels) to remove, in [0, 1). 2:4 is always 0.5.")
@click.option("--structure", type=click.Choice(["unstructured", "2:4", "channels"]), default="unstructured", show_default=True,
              help="unstructured: smallest weights; 2:4: 2 of every 4 input channels; channels: remove whole filters.")
@click.option("--schedule", type=click.Choice(["constant", "polynomial"]), default="constant", show_default=True,
              help="constant: target sparsity from the start; polynomial: ramp up from --initial-sparsity.")
@click.option("--initial-sparsity", default=0.0, show_default=True, type=float, help="Polynomial schedule: sparsity at --begin-step.")
@click.option("--begin-step", default=0, show_default=True, type=int, help="Polynomial schedule: first step (batch) that prunes.")
@click.option("--end-step", default=None, type=int, help="Polynomial schedule: step reaching the target [default: 3/4 of training].")
@click.option("--begin-epoch", default=None, type=float, help="Polynomial schedule: first epoch that prunes (instead of --begin-step; fractions allowed).")
@click.option("--end-epoch", default=None, type=float, help="Polynomial schedule: epoch reaching the target (instead of --end-step; fractions allowed).")
@click.option("--frequency", default=None, type=int, help="Polynomial schedule: recompute masks every N steps [default: ~10 updates].")
@click.option("--targets", type=click.Path(dir_okay=False), default=None,
              help="YAML with per-layer sparsity: targets: [{layers: REGEX, sparsity: 0.9}] (first match wins).")
@click.option("--distill", is_flag=True, help="Fine-tune with the original model as teacher: its hidden features and outputs (T=1, alpha=0.5).")
@preprocessing_options
@data_key_options
@task_option
@model_loading_options
@force_option
@json_option
def prune(model, data, val, output, seed, export, export_mode, runs, threads, scale, mean, std, x_key, y_key, tasks, unsafe, custom_objects,
          force, as_json, **settings):
    """Prune MODEL (.keras/.h5) and fine-tune it on --data with the model's own loss.

    \b
    Writes a plain Keras model (no pruning wrappers; reloads with keras.saving.load_model) and
    OUT.prune.report.json: per-layer sparsity or channels kept, accuracy before/after on --val, and the
    original vs pruned model after TFLite export: size on disk and gzipped, and p50 latency.
    Unstructured and 2:4 sparsity make files smaller only once compressed, and are not faster on
    LiteRT's CPU kernels; --structure channels removes filters and is. The report says which.

    \b
    Example:
      edgekit prune examples/fashion_mnist/model.keras --data train.npz --val examples/fashion_mnist/val.npz \\
          --scale 1/255 --sparsity 0.8 --schedule polynomial --epochs 2 -o out/pruned.keras
    """
    from edgekit.cli.options import build_config
    from edgekit.passes.prune import PruneConfig
    from edgekit.workflows.compress import load_targets
    from edgekit.workflows.compress import prune as run_prune

    if settings.get("targets") is not None:
        settings["targets"] = load_targets(settings["targets"])
    result = run_prune(
        model, output, build_config(PruneConfig, settings), data=data, val=val, seed=seed,
        preprocessing=preprocessing_from_options(scale, mean, std), export=export, export_mode=export_mode, runs=runs,
        threads=threads, force=force, unsafe=unsafe, custom_objects=custom_objects, x_key=x_key, y_key=y_key, tasks=tasks, progress=True,
    )
    if shown_worker_done(result, as_json):
        return
    if as_json:
        print_json(result.to_dict())
        return
    render_compression(result)


def render_compression(result) -> None:
    """Prints a CompressionResult: per-layer table, accuracy, export comparison and verdict."""
    from rich.table import Table

    from edgekit.cli.render import human_bytes, kv_table
    from edgekit.core.datatypes import format_metric

    table = Table(title=f"Layers ({result.kind})", title_justify="left", box=None, pad_edge=False)
    columns = ["layer", "class", "params", "status", "target", "sparsity", "channels", "distinct values", "note"]
    for col in columns:
        table.add_column(col, justify="right" if col in ("params", "target", "sparsity", "distinct values") else "left")
    for layer in result.layers:
        channels = f"{layer.channels_before} -> {layer.channels_after}" if layer.channels_before is not None else "-"
        table.add_row(
            layer.path, layer.layer_class, f"{layer.parameters:,}", layer.status,
            f"{layer.target_sparsity:.2f}" if layer.target_sparsity is not None else "-",
            f"{layer.sparsity:.1%}" if layer.sparsity is not None else "-", channels,
            str(layer.distinct_values) if layer.distinct_values is not None else "-", layer.reason or "",
        )
    console.print(table)
    if result.unsupported:
        console.print("left as they are (unsupported): " + ", ".join(f"{p} ({c})" for p, c in result.unsupported))
    rows = [("parameters", f"{result.parameters_before:,} -> {result.parameters_after:,}")]
    before, after = result.quality_before, result.quality_after
    if before is not None and after is not None:
        rows.append((f"{after.label} (Keras, --val)", f"{format_metric(after.metric, before.value)} -> {format_metric(after.metric, after.value)} "
                                                     f"({(after.value or 0) - (before.value or 0):+.4g}{' points' if after.unit == 'points' else ''})"))
    rows.append(("model", result.output))
    rows.append(("report", result.report_path))
    console.print(kv_table("Result", rows))
    e = result.export
    if e is not None:
        cmp = Table(title=f"After export ({e.compressed.mode}, {e.compressed.latency.runtime if e.compressed.latency else '-'})",
                    title_justify="left", box=None, pad_edge=False)
        metric = next((m.accuracy.label for m in (e.original_float32, e.original, e.compressed) if m.accuracy is not None), "top-1")
        for col in ("model", "bytes", "gzip bytes", "p50 ms", "p90 ms", metric):
            cmp.add_column(col, justify="left" if col == "model" else "right")
        for name, m in (("original float32", e.original_float32), (f"original {e.original.mode}", e.original),
                        (f"{'pruned' if result.kind == 'prune' else 'clustered'} {e.compressed.mode}", e.compressed)):
            cmp.add_row(name, f"{m.size.bytes:,} ({human_bytes(m.size.bytes)})", f"{m.size.gzip_bytes:,} ({human_bytes(m.size.gzip_bytes)})",
                        f"{m.latency.p50_ms:.3f}" if m.latency else "-", f"{m.latency.p90_ms:.3f}" if m.latency else "-",
                        format_metric(m.accuracy.metric, m.accuracy.value) if m.accuracy is not None else "-")
        console.print(cmp)
        for line in e.verdict:
            console.print(("[bold yellow]" if line.startswith("NOT FASTER") else "") + line + ("[/bold yellow]" if line.startswith("NOT FASTER") else ""))
    for note in result.notes:
        console.print(f"note: {note}")
