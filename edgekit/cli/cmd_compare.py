"""``edgekit compare``: two artifacts side by side, with a noise-aware speed verdict."""

from __future__ import annotations

import contextlib

import click

from edgekit.cli.options import data_key_options, devices_dir_option, json_option, preprocessing_from_options, preprocessing_options
from edgekit.cli.render import console, err_console, fmt, human_bytes, kv_table, print_json


@click.command(short_help="Compare two .tflite artifacts: size, accuracy, agreement, latency.")
@click.argument("a", type=click.Path())
@click.argument("b", type=click.Path())
@click.option("--data", type=click.Path(), default=None, help="Data both run on: .npz (x, y), .npy or an image folder [default: size and latency only].")
@click.option("--device", default="local", show_default=True, help="Device profile name or .yaml path (edgekit devices list).")
@click.option("--runs", default=50, show_default=True, type=int, help="Timed inference runs per round.")
@click.option("--warmup", default=5, show_default=True, type=int, help="Untimed warm-up runs before each round.")
@click.option("--rounds", default=5, show_default=True, type=int, help="Interleaved rounds (A, B, A, B...): their spread is the noise.")
@click.option("--threads", default=None, type=int, help="Interpreter threads [default: the profile's threads].")
@click.option("--samples", type=int, default=None, help="Use a seeded subset of this many samples of --data.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for --samples.")
@preprocessing_options
@data_key_options
@devices_dir_option
@json_option
def compare(a, b, data, device, runs, warmup, rounds, threads, samples, seed, scale, mean, std, x_key, y_key, devices_dir, as_json):
    """Measure A and B (.tflite) side by side on --device: size, accuracy on --data, how far B's
    outputs are from A's, and latency in interleaved rounds. B is called faster or slower than A
    only when the p50 intervals over the rounds do not overlap; otherwise "the same speed".
    """
    from edgekit.workflows.compare import compare as run_compare

    with err_console.status("Comparing...", spinner="dots") if not as_json else contextlib.nullcontext():
        report = run_compare(a, b, data=data, preprocessing=preprocessing_from_options(scale, mean, std), device=device,
                             runs=runs, warmup=warmup, rounds=rounds, threads=threads, samples=samples, seed=seed,
                             x_key=x_key, y_key=y_key, devices_dir=devices_dir)
    if as_json:
        print_json(report.to_dict())
        return
    rows = []
    for label, m in (("A", report.a), ("B", report.b)):
        acc = f", top-1 {m.accuracy.top1:.2f}%" if m.accuracy else ""
        lat = f", p50 {m.spread.p50.text()}" if m.spread else ""
        rows.append((label, f"{m.path}: {human_bytes(m.size.bytes)} ({m.size.gzip_bytes:,} B gzipped){acc}{lat}"))
    rows.append(("size", f"B is x{report.size_ratio:.2f} the size of A" if report.size_ratio < 1 else f"B is x{report.size_ratio:.2f} smaller"))
    change = report.accuracy_change()
    if change is not None:
        rows.append(("accuracy", f"B {change:+.2f} points vs A on {report.samples} samples"))
    if report.agreement is not None:
        c = report.agreement
        rows.append(("B against A", f"top-1 agreement {fmt(c.top1_agreement)}%, SQNR {fmt(c.sqnr_db, 1)} dB, cosine {c.cosine_similarity:.6f}, "
                                    f"max abs err {c.max_abs_error:.3g}"))
    if report.speed is not None:
        rows.append(("speed", report.speed.sentence("B", "A")))
    console.print(kv_table(f"A vs B on {report.device}", rows))
