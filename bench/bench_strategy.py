"""QAT under each --strategy on this machine, side by side in one run (issue 19).

The same `edgekit qat` (bundled model, N training images, 2 epochs, seed 0) in one process
(`--strategy none`), on 2 mirrored CPU replicas (`--strategy mirrored`, EDGEKIT_CPU_REPLICAS=2) and
as two workers on 127.0.0.1 (`--strategy multiworker`, in a private network namespace: needs root,
`unshare` and `ip`). Prints the wall time and the int8 top-1 of each. `--batch-size` is per replica,
so the distributed runs take half as many steps of twice the batch.

    sudo python bench/bench_strategy.py --samples 6000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fashion_mnist"


def top1(report: dict) -> float:
    return next(r for r in report["comparison"] if r["variant"] == "qat-int8")["top1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    opts = parser.parse_args()
    with np.load(EXAMPLE / "calib.npz") as d, np.load(EXAMPLE / "val.npz") as v:
        x = np.concatenate([d["x"], v["x"]])
        y = np.concatenate([d["y"], v["y"]])
    reps = int(np.ceil(opts.samples / len(x)))
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "EDGEKIT_CPU_REPLICAS")}
    env |= {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "train.npz"
        rng = np.random.default_rng(0)
        xs = np.tile(x, (reps, 1, 1, 1))[: opts.samples]
        noise = rng.integers(-20, 21, xs.shape)  # not the same image twice
        np.savez(data, x=np.clip(xs.astype(np.int16) + noise, 0, 255).astype(np.uint8), y=np.tile(y, reps)[: opts.samples])
        cmd = [sys.executable, "-m", "edgekit", "qat", str(EXAMPLE / "model.keras"), "--data", str(data), "--val", str(EXAMPLE / "val.npz"),
               "--scale", "1/255", "--epochs", str(opts.epochs), "--seed", "0", "--no-ptq", "--json"]
        for name, extra_env in (("none", {}), ("mirrored, 2 CPU replicas", {"EDGEKIT_CPU_REPLICAS": "2"})):
            started = time.perf_counter()
            strategy = "none" if name == "none" else "mirrored"
            done = subprocess.run([*cmd, "--strategy", strategy, "-o", str(Path(tmp) / f"{strategy}.tflite")], env=env | extra_env,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr[-2000:])
            rows[name] = (time.perf_counter() - started, top1(json.loads(done.stdout)))
        workers = ", ".join(f'\\"127.0.0.1:{port}\\"' for port in (24661, 24662))
        lines = ["ip link set lo up"]
        for index in (0, 1):
            (Path(tmp) / f"w{index}").mkdir()
            config = f'{{\\"cluster\\": {{\\"worker\\": [{workers}]}}, \\"task\\": {{\\"type\\": \\"worker\\", \\"index\\": {index}}}}}'
            lines.append(f'TF_CONFIG="{config}" {" ".join(cmd)} --strategy multiworker -o {tmp}/w{index}/q.tflite > {tmp}/w{index}.json '
                         f"2> {tmp}/w{index}.err &")
        lines.append("wait")
        script = Path(tmp) / "workers.sh"
        script.write_text("\n".join(lines) + "\n")
        started = time.perf_counter()
        done = subprocess.run(["unshare", "--net", "bash", str(script)], env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        chief = Path(tmp) / "w0.json"
        if done.returncode != 0 or not chief.read_text().strip():
            raise SystemExit(f"multiworker failed: {done.stderr[-1000:]} {(Path(tmp) / 'w0.err').read_text()[-1500:]}")
        rows["multiworker, 2 processes"] = (seconds, top1(json.loads(chief.read_text())))
    print(f"machine: {os.cpu_count()} CPUs; Python {sys.version.split()[0]}")
    print(f"command: sudo python bench/bench_strategy.py --samples {opts.samples} --epochs {opts.epochs}")
    print(f"edgekit qat on the bundled model, {opts.samples} training images, {opts.epochs} epochs, --batch-size 64 (per replica)\n")
    print("| strategy                 | wall s | vs none | QAT int8 top-1 |")
    print("|--------------------------|--------|---------|----------------|")
    base = rows["none"][0]
    for name, (seconds, accuracy) in rows.items():
        print(f"| {name:<24} | {seconds:>6.1f} | x{base / seconds:>6.2f} | {accuracy:>14.2f} |")


if __name__ == "__main__":
    main()
