"""Benchmark: knowledge distillation on Fashion-MNIST (issue #5), one run.

Teacher: the bundled example model (examples/fashion_mnist/model.keras, 244k parameters).
Student: the teacher's architecture at ``--width`` (0.45 -> 5x fewer parameters), derived and
initialised fresh by ``edgekit.passes.distill.derive_student``. For each seed the same student (same
initial weights, batches and optimizer) is trained twice for the same epochs on the same data:
from the labels alone (baseline) and distilled from the teacher. Accuracy is top-1 on the full
10,000-image test set. The first seed also exports teacher, baseline and student to int8 TFLite
and measures size and latency side by side (runs interleaved).

If ``edgekit prune`` accepts ``distill=True``, it also prunes the teacher to 80% sparsity and
fine-tunes it for the same epochs (on a seeded subset of the training images) with and without
the original model as teacher.

Usage::

    python bench/bench_distill.py [--epochs 8] [--limit 60000] [--seeds 0 1 2] [--width 0.45]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "fashion_mnist"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--limit", type=int, default=60000, help="training images used (seeded subset)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--width", type=float, default=0.45)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--runs", type=int, default=200, help="timed int8 runs per model (first seed)")
    parser.add_argument("--prune-epochs", type=int, default=2)
    parser.add_argument("--prune-samples", type=int, default=20000, help="training images for the prune fine-tuning (seeded subset)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from train import load_fashion_mnist

    from edgekit.core.datatypes import Preprocessing
    from edgekit.workflows.distill import distill

    started = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    pre = Preprocessing(scale=1 / 255)
    teacher_path = REPO / "examples" / "fashion_mnist" / "model.keras"
    rows = []
    first = None
    with tempfile.TemporaryDirectory(prefix="bench-distill-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "train.npz", x=x_train, y=y_train)
        np.savez(tmp / "test.npz", x=x_test, y=y_test)
        for i, seed in enumerate(args.seeds):
            t0 = time.perf_counter()
            result = distill(
                teacher_path, tmp / f"student_{seed}.keras", data=tmp / "train.npz", val=tmp / "test.npz", width=args.width,
                epochs=args.epochs, temperature=args.temperature, alpha=args.alpha, baseline=True, seed=seed,
                batch_size=args.batch_size, learning_rate=args.lr, preprocessing=pre,
                limit=args.limit if args.limit < len(x_train) else None, export=i == 0, runs=args.runs,
            )
            r = result.rows
            rows.append({
                "seed": seed, "teacher": r["teacher"].top1, "baseline": r["baseline"].top1, "distilled": r["distilled"].top1,
                "teacher_params": r["teacher"].parameters, "student_params": r["distilled"].parameters,
                "teacher_forward_samples": result.fit.teacher_forward_samples, "seconds": time.perf_counter() - t0,
            })
            print(f"seed {seed}: baseline {r['baseline'].top1:.2f}  distilled {r['distilled'].top1:.2f}  "
                  f"teacher {r['teacher'].top1:.2f}  ({time.perf_counter() - t0:.0f} s)", flush=True)
            if i == 0:
                first = result
        prune_rows = bench_prune(tmp, teacher_path, pre, args)

    print_report(args, rows, first, prune_rows, time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "export": first.to_dict()["models"] if first else None,
                                         "prune": prune_rows}, indent=2))


def bench_prune(tmp: Path, teacher_path: Path, pre, args) -> list[dict] | None:
    """Prune 80% with and without --distill (same epochs), if prune supports it."""
    try:
        from edgekit.workflows.compress import prune
    except ImportError:
        return None
    if "distill" not in inspect.signature(prune).parameters:
        return None
    with np.load(tmp / "train.npz") as npz:
        pick = np.sort(np.random.default_rng(0).choice(len(npz["y"]), args.prune_samples, replace=False))
        np.savez(tmp / "train_prune.npz", x=npz["x"][pick], y=npz["y"][pick])
    out = []
    for use_distill in (False, True):
        t0 = time.perf_counter()
        res = prune(teacher_path, tmp / f"pruned_{use_distill}.keras", data=tmp / "train_prune.npz", val=tmp / "test.npz", sparsity=0.8,
                    epochs=args.prune_epochs, seed=0, preprocessing=pre, export=False, distill=use_distill)
        out.append({"distill": use_distill, "top1_before": res.top1_before, "top1_after": res.top1_after,
                    "seconds": time.perf_counter() - t0})
    return out


def print_report(args, rows, first, prune_rows, seconds: float) -> None:
    teacher_params, student_params = rows[0]["teacher_params"], rows[0]["student_params"]
    ratio = teacher_params / student_params
    print()
    print(f"Fashion-MNIST, teacher = bundled example ({teacher_params:,} params), student = width {args.width} "
          f"({student_params:,} params, {ratio:.2f}x fewer); {args.limit:,} training images, {args.epochs} epochs, "
          f"T={args.temperature}, alpha={args.alpha}, Adam lr {args.lr}, batch {args.batch_size}; top-1 % on the 10,000 test images")
    print()
    print("| seed | teacher | student from labels | distilled student | gain | gap to teacher |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['seed']} | {row['teacher']:.2f} | {row['baseline']:.2f} | {row['distilled']:.2f} | "
              f"{row['distilled'] - row['baseline']:+.2f} | {row['teacher'] - row['distilled']:.2f} |")
    mean_b = float(np.mean([r["baseline"] for r in rows]))
    mean_d = float(np.mean([r["distilled"] for r in rows]))
    teacher = rows[0]["teacher"]
    print(f"| mean | {teacher:.2f} | {mean_b:.2f} | {mean_d:.2f} | {mean_d - mean_b:+.2f} | {teacher - mean_d:.2f} |")
    print()
    if first is not None:
        print(f"int8 TFLite, seed {rows[0]['seed']} ({first.rows['teacher'].latency.runs} timed runs per model, interleaved, 1 thread):")
        print()
        print("| model | params | top-1 float | top-1 int8 | int8 bytes | p50 ms | mean ms |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for key, row in first.rows.items():
            print(f"| {key} | {row.parameters:,} | {row.top1:.2f} | {row.int8_top1:.2f} | {row.int8_size.bytes:,} | "
                  f"{row.latency.p50_ms:.4f} | {row.latency.mean_ms:.4f} |")
        t, d = first.rows["teacher"], first.rows["distilled"]
        print()
        print(f"student vs teacher after int8: {t.int8_size.bytes / d.int8_size.bytes:.2f}x smaller, "
              f"{t.latency.p50_ms / d.latency.p50_ms:.2f}x faster (p50); teacher ran on "
              f"{rows[0]['teacher_forward_samples']:,} samples for {args.epochs} epochs (cached)")
        print()
    if prune_rows:
        print(f"prune the teacher to 80% sparsity (unstructured, constant), {args.prune_epochs} fine-tuning epochs on "
              f"{args.prune_samples:,} training images, with and without the original as teacher (`--distill`: hints on every "
              "hidden Conv/Dense layer + outputs at T=1, alpha=0.5); "
              "top-1 % on the test set:")
        print()
        print("| fine-tuning | before | after pruning + fine-tuning | recovered vs before |")
        print("|---|---:|---:|---:|")
        for row in prune_rows:
            print(f"| {'with --distill' if row['distill'] else 'labels only'} | {row['top1_before']:.2f} | {row['top1_after']:.2f} | "
                  f"{row['top1_after'] - row['top1_before']:+.2f} |")
        print()
    checks = [
        (f"student >= 4x fewer parameters ({ratio:.2f}x)", ratio >= 4.0),
        (f"distilled beats labels-only, mean over {len(rows)} seeds ({mean_d:.2f} vs {mean_b:.2f})", mean_d > mean_b),
        (f"distilled within 2 points of the teacher ({teacher - mean_d:.2f})", teacher - mean_d <= 2.0),
    ]
    if prune_rows:
        plain, kd = prune_rows
        checks.append((f"prune 80% + distill recovers at least as much ({kd['top1_after']:.2f} vs {plain['top1_after']:.2f})",
                       kd["top1_after"] >= plain["top1_after"]))
    for text, ok in checks:
        print(f"- {'PASS' if ok else 'FAIL'}: {text}")
    print(f"\ntotal {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
