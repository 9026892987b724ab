"""``edgekit cluster``: weight clustering (weight sharing) with fine-tuning, and what it buys."""

from __future__ import annotations

import click

from edgekit.cli.cmd_prune import compression_command_options, render_compression
from edgekit.cli.options import (
    data_key_options,
    force_option,
    json_option,
    model_loading_options,
    preprocessing_from_options,
    preprocessing_options,
    task_option,
)
from edgekit.cli.render import print_json, shown_worker_done


@click.command(short_help="Cluster a Keras model's weights into a few shared values and fine-tune it.")
@click.argument("model", type=click.Path())
@compression_command_options
@click.option("--clusters", default=16, show_default=True, type=int, help="Distinct values per layer (per channel with --per-channel), 2-256.")
@click.option("--init", "init", type=click.Choice(["kmeans++", "linear"]), default="kmeans++", show_default=True,
              help="k-means initialization: kmeans++ (seeded) or evenly spaced between min and max.")
@click.option("--preserve-sparsity", is_flag=True, help="Keep zero weights at exactly zero (one of the values is 0), e.g. after pruning.")
@click.option("--per-channel", is_flag=True,
              help="One codebook scaled per output channel (at most --clusters values per channel); matches per-channel int8.")
@preprocessing_options
@data_key_options
@task_option
@model_loading_options
@force_option
@json_option
def cluster(model, data, val, output, seed, export, export_mode, runs, threads, scale, mean, std, x_key, y_key, tasks, unsafe, custom_objects,
            force, as_json, **settings):
    """Cluster the kernels of MODEL (.keras/.h5) with k-means and fine-tune on --data.

    \b
    Writes a plain Keras model whose kernels take at most --clusters distinct values per layer
    (per output channel with --per-channel) and OUT.cluster.report.json. Shared values shrink the file
    only once it is compressed (gzip) and do not make inference faster; the report shows the
    size on disk and gzipped and the latency of the int8 exports side by side.

    \b
    Example:
      edgekit cluster examples/fashion_mnist/model.keras --data train.npz --scale 1/255 \\
          --clusters 16 --per-channel -o out/clustered.keras
    """
    from edgekit.cli.options import build_config
    from edgekit.passes.cluster import ClusterConfig
    from edgekit.workflows.compress import cluster as run_cluster

    result = run_cluster(
        model, output, build_config(ClusterConfig, settings), data=data, val=val, seed=seed,
        preprocessing=preprocessing_from_options(scale, mean, std), export=export, export_mode=export_mode, runs=runs,
        threads=threads, force=force, unsafe=unsafe, custom_objects=custom_objects, x_key=x_key, y_key=y_key, tasks=tasks, progress=True,
    )
    if shown_worker_done(result, as_json):
        return
    if as_json:
        print_json(result.to_dict())
        return
    render_compression(result)
