"""``edgekit inspect``: what a .tflite file or Keras model contains."""

from __future__ import annotations

import click

from edgekit.cli.options import json_option, model_loading_options
from edgekit.cli.render import console, err_console, human_bytes, kv_table, print_json, tensor_rows


@click.command(short_help="Show operators, I/O, quantization and size of a model.")
@click.argument("artifact", type=click.Path())
@click.option("--lenient", is_flag=True, help="Show what can be read of a .tflite file that fails the structural checks, with every violation.")
@model_loading_options
@json_option
def inspect(artifact, lenient, unsafe, custom_objects, as_json):
    """Describe ARTIFACT: a .tflite file (operator histogram, inputs/outputs with quantization
    parameters, parameter count, size breakdown, metadata) or a Keras model (layers, parameters).
    """
    from edgekit.workflows.inspect import inspect_artifact

    info = inspect_artifact(artifact, lenient=lenient, unsafe=unsafe, custom_objects=custom_objects).to_dict()
    if as_json:
        print_json(info)
        return
    if info["kind"] == "tflite":
        _render_tflite(info)
    else:
        _render_keras(info)


def _render_tflite(info):
    from rich.table import Table

    console.print(kv_table(f"{info['path']} (TFLite, schema v{info['schema_version']})", [
        ("size", f"{human_bytes(info['bytes'])} ({info['bytes']:,} B)"),
        ("sha256", info["sha256"]),
        ("parameters", f"{info['parameters']:,}"),
        ("weights by dtype", ", ".join(f"{k.lower()}: {v:,}" for k, v in info["weight_dtypes"].items()) or "-"),
        ("subgraphs / operators", f"{info['subgraphs']} / {info['operators']}"),
        ("labels", ", ".join(info["labels"]) if info.get("labels") else "-"),
    ]))
    console.print("\n[bold]Inputs and outputs[/bold]")
    console.print(tensor_rows(info["inputs"] + info["outputs"]))
    ops = Table(title="Operators", title_justify="left", box=None, pad_edge=False)
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for name, count in info["op_histogram"].items():
        ops.add_row(name, str(count))
    console.print(ops)
    size = Table(title="Size breakdown", title_justify="left", box=None, pad_edge=False)
    size.add_column("part")
    size.add_column("bytes", justify="right")
    size.add_column("share", justify="right")
    for part, nbytes in info["size_breakdown"].items():
        size.add_row(part, f"{nbytes:,}", f"{100 * nbytes / max(info['bytes'], 1):.1f}%")
    console.print(size)
    if info["metadata"]:
        console.print("metadata: " + ", ".join(info["metadata"]))
    if info.get("standard_metadata"):
        _render_standard(info["standard_metadata"])
    for v in info.get("violations") or []:
        err_console.print(f"violation ({v['check']}) at {v['where']}: {v['message']}")


def _render_standard(std):
    """The standard TFLite metadata (what MediaPipe and Android Studio read)."""
    rows = [("name", std.get("name") or "-"), ("version", std.get("version") or "-"), ("description", std.get("description") or "-")]
    for kind in ("inputs", "outputs"):
        for t in std.get(kind, []):
            parts = [t.get("content") or "feature"]
            norm = t.get("normalization")
            if norm:
                parts.append("normalization (x - mean) / std: mean " + ", ".join(f"{v:g}" for v in norm["mean"])
                             + "; std " + ", ".join(f"{v:g}" for v in norm["std"]))
            if t.get("range_min") is not None and t.get("range_max") is not None:
                parts.append("range " + ", ".join(f"[{lo:g}, {hi:g}]" for lo, hi in zip(t["range_min"], t["range_max"])))
            files = [f["name"] for f in t.get("associated_files", [])]
            if files:
                parts.append("files " + ", ".join(files))
            rows.append((f"{kind[:-1]} {t.get('name')}", "; ".join(parts)))
    if std.get("files"):
        rows.append(("associated files", ", ".join(f"{name} ({size:,} B)" for name, size in std["files"].items())))
    console.print(kv_table("Standard metadata (TFLITE_METADATA: MediaPipe, Android Studio, LiteRT support library)", rows))


def _render_keras(info):
    from rich.table import Table

    console.print(kv_table(f"{info['path']} ({info['kind']})", [
        ("parameters", f"{info['parameters']:,}" if info["parameters"] is not None else "-"),
        ("trainable", f"{info['trainable_parameters']:,}" if info.get("trainable_parameters") is not None else "-"),
        ("input", f"{info['inputs'][0]['shape']} {info['inputs'][0]['dtype']}"),
        ("sha256", info["sha256"]),
    ]))
    table = Table(title="Layers", title_justify="left", box=None, pad_edge=False)
    for col in ("name", "class", "output shape", "params"):
        table.add_column(col)
    for layer in info["layers"]:
        table.add_row(layer["name"], layer["class"], str(layer["output_shape"]), f"{layer['parameters']:,}")
    console.print(table)
