"""``edgekit distill``: train a small student from a large teacher (knowledge distillation)."""

from __future__ import annotations

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


@click.command(short_help="Distill a teacher into a smaller student (Hinton KD, optional hints).")
@click.option("--teacher", required=True, type=click.Path(), help="The trained teacher model (.keras or .h5).")
@click.option("--student", type=click.Path(), default=None, help="The student architecture (.keras); its weights are the start.")
@click.option("--width", type=float, default=None, help="Derive the student from the teacher: filters/units times this, e.g. 0.5.")
@click.option("--data", required=True, type=click.Path(), help="Training data: .npz (x, y), .npy or an image folder.")
@click.option("--val", type=click.Path(), default=None, help="Labelled validation data: accuracy of teacher, baseline and student.")
@click.option("--epochs", required=True, type=int, help="Training epochs.")
@click.option("--temperature", default=1.0, show_default=True, type=float, help="Softening temperature T of the teacher's outputs.")
@click.option("--alpha", default=0.3, show_default=True, type=float, help="Weight of the teacher term (1 - alpha: hard labels).")
@click.option("--hint", "hints", multiple=True, metavar="TEACHER_LAYER:STUDENT_LAYER",
              help="Feature distillation between two layers (repeatable); a 1x1/linear adapter maps channels.")
@click.option("--hint-weight", default=1.0, show_default=True, type=float, help="Weight of the hint (relative MSE) loss.")
@click.option("--baseline", is_flag=True, help="Also train the same student on the labels alone (same start, epochs, data, seed).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for initialisation, batch order and sampling.")
@click.option("--batch-size", default=128, show_default=True, type=int, help="Training batch size.")
@click.option("--lr", "learning_rate", default=1e-3, show_default=True, type=float, help="Adam learning rate.")
@click.option("--augment", type=click.Choice(["none", "flip", "shift", "flip+shift"]), default="none", show_default=True,
              help="Random augmentation of training batches (the teacher then runs on every batch).")
@click.option("--reinit", is_flag=True, help="Re-initialise the --student's weights (seeded) instead of starting from them.")
@click.option("--limit", type=int, default=None, help="Use a seeded random subset of this many training samples.")
@click.option("--export/--no-export", default=True, show_default=True,
              help="Convert teacher, baseline and student to int8 TFLite and measure accuracy, size and latency.")
@click.option("--samples", default=100, show_default=True, type=int, help="Calibration samples for the int8 export.")
@click.option("--runs", default=50, show_default=True, type=int, help="Timed runs per model for the latency comparison.")
@click.option("--threads", default=1, show_default=True, type=int, help="Interpreter threads for the latency comparison.")
@click.option("-o", "--output", required=True, type=click.Path(), help="The student .keras to write (OUT.distill.report.json beside it).")
@strategy_option
@preprocessing_options
@data_key_options
@task_option
@model_loading_options
@force_option
@json_option
def distill(teacher, student, width, data, val, epochs, temperature, alpha, hints, hint_weight, baseline, seed, batch_size,
            learning_rate, augment, reinit, limit, export, samples, runs, threads, output, strategy, scale, mean, std, x_key, y_key, tasks,
            unsafe, custom_objects, force, as_json):
    """Distill --teacher into a smaller student and compare them side by side.

    \b
    loss = alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * CE(labels, student)
    Teachers and students may output logits or probabilities (detected; the report says which).
    The teacher runs once over --data and its outputs are reused every epoch unless --augment is
    on. With --baseline the report shows teacher, student-from-labels and distilled student:
    accuracy on --val, parameters, int8 size and int8 latency.

    \b
    Example:
      edgekit distill --teacher examples/fashion_mnist/model.keras --width 0.5 \\
          --data train.npz --val examples/fashion_mnist/val.npz --scale 1/255 \\
          --epochs 5 --baseline -o out/student.keras
    """
    from edgekit.passes.distill import DistillConfig
    from edgekit.workflows.distill import distill as run_distill

    config = build_config(DistillConfig, {
        "student": student, "width": width, "epochs": epochs, "temperature": temperature, "alpha": alpha, "hints": hints,
        "hint_weight": hint_weight, "batch_size": batch_size, "learning_rate": learning_rate, "augment": augment, "reinit": reinit,
        "limit": limit, "strategy": strategy,
    })

    def on_epoch(tag: str, epoch: int, total: int, logs: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if k in ("loss", "accuracy", "val_accuracy"))
        err_console.print(f"{tag} epoch {epoch}/{total}: {shown}")

    result = run_distill(
        teacher, output, data=data, config=config, val=val, baseline=baseline, seed=seed,
        preprocessing=preprocessing_from_options(scale, mean, std), export=export, calibration_samples=samples, runs=runs,
        threads=threads, force=force, unsafe=unsafe, custom_objects=custom_objects, x_key=x_key, y_key=y_key, tasks=tasks,
        on_epoch=None if as_json else on_epoch,
    )
    if shown_worker_done(result, as_json):
        return
    if as_json:
        print_json(result.to_dict())
        return
    render(result)


def render(result) -> None:
    from rich.table import Table

    from edgekit.core.datatypes import METRIC_LABELS, PERCENT_METRICS, format_metric

    metric = result.rows["distilled"].metric
    label = METRIC_LABELS.get(metric, metric)
    unit = "points " + label if metric in PERCENT_METRICS else label + (" (lower is better)" if result.lower_is_better else "")
    caption = "baseline: the same student trained on the labels alone (same start, epochs, data, seed)" if "baseline" in result.rows else None
    table = Table(title=f"Teacher vs student ({label}; int8 TFLite size and latency)", title_justify="left", caption=caption,
                  caption_justify="left", box=None, pad_edge=False)
    for col in ("model", "params", label, f"int8 {label}", "int8 size", "gzip", "p50 ms", "mean ms"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=True)
    for key, row in result.rows.items():
        lat = row.latency
        table.add_row(
            key, f"{row.parameters:,}", format_metric(row.metric, row.top1), format_metric(row.metric, row.int8_top1),
            human_bytes(row.int8_size.bytes) if row.int8_size else "-", human_bytes(row.int8_size.gzip_bytes) if row.int8_size else "-",
            fmt(lat.p50_ms, 3) if lat else "-", fmt(lat.mean_ms, 3) if lat else "-",
        )
    console.print(table)
    gain, gap = result.gain_over_baseline(), result.gap_to_teacher()
    rows = [
        ("wrote", result.output),
        ("teacher outputs", result.fit.teacher_outputs.describe()),
        ("student outputs", result.fit.student_outputs.describe()),
        ("teacher runs", result.fit.cache_note),
        ("parameters", f"teacher/student = {result.compression:.2f}x"),
    ]
    if gain is not None:
        rows.append(("vs baseline", f"{gain:+.4g} {unit} better from distillation" if gain >= 0 else f"{-gain:.4g} {unit} worse with distillation"))
    if gap is not None:
        rows.append(("vs teacher", f"{gap:.4g} {unit} behind the teacher" if gap >= 0 else f"{-gap:.4g} {unit} ahead of the teacher"))
    for adapter in result.fit.adapters:
        rows.append(("hint", f"{adapter['teacher_layer']} <- {adapter['student_layer']} ({adapter['adapter']} adapter)"))
    rows.append(("report", result.report_path))
    console.print(kv_table("", rows))
    changed = result.width_changes
    if changed:
        width_table = Table(title="Width", title_justify="left", box=None, pad_edge=False)
        for col in ("layer", "class", "teacher", "student", ""):
            width_table.add_column(col)
        for c in changed:
            width_table.add_row(c.layer, c.layer_class, f"{c.field}={c.teacher}", f"{c.field}={c.student}", c.note)
        console.print(width_table)
    for note in result.notes:
        console.print(f"note: {note}")
