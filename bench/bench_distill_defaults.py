"""Issue 14, "distillation defaults that do not hurt": distill --width 0.5 --baseline with DEFAULT settings.

Teacher: the bundled example model. Data: a seeded subset of Fashion-MNIST's training images
(Debian ``dataset-fashion-mnist``; default 4,000, the short-budget case of the issue), validated on
the 10,000 test images. For each epoch budget (default 3 and 10), the same student (same start,
data, batch order and seed) is trained on the labels alone (the baseline) and distilled with the
default temperature/alpha schedule; the must-hold is distilled >= baseline at every budget.

Usage::

    python bench/bench_distill_defaults.py [--limit 4000] [--epochs 3 10] [--seed 0] [--temperature T --alpha A]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "examples" / "fashion_mnist"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--limit", type=int, default=4000)
    parser.add_argument("--epochs", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=None, help="override the default (to compare settings)")
    parser.add_argument("--alpha", type=float, default=None, help="override the default (to compare settings)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from train import load_fashion_mnist

    from edgekit.core.datatypes import Preprocessing
    from edgekit.workflows.distill import distill

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    idx = np.sort(np.random.default_rng(args.seed).choice(len(x_train), size=args.limit, replace=False))
    overrides = {k: v for k, v in (("temperature", args.temperature), ("alpha", args.alpha)) if v is not None}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-distill-defaults-") as tmp:
        work = Path(tmp)
        np.savez(work / "train.npz", x=x_train[idx], y=y_train[idx])
        np.savez(work / "test.npz", x=x_test, y=y_test)
        for epochs in args.epochs:
            t0 = time.perf_counter()
            result = distill(REPO / "examples" / "fashion_mnist" / "model.keras", work / f"student_{epochs}.keras", data=work / "train.npz",
                             val=work / "test.npz", width=args.width, epochs=epochs, baseline=True, seed=args.seed,
                             preprocessing=Preprocessing(scale=1 / 255), export=False, **overrides)
            r = result.rows
            rows.append((epochs, r["teacher"].top1, r["baseline"].top1, r["distilled"].top1, time.perf_counter() - t0, result))
            print(f"epochs {epochs}: teacher {r['teacher'].top1:.2f}  labels-only {r['baseline'].top1:.2f}  distilled {r['distilled'].top1:.2f}"
                  f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    cfg = rows[0][5].config if hasattr(rows[0][5], "config") else None
    print(f"\nsettings: {overrides or 'defaults'}{f' ({cfg})' if cfg else ''}; {args.limit} training images, seed {args.seed}, width {args.width}\n")
    print("| epochs | teacher top-1 | labels-only student | distilled student | distilled - labels | holds |")
    print("|---|---|---|---|---|---|")
    for epochs, teacher, base, dist, _, _ in rows:
        print(f"| {epochs} | {teacher:.2f} | {base:.2f} | {dist:.2f} | {dist - base:+.2f} | {'yes' if dist >= base else 'NO'} |")


if __name__ == "__main__":
    main()
