"""``edgekit qat``: quantization-aware fine-tuning to a full-int8 .tflite file, with a comparison report."""

from __future__ import annotations

import contextlib

import click

from edgekit.cli.options import (
    build_config,
    data_key_options,
    force_option,
    json_option,
    model_loading_options,
    preprocessing_from_options,
    preprocessing_options,
    strategy_option,
    task_option,
)
from edgekit.cli.render import console, err_console, fmt, human_bytes, kv_table, print_json, shown_worker_done

IO_TYPES = ["float", "int8", "uint8"]


@click.command(short_help="Quantization-aware training to a full-int8 .tflite file.")
@click.argument("model", type=click.Path())
@click.option("--data", type=click.Path(), default=None, help="Training data with labels: .npz (x, y) or an image folder.  [required]")
@click.option("--val", type=click.Path(), default=None, help="Validation data for the report [default: 10% of --data held out].")
@click.option("--epochs", type=int, default=None, help="Fine-tuning epochs (at least 1).  [required]")
@click.option("-o", "--output", required=True, type=click.Path(), help="The .tflite file to write (manifest .json and report .qat.report.json beside it).")
@click.option("--keep-keras", type=click.Path(), default=None, help="Also save the fine-tuned float model (.keras, plain Keras layers).")
@click.option("--io-type", type=click.Choice(IO_TYPES), default="float", show_default=True, help="Input/output dtype of the int8 model.")
@click.option("--preserve", type=click.Choice(["sparsity", "clusters"]), default=None,
              help="Keep a pruned model's zeros or a clustered model's clusters through QAT.")
@click.option("--lr", "learning_rate", type=float, default=1e-4, show_default=True, help="Initial Adam learning rate (cosine decay to 0).")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Training batch size.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for shuffling, hold-out and initialization.")
@click.option("--no-ptq", is_flag=True, help="Skip the post-training int8 column of the report.")
@click.option("--distill", is_flag=True, help="Fine-tune with the float model as teacher (knowledge distillation of its outputs, T=1, alpha=0.5).")
@strategy_option
@preprocessing_options
@data_key_options
@task_option
@model_loading_options
@force_option
@json_option
def qat(model, data, val, epochs, output, keep_keras, io_type, preserve, learning_rate, batch_size, seed, no_ptq, distill, strategy, scale,
        mean, std, x_key, y_key, tasks, unsafe, custom_objects, force, as_json):
    """Fine-tune MODEL (.keras or .h5 classifier) with simulated int8 quantization and export a
    full-int8 TFLite model.

    \b
    BatchNormalization is folded into the conv/dense before it, conv weights are per-channel and
    dense weights per-tensor int8, activations are quantized after fused ReLU/ReLU6: the exported
    file computes what training simulated. Layers QAT cannot simulate stay float and are listed.
    The report compares float, PTQ int8 and QAT int8 top-1 on the validation data.

    \b
    Example:
      edgekit qat examples/fashion_mnist/model.keras --data train.npz \\
          --val examples/fashion_mnist/val.npz --scale 1/255 --epochs 2 -o out/model_qat.tflite
    """
    from edgekit.passes.qat import QatConfig
    from edgekit.workflows.qat import qat as run_qat

    config = build_config(QatConfig, {"epochs": epochs, "io_type": io_type, "preserve": preserve, "learning_rate": learning_rate,
                                      "batch_size": batch_size, "distill": distill, "strategy": strategy})

    def on_epoch(_title: str, epoch: int, total: int, logs: dict[str, float]) -> None:
        if not as_json:
            parts = ", ".join(f"{k} {v:.4f}" for k, v in logs.items())
            err_console.print(f"epoch {epoch}/{total}: {parts}")

    with err_console.status("Quantization-aware training...", spinner="dots") if not as_json else contextlib.nullcontext():
        result = run_qat(
            model, output, data=data, config=config, val=val, keep_keras=keep_keras,
            preprocessing=preprocessing_from_options(scale, mean, std), seed=seed, compare_ptq=not no_ptq, force=force,
            unsafe=unsafe, custom_objects=custom_objects, x_key=x_key, y_key=y_key, tasks=tasks, on_epoch=on_epoch,
        )
    if shown_worker_done(result, as_json):
        return
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(result.to_dict())
        return
    render_qat(result)


def render_qat(result) -> None:
    """Prints a QatResult: the comparison table, then the artifact."""
    from rich.table import Table

    from edgekit.core.datatypes import format_metric

    float_row = result.row("float")
    head = next((r.accuracy for r in result.comparison if r.accuracy is not None), None)
    label = head.label if head is not None else "top-1"
    table = Table(title=f"{label[:1].upper() + label[1:]} on {result.val_samples} validation samples ({result.val_source})",
                  title_justify="left", box=None, pad_edge=False)
    for col in ("variant", label, "vs float", "same top-1 as float", "size", "note"):
        table.add_column(col, justify="left" if col in ("variant", "note") else "right")
    for row in result.comparison:
        value = row.accuracy.value if row.accuracy is not None else row.top1
        base = (float_row.accuracy.value if float_row.accuracy is not None else float_row.top1) if float_row else None
        delta = f"{value - base:+.4g}" if base is not None and value is not None and row is not float_row else "-"
        agreement = f"{row.agreement_with_float:.2f}%" if row.agreement_with_float is not None else "-"
        shown = format_metric(row.accuracy.metric, value) if row.accuracy is not None else fmt(row.top1)
        table.add_row(row.variant, shown, delta, agreement, human_bytes(row.size_bytes), row.note)
    console.print(table)
    art = result.artifact
    rows = [
        ("I/O", result.io_type.value),
        ("size", f"{human_bytes(art.size.bytes)} ({art.size.gzip_bytes:,} B gzipped)"),
        ("sha256", art.sha256),
        ("training", f"{result.train_samples} samples x {result.epochs} epoch(s), {result.seconds_training:.0f} s"
                     + (f" ({result.distribution['strategy']}, {result.distribution['replicas']} replicas)"
                        if result.distribution.get("strategy", "none") != "none" else "")),
        ("operators", ", ".join(f"{k} x{v}" for k, v in result.info.op_histogram().items())),
        ("float layers", ", ".join(f"{p.name} ({p.class_name})" for p in result.unsupported) or "none"),
        ("float ops", ", ".join(result.float_ops) or "none"),
    ]
    if result.preserve:
        summary = result.preserved
        rows.append(("preserved", f"{result.preserve}; exported int8 weights {summary.get('exported_int8_zero_fraction', 0) or 0:.1%} zeros"))
    if result.keras_path:
        rows.append(("keras model", result.keras_path))
    rows += [("manifest", art.manifest_path), ("report", result.report_path)]
    console.print(kv_table(f"Wrote {art.path}", rows))
