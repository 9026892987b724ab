"""``edgekit check``: offline per-operator delegate compatibility of a .tflite artifact."""

from __future__ import annotations

import click

from edgekit.cli.options import json_option
from edgekit.cli.render import console, kv_table, print_json


@click.command(short_help="Which nodes of a .tflite model run on the GPU/NNAPI/NPU/XNNPACK delegate, and why not.")
@click.argument("artifact", type=click.Path())
@click.option("--target", required=True, help="gpu, nnapi, npu or cpu (XNNPACK).")
@click.option("--api-level", type=int, default=None, help="Android API level for --target nnapi [default: 34]; 35+ warns (NNAPI deprecated).")
@click.option("--all", "show_all", is_flag=True, help="List every node, not only those that stay off the delegate.")
@json_option
def check(artifact, target, api_level, show_all, as_json):
    """Check ARTIFACT (a .tflite file or an `edgekit export` directory) against edgekit's rule
    tables for the target's delegate, transcribed from LiteRT's own support checks
    (`edgekit docs rules`). For each node that will not run on the delegate: the op, why,
    the Keras layer it came from (when the names tell) and a suggested rewrite. Summary: share of
    nodes and of FLOPs on the delegate and the number of partitions TFLite will make.
    """
    from edgekit.workflows.check import check_artifact

    report = check_artifact(artifact, target, api_level=api_level)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(report.to_dict())
        return
    s = report.summary
    rows = [
        ("delegate", report.delegate + (f" (Android API {report.api_level})" if report.api_level else "")),
        ("nodes on the delegate", f"{s.supported_nodes}/{s.nodes} ({100 * s.node_share:.1f}%)"),
        ("FLOPs on the delegate", f"{s.supported_flops:,}/{s.flops:,} ({100 * s.flop_share:.1f}%)"),
        ("partitions", f"{s.partitions}" + (f" (the delegate takes the largest {s.max_delegated_partitions}: "
                                            f"{s.delegated_nodes} nodes, {100 * s.delegated_flop_share:.1f}% of FLOPs)"
                                            if s.max_delegated_partitions and s.partitions > s.max_delegated_partitions else "")),
    ]
    console.print(kv_table(f"{report.artifact} on {report.target}", rows))
    if report.unsupported or show_all:
        console.print(unsupported_table(report, show_all=show_all))
    else:
        console.print(f"All {s.nodes} nodes run on the {report.delegate} delegate ({s.partitions} partition).")
    for note in report.notes:
        console.print(f"[dim]note: {note}[/dim]")


def unsupported_table(report, show_all: bool = False):
    """A rich table of the nodes that stay off the delegate (or all nodes)."""
    from rich.table import Table

    title = "Nodes" if show_all else "Not on the delegate"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for col in ("#", "op", "on", "why", "layer", "suggestion"):
        table.add_column(col, overflow="fold")
    for node in report.nodes if show_all else report.unsupported:
        table.add_row(str(node.index), f"{node.op} v{node.version}", "yes" if node.supported else "no",
                      "; ".join(node.reasons) or (node.note or "-"), node.layer or "-", node.suggestion or "-")
    return table
