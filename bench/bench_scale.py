#!/usr/bin/env python
"""Issue 19: wall time of `optimize --effort full` on the bundled example, in process vs with `--ray`
on a local cluster of N worker processes (one CPU each), measured side by side in one run, inside a
private network namespace (Ray listens on 127.0.0.1 only). Prints a Markdown table for bench/RESULTS.md.

Usage (as root, with `pip install -e '.[distributed]'`):
    python bench/bench_scale.py --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "fashion_mnist"
RAY = str(Path(sys.executable).with_name("ray"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2, help="Ray worker processes (the head counts as one)")
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        common = (f"{sys.executable} -m edgekit optimize {EXAMPLE}/model.keras --data {EXAMPLE}/calib.npz --val {EXAMPLE}/val.npz "
                  f"--scale 1/255 --effort full --epochs {args.epochs} --runs 20 --rounds 3 --seed 0 --quiet --json")
        port = 6393
        extra = "\n".join(f"{RAY} start --address 127.0.0.1:{port} --node-ip-address 127.0.0.1 --num-cpus 1 >> {work}/ray.log 2>&1"
                          for _ in range(args.workers - 1))
        script = work / "run.sh"
        script.write_text(f"""set -eu
ip link set lo up
export RAY_USAGE_STATS_ENABLED=0 PYTHONPATH={REPO} TF_CPP_MIN_LOG_LEVEL=3
trap '{RAY} stop --force >/dev/null 2>&1' EXIT
{RAY} start --head --node-ip-address 127.0.0.1 --port {port} --num-cpus 1 --include-dashboard false --disable-usage-stats > {work}/ray.log 2>&1
{extra}
t0=$(date +%s.%N); {common} -o {work}/here > {work}/here.json; t1=$(date +%s.%N)
{common} -o {work}/ray --ray 127.0.0.1:{port} > {work}/ray.json; t2=$(date +%s.%N)
echo "$t0 $t1 $t2" > {work}/times
""")
        subprocess.run(["unshare", "--net", "bash", str(script)], check=True, timeout=7200)
        t0, t1, t2 = (float(v) for v in (work / "times").read_text().split())
        here, ray = (json.loads((work / f"{n}.json").read_text()) for n in ("here", "ray"))
        same = here["recommended"]["sha256"] == ray["recommended"]["sha256"]
        cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), platform.processor())
        print(f"optimize --effort full --epochs {args.epochs}, bundled example, {len(here['candidates'])} candidates; "
              f"{os.cpu_count()} CPUs ({cpu})\n")
        print("| where candidates are built | wall s | recommended | sha256 |")
        print("|---|---|---|---|")
        print(f"| this process | {t1 - t0:.1f} | {here['recommended']['name']} | {here['recommended']['sha256'][:12]} |")
        print(f"| Ray, {args.workers} local worker processes | {t2 - t1:.1f} | {ray['recommended']['name']} | "
              f"{ray['recommended']['sha256'][:12]} |")
        print(f"\nspeed-up x{(t1 - t0) / (t2 - t1):.2f}; same recommendation and bytes: {same}\n")
        print("| candidate | sha256 here | sha256 Ray | status here | status Ray |")
        print("|---|---|---|---|---|")
        ray_rows = {c["name"]: c for c in ray["candidates"]}
        for c in here["candidates"]:
            r = ray_rows.get(c["name"], {})
            why = lambda row: (row.get("status") or "-") + (f" ({row['reasons'][0][:70]})" if row.get("reasons") else "")  # noqa: E731
            print(f"| {c['name']} | {(c.get('sha256') or '-')[:12]} | {(r.get('sha256') or '-')[:12]} | {why(c)} | {why(r)} |")


if __name__ == "__main__":
    main()
