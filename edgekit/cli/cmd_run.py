"""``edgekit run RECIPE``: run a recipe's passes, measure the result, check its gates."""

from __future__ import annotations

import contextlib

import click

from edgekit.cli.options import (
    devices_dir_option,
    force_option,
    json_option,
    model_loading_options,
    preprocessing_from_options,
    preprocessing_options,
)
from edgekit.cli.render import console, err_console, show_gated_report, shown_worker_done

quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress output (errors and the result only).")


@contextlib.contextmanager
def progress_status(enabled: bool, title: str):
    """Progress as dim lines on stderr (the passes' own training progress bars print between them)."""
    if not enabled:
        yield lambda _msg: None
        return
    err_console.print(f"[bold]{title}[/bold]")
    yield lambda message: err_console.print(f"[dim]  {message}[/dim]")


@click.command(short_help="Run a recipe (pass chain with gates) on a model.")
@click.argument("recipe")
@click.option("--model", required=True, type=click.Path(), help="The Keras model to optimize (.keras or .h5).")
@click.option("--data", type=click.Path(), default=None, help="Training/calibration data: .npz (x, y), .npy or an image folder.")
@click.option("--val", type=click.Path(), default=None, help="Validation data for accuracy [default: held out from --data when a pass trains].")
@click.option("--device", default=None, help="Measure on this device profile (name or .yaml path) [default: the recipe's, else this machine].")
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (absent or empty unless --force).")
@click.option("--recipes-dir", type=click.Path(file_okay=False), default=None, help="A folder of your own recipes, searched first.")
@click.option("--no-html", is_flag=True, help="Skip report.html (report.json is always written).")
@preprocessing_options
@model_loading_options
@devices_dir_option
@force_option
@quiet_option
@json_option
def run(recipe, model, data, val, device, out_dir, recipes_dir, no_html, scale, mean, std, unsafe, custom_objects, devices_dir,
        force, quiet, as_json):
    """Run RECIPE (a bundled name such as int8-cpu, or a .yaml path) on --model.

    \b
    Writes OUT/: model.tflite + model.json (the artifact and its manifest), steps/ (the float32
    reference and every intermediate model), recipe.yaml (resolved, rerunnable), report.json and
    report.html. Exits 0 when every gate passes, 8 when a gate fails (everything is still written),
    9 for an invalid recipe.

    \b
    Example:
      edgekit run int8-cpu --model examples/fashion_mnist/model.keras \\
          --data examples/fashion_mnist/calib.npz --val examples/fashion_mnist/val.npz --scale 1/255 -o out/run
    """
    from edgekit.core.errors import GateFailed
    from edgekit.workflows.run import run_recipe

    show = not (quiet or as_json)
    failure: GateFailed | None = None
    with progress_status(show, "Running recipe...") as say:
        try:
            result = run_recipe(recipe, model, data, out_dir=out_dir, val=val, device=device, devices_dir=devices_dir,
                                recipes_dir=recipes_dir, preprocessing=preprocessing_from_options(scale, mean, std), force=force,
                                unsafe=unsafe, custom_objects=custom_objects, progress=say, training_progress=show, html=not no_html)
            if shown_worker_done(result, as_json):
                return
            report = result.to_dict()
        except GateFailed as exc:
            failure = exc
            report = None
    show_gated_report(report, failure, out_dir, as_json=as_json, quiet=quiet, render=render_run)


def render_run(report: dict, out_dir: str) -> None:
    from rich.table import Table

    from edgekit.cli.render import fmt, human_bytes

    table = Table(title=f"Recipe {report['recipe']['name']}: {' -> '.join(p['pass'] for p in report['recipe']['passes'])}",
                  title_justify="left", box=None, pad_edge=False)
    for col in ("artifact", "bytes", "smaller", "top-1 %", "drop", "p50 ms", "p90 ms", "faster"):
        table.add_column(col, justify="left" if col == "artifact" else "right")
    for row in report["candidates"]:
        table.add_row(row["name"], human_bytes(row["bytes"]), fmt(row.get("smaller_than_reference")) + "x", fmt(row.get("value")),
                      fmt(row.get("drop")), fmt(row.get("p50_ms"), 4), fmt(row.get("p90_ms"), 4),
                      fmt(row.get("faster_than_reference")) + "x")
    console.print(table)
    for gate in report["gates"]:
        mark = "[green]pass[/green]" if gate["passed"] else "[red]FAIL[/red]"
        console.print(f"gate {gate['gate']}: {mark}  {gate['detail']}")
    if not report["gates"]:
        console.print("no gates in this recipe")
    for warning in report.get("warnings", []):
        console.print(f"[yellow]note:[/yellow] {warning}")
    console.print(f"wrote {out_dir}/: model.tflite, model.json, recipe.yaml, report.json, report.html, steps/")
