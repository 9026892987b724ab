"""``edgekit export``: convert a model for a deployment target into an artifact directory."""

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
)
from edgekit.cli.render import console, err_console, human_bytes, kv_table, print_json

TARGETS = ["cpu", "gpu", "nnapi", "npu"]
EDGE_TARGETS = ["mediapipe", "mcu", "ethos-u55", "ethos-u65", "ethos-u85"]
MODES = ["float32", "float16", "dynamic", "int8"]
IO_TYPES = ["float", "int8", "uint8"]


@click.command(short_help="Export a Keras model for a delegate, MediaPipe, a microcontroller or an Ethos-U NPU.")
@click.argument("model", type=click.Path())
@click.option("--target", required=True, type=click.Choice(TARGETS + EDGE_TARGETS, case_sensitive=False),
              help="cpu (XNNPACK int8), gpu (float16), nnapi (int8), npu (int8), mediapipe, mcu (TFLite Micro) or ethos-u55/u65/u85 (Vela).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(), help="Artifact directory to create.")
@click.option("--mode", type=click.Choice(MODES), default=None, help="Override the target's quantization mode.")
@click.option("--io-type", type=click.Choice(IO_TYPES), default=None, help="Override the input/output dtype.")
@click.option("--data", type=click.Path(), default=None, help="Calibration data (int8) and validation data for the GPU fp16 check.")
@click.option("--samples", default=100, show_default=True, type=int, help="Calibration samples drawn (seeded) from --data.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for the calibration sample.")
@click.option("--labels", default=None, help="Class names: a text file (one per line) or a comma list [default: the data's labels].")
@click.option("--api-level", type=int, default=None, help="Android API level of the device (nnapi): rules per level; 35+ warns.")
@click.option("--npu", "npu_vendor", default=None, help="AOT-compile for an NPU vendor: qualcomm, mediatek or google_tensor.")
@click.option("--soc", default=None, help="The SoC to AOT-compile for (e.g. SM8650) [default: all the vendor's SoCs].")
@click.option("--allow-select-tf-ops", is_flag=True, help="Allow TensorFlow ops via Flex (refused for gpu and npu).")
@click.option("--no-fp16-check", is_flag=True, help="Skip the float16 risk check (gpu).")
@click.option("--fp16-tolerance", default=0.01, show_default=True, type=float, help="Relative error that flags an output or layer in the fp16 check.")
@click.option("--fp16-samples", default=100, show_default=True, type=int, help="Validation samples for the fp16 check.")
@click.option("--val", type=click.Path(), default=None, help="mcu: labelled data for accuracy on TFLite Micro's kernels [default: --data].")
@click.option("--device", default=None, help="mcu: a board profile whose max_arena_kb / max_flash_kb gate the export.")
@click.option("--arena-margin", default=0.2, show_default=True, type=float, help="mcu: margin added to the measured tensor arena.")
@click.option("--system-config", default=None, help="ethos-u: Vela system configuration [default: the target's].")
@click.option("--accelerator-config", default=None, help="ethos-u: Vela accelerator (e.g. ethos-u55-256) [default: the target's].")
@click.option("--memory-mode", default=None, help="ethos-u: Vela memory mode [default: the target's].")
@devices_dir_option
@preprocessing_options
@data_key_options
@model_loading_options
@force_option
@json_option
def export(model, target, out_dir, mode, io_type, data, samples, seed, labels, api_level, npu_vendor, soc, allow_select_tf_ops,
           no_fp16_check, fp16_tolerance, fp16_samples, val, device, arena_margin, system_config, accelerator_config, memory_mode,
           devices_dir, scale, mean, std, x_key, y_key, unsafe, custom_objects, force, as_json):
    """Convert MODEL (.keras, .h5 or SavedModel directory) for a deployment target and write OUTPUT/
    with model.tflite (labels and preprocessing embedded as metadata), model.json (manifest) and
    compatibility.json (which nodes the target's delegate runs, and why not).

    \b
    Defaults per target (override with --mode / --io-type):
      cpu    int8 weights and activations, float I/O (XNNPACK)   needs --data
      gpu    float16 weights, float I/O; fp16 risk check with --data
      nnapi  int8, int8 I/O                                      needs --data
      npu    int8, int8 I/O; --npu VENDOR compiles ahead of time  needs --data
      mediapipe  int8 (float I/O; --io-type uint8) or float32, RGB front end for gray models,
                 normalization and labels as standard metadata; checked as MediaPipe checks it
      mcu    full int8 for TFLite Micro: op check, tensor arena, accuracy on TFLM, model_data.cc/.h
      ethos-u55|u65|u85  full int8 compiled by Vela: NPU/CPU ops, SRAM, flash, cycles
    """
    target = target.lower()
    if target in EDGE_TARGETS:
        _export_edge(model, target, out_dir, mode=mode, io_type=io_type, data=data, val=val, samples=samples, seed=seed,
                     preprocessing=preprocessing_from_options(scale, mean, std), labels=labels, device=device, devices_dir=devices_dir,
                     arena_margin=arena_margin, system_config=system_config, accelerator_config=accelerator_config,
                     memory_mode=memory_mode, force=force, unsafe=unsafe, custom_objects=custom_objects, x_key=x_key, y_key=y_key,
                     as_json=as_json)
        return
    from edgekit.workflows.export import export as run_export

    with err_console.status(f"Exporting for {target}...", spinner="dots") if not as_json else contextlib.nullcontext():
        result = run_export(
            model, target, out_dir, mode=mode, io_type=io_type, data=data, samples=samples, seed=seed,
            preprocessing=preprocessing_from_options(scale, mean, std), labels=labels, api_level=api_level,
            npu=npu_vendor, soc=soc, allow_select_tf_ops=allow_select_tf_ops, fp16_check=not no_fp16_check,
            fp16_tolerance=fp16_tolerance, fp16_samples=fp16_samples, force=force, unsafe=unsafe,
            custom_objects=custom_objects, x_key=x_key, y_key=y_key,
        )
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(result.to_dict())
        return
    summary = result.report.summary
    art = result.artifact
    rows = [
        ("target", f"{result.target} ({result.report.delegate} delegate)"),
        ("mode", f"{result.mode.value} (I/O {result.io_type.value})"),
        ("weights", ", ".join(f"{k.lower()}: {v:,}" for k, v in result.info.weight_dtypes().items()) or "-"),
        ("size", f"{human_bytes(art.size.bytes)} ({art.size.gzip_bytes:,} B gzipped)"),
        ("sha256", art.sha256),
        ("on the delegate", f"{summary.supported_nodes}/{summary.nodes} nodes ({100 * summary.node_share:.1f}%), "
                            f"{100 * summary.flop_share:.1f}% of FLOPs, {summary.partitions} partition(s)"),
    ]
    if result.fp16 is not None:
        s = result.fp16.summary()
        rows.append(("fp16 risk", ("FLAGGED" if s["risky"] else "ok") + f": output rel. error {s['max_output_relative_error']}, "
                     f"top-1 agreement {s['min_top1_agreement']}%, max |activation| {s['max_abs_activation']}"))
    for m in result.npu_models:
        if m.get("file"):
            rows.append(("npu", f"{m['target']}: npu/{m['file']}"))
    rows.append(("manifest", art.manifest_path))
    console.print(kv_table(f"Wrote {result.out_dir}/", rows))
    if result.report.unsupported:
        from edgekit.cli.cmd_check import unsupported_table

        console.print(unsupported_table(result.report))


def _export_edge(model, target, out_dir, *, labels, as_json, **kwargs) -> None:
    """The mediapipe / mcu / ethos-u targets (:mod:`edgekit.workflows.export_edge`)."""
    from edgekit.workflows.export import read_labels
    from edgekit.workflows.export_edge import export_edge

    with err_console.status(f"Exporting for {target}...", spinner="dots") if not as_json else contextlib.nullcontext():
        result = export_edge(model, target, out_dir, labels=read_labels(labels), **kwargs)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(result.to_dict())
        return
    art, d = result.artifact, result.details
    rows = [("target", target), ("mode", f"{result.mode.value} (I/O {result.io_type.value})"),
            ("size", f"{human_bytes(art.size.bytes)} ({art.size.gzip_bytes:,} B gzipped)"), ("sha256", art.sha256)]
    if "mediapipe_check" in d:
        check = d["mediapipe_check"]
        rows.append(("MediaPipe", f"accepted by MediaPipe's checks ({check['labels'] or 0} labels embedded)"))
    if "rgb_adapter" in d:
        rows.append(("RGB front end", d["rgb_adapter"]))
    if "arena" in d:
        arena = d["arena"]
        rows.append(("ops", f"all {len(d['ops']['ops'])} op types have TFLite Micro kernels"))
        rows.append(("tensor arena", f"{arena['recommended_bytes']:,} B (used {arena['used_bytes']:,} B + {arena['margin']:.0%} margin)"))
        rows.append(("flash (model)", f"{d['flash_bytes']:,} B"))
        if "accuracy" in d:
            acc = d["accuracy"]
            rows.append(("accuracy on TFLM", f"{acc['tflm_top1']:.2f}% vs LiteRT {acc['litert_top1']:.2f}% on {acc['samples']} samples "
                                              f"(top-1 agreement {acc['top1_agreement']:.1f}%)" if acc["tflm_top1"] is not None
                         else f"top-1 agreement with LiteRT {acc['top1_agreement']:.1f}% on {acc['samples']} samples"))
        if "budget" in d:
            rows.append(("budget", f"{d['budget']['device']}: fits (max_arena_kb {d['budget']['max_arena_kb']}, max_flash_kb {d['budget']['max_flash_kb']})"))
    if "vela" in d:
        v = d["vela"]
        rows.append(("NPU ops", f"{v['npu_ops']} of {v['npu_ops'] + v['cpu_ops']} on the NPU ({100 * v['npu_op_share']:.0f}%)"
                                + (f"; on the CPU: {', '.join(sorted({c['op'] for c in v['cpu_layers']}))}" if v["cpu_layers"] else "")))
        rows.append(("memory", f"SRAM {v['sram_kib']:.1f} KiB, flash {v['flash_kib']:.1f} KiB, DRAM {v['dram_kib']:.1f} KiB"))
        rows.append(("estimate", f"{v['cycles_total']:,} cycles, {v['inference_ms_estimate']:.3f} ms at {v['core_clock_hz'] / 1e6:.0f} MHz (NPU part)"))
        rows.append(("top layers", "; ".join(f"{t['op']} {t['cycles']:,} cycles" for t in v["top_layers"][:3])))
    rows.append(("files", ", ".join(result.files)))
    console.print(kv_table(f"Wrote {result.out_dir}/", rows))
