#!/usr/bin/env python
"""Large structured fuzz run over .tflite files (issue 18): the verifier, the LiteRT runtime on
what the verifier accepts, and the ``edgekit`` commands as subprocesses.

Cases come from ``tests/fuzz_tflite.py``: the named structural defects, targeted structural
edits at random places, random field mutations through the flatbuffers object API, and some
byte damage on top. Three phases:

1. ``verifier``: every case through :func:`edgekit.core.tflite_verify.verify_tflite_bytes`
   (no exception may escape; time per case).
2. ``runtime`` (``--runtime``): every case the verifier accepts, loaded and invoked by LiteRT in
   a child process: does a structurally valid file still crash or hang the runtime?
3. ``commands``: ``inspect``, ``check``, ``validate``, ``benchmark`` on every case, each a
   subprocess with a time limit, classified: ok, rejected (documented non-zero code), hang,
   traceback, exit_1, crash, leftovers (files left behind), accepted_invalid (exit 0 on a file
   the verifier rejects: the verifier is not wired into that command yet).

Usage:
    PYTHONPATH=$PWD python scripts/fuzz_structured.py --cases 1000 --jobs 2 --out bench/fuzz_structured.json
    PYTHONPATH=$PWD python scripts/fuzz_structured.py --cases 5000 --commands none --runtime
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from fuzz_tflite import COMMANDS, SEEDS, case_seed_kind, fuzz_case, run_command, seed_model  # noqa: E402

from edgekit.core.tflite_verify import verify_tflite_bytes  # noqa: E402

RUNTIME_PROBE = r"""
import sys, numpy as np
from ai_edge_litert.interpreter import Interpreter
it = Interpreter(model_path=sys.argv[1])
it.allocate_tensors()
for d in it.get_input_details():
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
it.invoke()
"""


def make_cases(count: int, seed: int) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    seeds = {k: seed_model(k) for k in SEEDS}
    return [fuzz_case(rng, seeds) for _ in range(count)]


def verifier_phase(cases: list[tuple[str, bytes]]) -> tuple[dict, list[int]]:
    checks: collections.Counter[str] = collections.Counter()
    times, violations, errors = [], [], []
    for i, (what, data) in enumerate(cases):
        start = time.perf_counter()
        try:
            result = verify_tflite_bytes(data, what)
        except Exception as exc:  # noqa: BLE001 - the count of these must be 0
            errors.append({"case": i, "what": what, "error": f"{type(exc).__name__}: {exc}"})
            violations.append(-1)
            continue
        times.append(time.perf_counter() - start)
        violations.append(len(result.violations) + result.omitted)
        checks.update({v.check for v in result.violations})
    summary = {
        "cases": len(cases), "exceptions": len(errors), "exception_examples": errors[:5],
        "accepted": sum(1 for v in violations if v == 0), "rejected": sum(1 for v in violations if v > 0),
        "cases_per_check": dict(checks.most_common()),
        "seconds_mean": round(sum(times) / max(len(times), 1), 5), "seconds_max": round(max(times, default=0), 4),
        "case_kinds": dict(collections.Counter(what.split(":")[0] for what, _ in cases)),
    }
    return summary, violations


def runtime_phase(cases, violations, timeout: float, jobs: int) -> dict:
    accepted = [i for i, v in enumerate(violations) if v == 0]

    def probe(i: int) -> tuple[int, str]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "case.tflite"
            path.write_bytes(cases[i][1])
            try:
                proc = subprocess.run([sys.executable, "-c", RUNTIME_PROBE, str(path)], capture_output=True, timeout=timeout,
                                      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            except subprocess.TimeoutExpired:
                return i, "hang"
        if proc.returncode == 0:
            return i, "ran"
        return i, "error" if proc.returncode == 1 else f"crash({proc.returncode})"

    with ThreadPoolExecutor(jobs) as pool:
        results = list(pool.map(probe, accepted))
    kinds = collections.Counter(kind for _, kind in results)
    examples: dict[str, list[str]] = collections.defaultdict(list)
    for i, kind in results:
        if kind != "ran" and len(examples[kind]) < 5:
            examples[kind].append(cases[i][0])
    return {"accepted_by_verifier": len(accepted), "outcomes": dict(kinds.most_common()), "examples": dict(examples)}


def commands_phase(cases, violations, commands: list[str], timeout: float, jobs: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="edgekit-fuzz-"))
    data_dir = root / "data"
    data_dir.mkdir()
    jobs_list = [(i, c) for i in range(len(cases)) for c in commands]

    def one(job: tuple[int, str]):
        i, command = job
        what, data = cases[i]
        work = root / f"w{i % (jobs * 4)}-{command}"
        return i, run_command(command, data, case_seed_kind(what), work, python=sys.executable, repo=REPO,
                              timeout=timeout, violations=max(violations[i], 0), data_dir=data_dir)

    per_command: dict[str, collections.Counter[str]] = {c: collections.Counter() for c in commands}
    codes: dict[str, collections.Counter[int | None]] = {c: collections.Counter() for c in commands}
    examples: dict[str, list[dict]] = collections.defaultdict(list)
    seconds: dict[str, float] = collections.Counter()
    done = 0
    with ThreadPoolExecutor(jobs) as pool:
        for i, outcome in pool.map(one, jobs_list):
            per_command[outcome.command][outcome.kind] += 1
            codes[outcome.command][outcome.code] += 1
            seconds[outcome.command] += outcome.seconds
            if outcome.kind not in ("ok", "rejected") and len(examples[f"{outcome.command}:{outcome.kind}"]) < 5:
                examples[f"{outcome.command}:{outcome.kind}"].append({"case": i, "what": cases[i][0], **outcome.to_dict()})
            done += 1
            if done % 200 == 0:
                print(f"  {done}/{len(jobs_list)} command runs", file=sys.stderr, flush=True)
    totals = collections.Counter()
    for counter in per_command.values():
        totals.update(counter)
    return {
        "runs": len(jobs_list), "totals": dict(totals.most_common()),
        "per_command": {c: dict(k.most_common()) for c, k in per_command.items()},
        "exit_codes": {c: {str(code): n for code, n in k.most_common()} for c, k in codes.items()},
        "seconds_mean": {c: round(seconds[c] / max(len(cases), 1), 3) for c in commands},
        "examples": dict(examples),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--commands", default=",".join(COMMANDS), help="comma-separated, or 'none'")
    parser.add_argument("--runtime", action="store_true", help="also run LiteRT on every case the verifier accepts")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per command run before it counts as a hang")
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    args = parser.parse_args()

    started = time.time()
    cases = make_cases(args.cases, args.seed)
    result: dict = {"cases": args.cases, "seed": args.seed, "timeout_s": args.timeout}
    result["verifier"], violations = verifier_phase(cases)
    print(json.dumps({"verifier": result["verifier"]}, indent=2), flush=True)
    if args.runtime:
        result["runtime"] = runtime_phase(cases, violations, args.timeout, args.jobs)
        print(json.dumps({"runtime": result["runtime"]}, indent=2), flush=True)
    commands = [] if args.commands == "none" else [c for c in args.commands.split(",") if c]
    if commands:
        result["commands"] = commands_phase(cases, violations, commands, args.timeout, args.jobs)
        print(json.dumps({"commands": result["commands"]}, indent=2), flush=True)
    result["wall_seconds"] = round(time.time() - started, 1)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    bad = result["verifier"]["exceptions"]
    if commands:
        bad += sum(n for kind, n in result["commands"]["totals"].items() if kind in ("hang", "traceback", "exit_1", "crash", "leftovers"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
