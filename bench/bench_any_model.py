#!/usr/bin/env python3
"""Issue #14's table: nine kinds of model through every command, from the CLI, side by side.

For each kind (tests/model_zoo.py: tiny models trained in code on seeded data with a learnable
signal), runs ``quantize --mode int8``, ``validate --reference`` (the task's metrics), ``prune``,
``cluster``, ``qat``, ``distill --width 0.5`` and ``optimize --effort quick`` and prints one
markdown row: the task, the float and int8 primary metric and int8's drop, and each command's
outcome (ok, or the one-line error).

Usage: python bench/bench_any_model.py [--n 1500] [--distill-epochs 30] [--kinds classification regression ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1500, help="training samples per model (validation: 200 more)")
    parser.add_argument("--kinds", nargs="+", default=None)
    parser.add_argument("--distill-epochs", type=int, default=30, help="epochs of the distilled and the labels-only student")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import model_zoo
    from click.testing import CliRunner

    from edgekit.cli import cli
    from edgekit.core.datatypes import format_metric
    from edgekit.core.tflite_file import read_tflite

    runner = CliRunner()
    rows = []
    for kind in args.kinds or model_zoo.KINDS:
        with tempfile.TemporaryDirectory(prefix=f"bench-any-{kind}-") as tmp:
            work = Path(tmp)
            t0 = time.perf_counter()
            model, data, val = (str(p) for p in model_zoo.save(kind, work / "m", n=args.n))
            cells: dict[str, str] = {}
            timings: dict[str, float] = {}

            def run(name: str, argv: list[str], cells: dict[str, str] = cells, timings: dict[str, float] = timings) -> bool:
                t = time.perf_counter()
                result = runner.invoke(cli, argv)
                timings[name] = time.perf_counter() - t
                ok = result.exit_code == 0
                cells[name] = "ok" if ok else "FAIL: " + (result.output.strip().splitlines() or ["?"])[-1][:120]
                return ok

            int8 = work / "int8.tflite"
            common = ["--data", data, "--val", val]
            run("quantize", ["quantize", model, "--mode", "int8", "--data", data, "-o", str(int8)])
            metric = task = f_val = i_val = drop = "-"
            flex = "-"
            if int8.is_file():
                info = read_tflite(int8)
                flex = "none" if not any(op.op.startswith("FLEX") for op in info.operators) else "FLEX"
                if run("validate", ["validate", str(int8), "--data", val, "--reference", model, "--runs", "20", "--report", str(work / "v.json")]):
                    rep = json.loads((work / "v.json").read_text())
                    acc, ref = rep["accuracy"], rep["reference_accuracy"]
                    task = "+".join(t["task"] for t in rep["tasks"])
                    metric = acc["metric"]
                    f_val, i_val = format_metric(metric, ref["value"]), format_metric(metric, acc["value"])
                    drop = f"{rep['accuracy_drop']:+.3g}"
            run("prune", ["prune", model, *common, "--sparsity", "0.5", "--epochs", "2", "--runs", "20", "-o", str(work / "p.keras")])
            run("cluster", ["cluster", model, *common, "--clusters", "16", "--epochs", "2", "--runs", "20", "-o", str(work / "c.keras")])
            run("qat", ["qat", model, *common, "--epochs", "2", "-o", str(work / "q.tflite")])
            run("distill", ["distill", "--teacher", model, *common, "--width", "0.5", "--epochs", str(args.distill_epochs), "--baseline", "--runs", "20",
                            "-o", str(work / "s.keras")])
            run("optimize", ["optimize", model, *common, "--effort", "quick", "--no-html", "-o", str(work / "opt")])
            dist = ""
            if (work / "s.distill.report.json").is_file():
                m = json.loads((work / "s.distill.report.json").read_text())["models"]
                dist = f"{format_metric(metric, m['baseline'].get('value'))} -> {format_metric(metric, m['distilled'].get('value'))}" \
                    if metric != "-" else ""
            rows.append((kind, task, metric, f_val, i_val, drop, flex, cells, dist, time.perf_counter() - t0))
            print(f"{kind}: {cells} ({time.perf_counter() - t0:.0f} s; " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()) + ")",
                  flush=True)
    print()
    print("| model | task(s) | primary metric | float32 | int8 | int8 drop | Flex ops | prune | cluster | qat | distill (labels -> distilled) "
          "| optimize quick | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind, task, metric, f_val, i_val, drop, flex, cells, dist, secs in rows:
        c = {k: ("ok" if v == "ok" else v) for k, v in cells.items()}
        print(f"| {kind} | {task} | {metric} | {f_val} | {i_val} | {drop} | {flex} | {c.get('prune', '-')} | {c.get('cluster', '-')} | "
              f"{c.get('qat', '-')} | {c.get('distill', '-')} {dist} | {c.get('optimize', '-')} | {secs:.0f} |")


if __name__ == "__main__":
    main()
