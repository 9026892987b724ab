"""``edgekit check``: offline per-operator delegate compatibility of a .tflite artifact."""

from __future__ import annotations

import click

from edgekit.cli.options import json_option
from edgekit.cli.render import console, kv_table, print_json


@click.command(short_help="Which nodes of a .tflite model run on the GPU/NNAPI/NPU/XNNPACK delegate, and why not.")
@click.argument("artifact", type=click.Path())
@click.option("--target", required=True, help="gpu, nnapi, npu or cpu (XNNPACK); or mediapipe (would MediaPipe Tasks accept the file?).")
@click.option("--api-level", type=int, default=None, help="Android API level for --target nnapi [default: 34]; 35+ warns (NNAPI deprecated).")
@click.option("--all", "show_all", is_flag=True, help="List every node, not only those that stay off the delegate.")
@click.option("--require-full", is_flag=True,
              help="Fail (exit 8) unless every node runs on the delegate, like benchmark_model's --require_full_delegation.")
@click.option("--ignore-manifest", is_flag=True, help="Check an edgekit artifact whose sha256 no longer matches its manifest.")
@json_option
def check(artifact, target, api_level, show_all, require_full, ignore_manifest, as_json):
    """Check ARTIFACT (a .tflite file or an `edgekit export` directory) against edgekit's rule
    tables for the target's delegate, transcribed from LiteRT's own support checks
    (`edgekit docs rules`). For each node that will not run on the delegate: the op, why,
    the Keras layer it came from (when the names tell) and a suggested rewrite. Summary: share of
    nodes and of FLOPs on the delegate and the number of partitions TFLite will make.
    """
    if str(target).lower() == "mediapipe":
        _check_mediapipe(artifact, as_json)
        return
    from edgekit.workflows.check import check_artifact

    report = check_artifact(artifact, target, api_level=api_level, ignore_manifest=ignore_manifest)
    for warning in report.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(report.to_dict())
        _require_full(report, require_full)
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
    _require_full(report, require_full)


def _require_full(report, required: bool) -> None:
    """With --require-full, nodes off the delegate fail the command (after the report is shown)."""
    if not required or not report.unsupported:
        return
    from edgekit.core.errors import GateFailed

    ops = sorted({n.op for n in report.unsupported})
    raise GateFailed(f"{len(report.unsupported)} of {report.summary.nodes} nodes stay off the {report.delegate} delegate "
                     f"({', '.join(ops)}); full delegation was required",
                     hint="rewrite the layers named above, or drop --require-full to accept a CPU fallback")


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


def _check_mediapipe(artifact, as_json: bool) -> None:
    """Why MediaPipe Tasks' ImageClassifier would refuse the file (exit 8), or that it accepts it."""
    from edgekit.core.errors import GateFailed
    from edgekit.workflows.check import check_mediapipe_artifact

    check = check_mediapipe_artifact(artifact)
    if as_json:
        print_json(check.to_dict())
    else:
        rows = [("verdict", "MediaPipe accepts it" if check.ok else "MediaPipe REFUSES it"), ("labels", str(check.labels or 0))]
        rows += [(f"error {p.code}", f"{p.message} ({p.hint})") for p in check.errors]
        rows += [(f"warning {p.code}", f"{p.message} ({p.hint})") for p in check.warnings]
        console.print(kv_table(f"{artifact} for MediaPipe Tasks ({check.task})", rows))
    if check.errors:
        raise GateFailed(f"MediaPipe would refuse {artifact}: {check.errors[0].message}", hint=check.errors[0].hint)
