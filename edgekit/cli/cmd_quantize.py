"""``edgekit quantize``: post-training quantization to a .tflite file with a manifest."""

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
    task_option,
)
from edgekit.cli.render import console, err_console, human_bytes, kv_table, print_json, tensor_rows

MODES = ["float32", "float16", "dynamic", "int8", "int16x8"]
QUANTIZER_MODES = ["int4", "int8-selective"]  # litert-quantizer (edgekit[quantizer])
IO_TYPES = ["float", "int8", "uint8", "int16"]


@click.command(short_help="Quantize a Keras model to a .tflite file (PTQ).")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .tflite file to write (a manifest .json is written beside it).")
@click.option("--mode", type=click.Choice(MODES + QUANTIZER_MODES), default="int8", show_default=True, help="Quantization mode.")
@click.option("--rules", type=click.Path(dir_okay=False), default=None,
              help="int8-selective: a per-layer precision file (YAML: default, io, rules of layer/op/precision).")
@click.option("--int4-granularity", type=click.Choice(["channel", "block32", "block64", "block128"]), default="channel", show_default=True,
              help="int4: one scale per output channel, or per block of input weights (fully connected layers).")
@click.option("--data", type=click.Path(), default=None, help="Calibration data: .npz, .npy or an image folder (needed for int8, int16x8).")
@click.option("--samples", "calibration_samples", default=100, show_default=True, type=int, help="Calibration samples drawn (seeded) from --data.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for the calibration sample.")
@click.option("--io-type", type=click.Choice(IO_TYPES), default="float", show_default=True, help="Input/output dtype (int8/uint8 need --mode int8; int16 needs int16x8).")
@click.option("--weights", type=click.Choice(["auto", "per-channel", "per-tensor"]), default="auto", show_default=True,
              help="int8 weight scales: one per output channel, or one per tensor. auto: per-tensor for a model clustered "
                   "with one codebook per layer (keeps its shared values after int8), per-channel otherwise.")
@click.option("--allow-select-tf-ops", is_flag=True, help="Allow TensorFlow ops via Flex (delegates cannot run them).")
@preprocessing_options
@data_key_options
@task_option
@model_loading_options
@force_option
@json_option
def quantize(model, output, mode, rules, int4_granularity, data, calibration_samples, seed, io_type, weights, allow_select_tf_ops, scale,
             mean, std, x_key, y_key, tasks, unsafe, custom_objects, force, as_json):
    """Quantize MODEL (.keras, .h5 or SavedModel directory) to a TFLite file.

    \b
    Modes: float32 (no quantization), float16 (half-size weights, GPU friendly),
    dynamic (int8 weights), int8 (full integer, needs --data), int16x8 (int16 activations,
    needs --data). Only TFLite builtin ops are allowed unless --allow-select-tf-ops.
    With edgekit[quantizer] (litert-quantizer): int4 (int4 weights, float activations) and
    int8-selective (per-layer precision from --rules).
    """
    if mode in QUANTIZER_MODES:
        _quantize_mixed(model, output, mode=mode, rules=rules, granularity=int4_granularity, data=data, samples=calibration_samples,
                        seed=seed, preprocessing=preprocessing_from_options(scale, mean, std), force=force, unsafe=unsafe,
                        custom_objects=custom_objects, x_key=x_key, y_key=y_key, as_json=as_json)
        return
    if rules is not None:
        raise click.BadParameter("--rules is for --mode int8-selective", param_hint="--rules")
    from edgekit.passes.quantize import QuantizeConfig
    from edgekit.workflows.quantize import quantize as run_quantize

    config = build_config(QuantizeConfig, {"mode": mode, "io_type": io_type, "calibration_samples": calibration_samples, "weights": weights,
                                           "allow_select_tf_ops": allow_select_tf_ops, "layer_stats": False})
    with err_console.status(f"Quantizing ({mode})...", spinner="dots") if not as_json else contextlib.nullcontext():
        result = run_quantize(
            model, output, config=config, data=data, seed=seed, preprocessing=preprocessing_from_options(scale, mean, std),
            force=force, unsafe=unsafe, custom_objects=custom_objects, x_key=x_key, y_key=y_key, tasks=tasks,
        )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(result.to_dict())
        return
    art = result.artifact
    console.print(kv_table(f"Wrote {art.path}", [
        ("mode", f"{result.mode.value} (I/O {_io_dtypes(result)})"),
        *([("weights", f"{result.weights} ({result.weights_reason})")] if result.weights else []),
        ("size", f"{human_bytes(art.size.bytes)} ({art.size.gzip_bytes:,} B gzipped)"),
        ("sha256", art.sha256),
        ("calibration", f"{result.calibration_samples} samples" if result.calibration_samples else "-"),
        ("conversion", f"{result.conversion_seconds:.1f} s"),
        ("operators", ", ".join(f"{k} x{v}" for k, v in result.info.op_histogram().items())),
        ("manifest", art.manifest_path),
    ]))
    console.print(tensor_rows([t.to_dict() for t in result.info.inputs + result.info.outputs]))


def _quantize_mixed(model, output, *, as_json: bool, **kwargs) -> None:
    from edgekit.workflows.quantize_mixed import quantize_mixed

    with err_console.status(f"Quantizing ({kwargs['mode']}, litert-quantizer)...", spinner="dots") if not as_json else contextlib.nullcontext():
        result = quantize_mixed(model, output, **kwargs)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(result.to_dict())
        return
    art = result.artifact
    layers = result.details.get("layers", [])
    kinds = sorted({f"{layer['weights'] or '-'} weights / {layer['activations']} activations" for layer in layers if layer["weights"]})
    console.print(kv_table(f"Wrote {art.path}", [
        ("mode", f"{result.mode} (litert-quantizer)"),
        ("weights", ", ".join(f"{k.lower()}: {v:,}" for k, v in result.info.weight_dtypes().items())),
        ("layers", "; ".join(kinds) or "-"),
        ("size", f"{human_bytes(art.size.bytes)} ({art.size.gzip_bytes:,} B gzipped)"),
        ("sha256", art.sha256),
        ("manifest", art.manifest_path),
    ]))


def _io_dtypes(result) -> str:
    """The artifact's actual input -> output dtypes (``int32 -> float32`` for a token model)."""
    def names(tensors) -> str:
        return ",".join(dict.fromkeys(str(t.dtype).lower() for t in tensors)) or "-"
    ins, outs = names(result.info.inputs), names(result.info.outputs)
    return ins if ins == outs else f"{ins} -> {outs}"
