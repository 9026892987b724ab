"""Memory of fine-tuning on a data set in memory vs kept on disk and streamed (issue 19).

Writes an uncompressed .npz of N 28x28 uint8 images (the bundled calibration images repeated, so the
model is the bundled one) and runs the same `edgekit prune --epochs 1` twice, side by side: once with
the data in memory (the default for data under EDGEKIT_STREAM_MB) and once with EDGEKIT_STREAM_MB
below its size, so the preprocessed float32 array lives in a disk-backed memory map and training
reads batches through tf.data. Memory is sampled from /proc every 20 ms: the peak of the process's
anonymous memory (what cannot be paged out to its files) and its VmHWM (which also counts the
mapped file pages the kernel may drop).

    python bench/bench_streaming.py --samples 120000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fashion_mnist"


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "VmHWM", "RssFile"):
                out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def run(args: list[str], env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "edgekit", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"RssAnon": 0, "VmHWM": 0, "RssFile": 0}

    def sample() -> None:
        while proc.poll() is None:
            for key, value in _status(proc.pid).items():
                peak[key] = max(peak[key], value)
            time.sleep(0.02)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    if proc.returncode != 0:
        raise SystemExit(f"edgekit failed ({proc.returncode}): {err[-2000:]}")
    report = json.loads(out)
    return {"seconds": time.perf_counter() - started, "anon_mb": peak["RssAnon"] / 1024, "hwm_mb": peak["VmHWM"] / 1024,
            "file_mb": peak["RssFile"] / 1024, "top1": report["top1"]["after"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=120000)
    opts = parser.parse_args()
    with np.load(EXAMPLE / "calib.npz") as d:
        x, y = d["x"], d["y"]
    reps = int(np.ceil(opts.samples / len(x)))
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npz"
        np.savez(data, x=np.tile(x, (reps, 1, 1, 1))[: opts.samples], y=np.tile(y, reps)[: opts.samples])
        float_mb = opts.samples * 28 * 28 * 4 / 2**20
        base = {k: v for k, v in os.environ.items() if k != "EDGEKIT_STREAM_MB"} | {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
        cmd = ["prune", str(EXAMPLE / "model.keras"), "--data", str(data), "--val", str(EXAMPLE / "val.npz"), "--scale", "1/255",
               "--sparsity", "0.5", "--epochs", "1", "--batch-size", "128", "--no-export", "--json", "--force"]
        rows = {
            "in memory": run([*cmd, "-o", str(Path(tmp) / "a.keras")], base),
            "on disk, streamed": run([*cmd, "-o", str(Path(tmp) / "b.keras")], base | {"EDGEKIT_STREAM_MB": str(int(float_mb / 4))}),
        }
    print(f"machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    print(f"command: python bench/bench_streaming.py --samples {opts.samples}")
    print(f"data: {opts.samples} x 28x28 uint8 ({opts.samples * 784 / 2**20:.0f} MB on disk, {float_mb:.0f} MB as float32); "
          "edgekit prune --sparsity 0.5 --epochs 1 --batch-size 128 on the bundled model\n")
    print("| data              | peak anonymous MB | peak VmHWM MB | peak mapped-file MB | seconds | top-1 after |")
    print("|-------------------|-------------------|---------------|---------------------|---------|-------------|")
    for name, r in rows.items():
        print(f"| {name:<17} | {r['anon_mb']:>17.0f} | {r['hwm_mb']:>13.0f} | {r['file_mb']:>19.0f} | {r['seconds']:>7.1f} | "
              f"{r['top1']:>11.2f} |")
    a, b = rows["in memory"], rows["on disk, streamed"]
    print(f"\nanonymous memory: {a['anon_mb'] - b['anon_mb']:.0f} MB less when streamed (x{a['anon_mb'] / b['anon_mb']:.2f}); "
          f"time x{b['seconds'] / a['seconds']:.2f}")


if __name__ == "__main__":
    main()
