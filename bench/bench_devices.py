"""Benchmark for issue #7: does measuring through a device transport change the latency?

The same .tflite file runs with the same thread count through three paths, interleaved round by
round in one run on this machine:

1. ``run_local``: edgekit's runner in a child process (what ``edgekit validate`` does locally);
2. the ``local`` device profile: the same runner copied to a per-run folder with the device
   machinery (probe, try-run, thermal, push/pull);
3. an SSH device: a real OpenSSH server on 127.0.0.1 (started here, like the tests do) and the
   system ssh/scp; the runner runs under sshd with the same Python.

The runner times each inference inside its own process, so the transport should not show in the
p50; what the transport costs is wall-clock time per run (connection, probe, copies), reported
separately. Needs openssh-server and root (see tests/devices_sshd.py).

Usage::

    python bench/bench_devices.py [--runs 200] [--repeats 5] [--threads 1] [--skip-mobilenet]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgekit.devices.run import run_on_device  # noqa: E402
from edgekit.runtime.local import (  # noqa: E402
    latency_stats,
    run_local,
)

EXAMPLE = REPO / "examples" / "fashion_mnist"


def _load_sshd_helper():
    spec = importlib.util.spec_from_file_location("devices_sshd", REPO / "tests" / "devices_sshd.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def make_artifacts(folder: Path, with_mobilenet: bool) -> list[tuple[str, Path, int]]:
    from edgekit.core.datatypes import Preprocessing
    from edgekit.workflows.quantize import quantize

    out = []
    pre = Preprocessing(scale=1 / 255)
    quantize(EXAMPLE / "model.keras", folder / "example_f32.tflite", mode="float32", preprocessing=pre)
    quantize(EXAMPLE / "model.keras", folder / "example_int8.tflite", mode="int8", data=EXAMPLE / "calib.npz", preprocessing=pre)
    out += [("bundled example float32", folder / "example_f32.tflite", 1), ("bundled example int8", folder / "example_int8.tflite", 1)]
    if with_mobilenet:
        import keras

        model = keras.applications.MobileNetV2(input_shape=(128, 128, 3), alpha=0.5, weights=None, classes=10)
        model.save(folder / "mnv2.keras")
        quantize(folder / "mnv2.keras", folder / "mnv2_f32.tflite", mode="float32")
        out.append(("MobileNetV2 0.5 128x128 float32", folder / "mnv2_f32.tflite", 10))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()

    sshd_helper = _load_sshd_helper()
    reason = sshd_helper.unavailable_reason()
    if reason:
        sys.exit(f"cannot start a loopback sshd: {reason}")
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-devices-") as tmp:
        root = Path(tmp)
        artifacts = make_artifacts(root, not args.skip_mobilenet)
        with sshd_helper.LoopbackSshd(root / "sshd") as sshd:
            devices = root / "devices"
            devices.mkdir()
            (devices / "loop.yaml").write_text(sshd.profile_yaml("loop", sys.executable, threads=args.threads))
            paths = {
                "run_local": lambda m, runs: (latency_stats(run_local(m, None, runs=runs, warmup=args.warmup, threads=args.threads)), None),
                "local profile": lambda m, runs: _device(m, "local", runs, args, devices),
                "ssh loopback": lambda m, runs: _device(m, "loop", runs, args, devices),
            }
            p50: dict[tuple[str, str], list[float]] = {}
            wall: dict[tuple[str, str], list[float]] = {}
            for _round in range(args.repeats):
                for name, model, divide in artifacts:
                    runs = max(10, args.runs // divide)
                    for path, measure in paths.items():
                        started = time.perf_counter()
                        stats, _ = measure(model, runs)
                        wall.setdefault((name, path), []).append(time.perf_counter() - started)
                        p50.setdefault((name, path), []).append(stats.p50_ms)
    print(f"{args.threads} thread(s), p50 = median of {args.repeats} interleaved rounds (each: run_local, local profile, ssh loopback); "
          f"{args.runs} timed runs per round ({args.runs // 10} for MobileNetV2) after {args.warmup} warm-up")
    print()
    header = ["model", "path", "p50 ms", "p50 vs run_local", "wall s per run", "wall vs run_local"]
    rows = []
    for name, _model, _ in artifacts:
        base_p50 = statistics.median(p50[(name, "run_local")])
        base_wall = statistics.median(wall[(name, "run_local")])
        for path in paths:
            med = statistics.median(p50[(name, path)])
            w = statistics.median(wall[(name, path)])
            rows.append([name, path, f"{med:.4f}", f"{med / base_p50:.3f}", f"{w:.2f}", f"{w / base_wall:.2f}x"])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    spread = {k: (min(v), max(v)) for k, v in p50.items()}
    print()
    print("p50 range over rounds (ms): " + "; ".join(f"{k[0]} / {k[1]}: {lo:.4f}-{hi:.4f}" for k, (lo, hi) in spread.items()))


def _device(model: Path, device: str, runs: int, args: argparse.Namespace, devices: Path):
    result = run_on_device(device, model, None, runs=runs, warmup=args.warmup, threads=args.threads, devices_dir=devices)
    assert result.report["work_dir_removed"]
    return result.latency, result.report


if __name__ == "__main__":
    main()
