"""Runs a ``.tflite`` artifact with LiteRT in a child process on this machine.

The artifact is parsed and bounds-checked in Python first (:mod:`edgekit.core.tflite_file`), then
:mod:`edgekit.runtime.runner` runs it in a separate Python process: a segfault or abort in native code
becomes a :class:`~edgekit.core.errors.RuntimeFailure` naming the file and the signal, and edgekit
keeps running. The same runner file is what device transports copy to a Raspberry Pi.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.datatypes import LatencyStats
from edgekit.core.errors import InputError, MemoryLimit, RuntimeFailure, TimeLimit

RUNNER_PATH = Path(__file__).with_name("runner.py")
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class RunResult:
    """Raw results of one runner invocation."""

    outputs: list[np.ndarray]
    timings_ms: list[float]
    init_ms: float
    first_inference_ms: float
    peak_rss_mb: float | None
    baseline_rss_mb: float | None
    runtime: str
    runtime_version: str
    threads: int
    warmup: int
    meta: dict[str, Any]


def check_run_options(runs: int, warmup: int, threads: int) -> None:
    """Rejects impossible latency settings before anything runs."""
    if runs < 1:
        raise InputError(f"--runs must be at least 1, got {runs}", hint="use e.g. --runs 50")
    if warmup < 0:
        raise InputError(f"--warmup cannot be negative, got {warmup}", hint="use e.g. --warmup 5")
    if threads < 1:
        raise InputError(f"--threads must be at least 1, got {threads}", hint="use e.g. --threads 1")


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def parse_runner_error(stderr: str) -> str | None:
    """The runner's ``EDGEKIT_ERROR:`` message, if it printed one."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("EDGEKIT_ERROR:"):
            return line.split(":", 1)[1].strip()
    return None


def load_run_result(result_path: Path, outputs_path: Path | None) -> RunResult:
    """Reads the runner's result JSON (and outputs .npz) back."""
    meta = json.loads(result_path.read_text())
    outputs: list[np.ndarray] = []
    if outputs_path is not None and outputs_path.exists():
        with np.load(outputs_path, allow_pickle=False) as npz:
            outputs = [npz[f"out_{k}"] for k in range(len(npz.files))]
    return RunResult(
        outputs=outputs,
        timings_ms=[float(t) for t in meta["timings_ms"]],
        init_ms=float(meta["init_ms"]),
        first_inference_ms=float(meta["first_inference_ms"]),
        peak_rss_mb=meta.get("peak_rss_mb"),
        baseline_rss_mb=meta.get("baseline_rss_mb"),
        runtime=meta["runtime"],
        runtime_version=str(meta.get("runtime_version")),
        threads=int(meta["threads"]),
        warmup=int(meta["warmup"]),
        meta=meta,
    )


Inputs = np.ndarray | Sequence[np.ndarray]  # one array, or one per model input in the file's input order


def input_rows(inputs: Inputs) -> int:
    return int(len(inputs) if isinstance(inputs, np.ndarray) else len(inputs[0]))


def save_inputs(folder: Path, inputs: Inputs) -> Path:
    """Writes the runner's ``--inputs`` file: ``inputs.npy`` for one array, ``inputs.npz`` (``in_0``...) for several.

    Float samples are written as float32; integer samples (token ids) keep their integer dtype.
    """
    def plain(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return np.ascontiguousarray(a, dtype=a.dtype if a.dtype.kind in "iub" else np.float32)

    if isinstance(inputs, np.ndarray) or len(inputs) == 1:
        path = folder / "inputs.npy"
        np.save(path, plain(inputs if isinstance(inputs, np.ndarray) else inputs[0]))
        return path
    path = folder / "inputs.npz"
    np.savez(path, **{f"in_{k}": plain(a) for k, a in enumerate(inputs)})  # type: ignore[arg-type]
    return path


def run_local(
    model_path: str | os.PathLike[str],
    inputs: Inputs | None = None,
    *,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    runtime: str = "auto",
    timeout_s: float | None = None,
    accelerator: str | None = None,
) -> RunResult:
    """Runs a (pre-checked) .tflite file in a child process and returns outputs and timings.

    Args:
        model_path: the .tflite file; check it with :func:`edgekit.core.tflite_file.read_tflite` first.
        inputs: preprocessed samples (N, ...), one array per model input in the file's input order, or None for latency only.
        threads, runs, warmup: interpreter threads, timed runs and untimed warm-up runs.
        runtime: ``auto``, ``ai_edge_litert``, ``tflite_runtime`` or ``tensorflow``.
        accelerator: ``cpu`` or ``gpu``: run through LiteRT's CompiledModel on that accelerator
            (the result's ``meta`` says whether the model was fully accelerated); None: the Interpreter.
        timeout_s: the time limit of the child (None: :func:`default_timeout`, scaled by model size
            and work); past it the child's whole process group is killed.

    Raises:
        RuntimeFailure: the runtime refused the model, failed or crashed.
        TimeLimit: the child ran past ``timeout_s`` (a model that never finishes, such as a WHILE
            loop whose condition stays true); it was killed and its temporary folder removed.
    """
    check_run_options(runs, warmup, threads)
    model_path = Path(model_path)
    with tempfile.TemporaryDirectory(prefix="edgekit-run-") as tmp:
        work = Path(tmp)
        cmd = [
            # -P: the runner's own folder (edgekit/) is not put on sys.path
            sys.executable, "-P", str(RUNNER_PATH), "--model", str(model_path.resolve()),
            "--result", str(work / "result.json"), "--threads", str(threads),
            "--runs", str(runs), "--warmup", str(warmup), "--runtime", runtime,
            *(["--accelerator", accelerator] if accelerator else []),
        ]
        outputs_path = None
        if inputs is not None:
            outputs_path = work / "outputs.npz"
            cmd += ["--inputs", str(save_inputs(work, inputs)), "--outputs", str(outputs_path)]
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        limit = timeout_s if timeout_s is not None else default_timeout(model_path, runs + warmup + (input_rows(inputs) if inputs is not None else 0))
        memory_mb = memory_limit_mb(model_path, inputs)
        if memory_mb:
            cmd += ["--memory-limit-mb", str(memory_mb)]
        proc = run_bounded(cmd, limit, env=env, what=f"running {model_path.name}")
        if proc.returncode < 0:
            raise RuntimeFailure(
                f"the LiteRT runtime crashed ({_signal_name(proc.returncode)}) while running {model_path}",
                hint="the model may be malformed or use an op this runtime build mishandles; edgekit is unaffected",
            )
        if proc.returncode != 0:
            message = parse_runner_error(proc.stderr)
            if message is not None and "memory limit" in message:
                raise MemoryLimit(f"{model_path.name}: {message}",
                                  hint="run fewer --samples, or raise the limit with EDGEKIT_MEMORY_LIMIT_MB=N (0: none)")
            if message is None:
                tail = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()][-1:] or ["no message"]
                message = f"the runner exited with code {proc.returncode}: {tail[0][:300]}"
            raise RuntimeFailure(f"{model_path.name}: {message}", hint="rerun with -v for the runtime log")
        return load_run_result(work / "result.json", outputs_path)


def memory_limit_mb(model_path: str | os.PathLike[str], inputs: Inputs | None) -> int:
    """The runner's data-memory limit in MB: ``EDGEKIT_MEMORY_LIMIT_MB`` if set (0: none), else the
    larger of 4 GiB and 3x (model + inputs) + 2 GiB — generous for any run, but a model whose arena
    or a runtime bug that allocates without end fails with exit 11 instead of taking the machine."""
    given = os.environ.get("EDGEKIT_MEMORY_LIMIT_MB")
    if given is not None:
        try:
            return max(0, int(given))
        except ValueError:
            raise InputError(f"EDGEKIT_MEMORY_LIMIT_MB must be a whole number of MB, got {given!r}",
                             hint="e.g. EDGEKIT_MEMORY_LIMIT_MB=8192, or 0 for no limit") from None
    try:
        model_mb = Path(model_path).stat().st_size / 2**20
    except OSError:
        model_mb = 0.0
    arrays = [] if inputs is None else (inputs if isinstance(inputs, (list, tuple)) else [inputs])
    inputs_mb = sum(getattr(a, "nbytes", 0) for a in arrays) / 2**20
    return int(max(4096.0, 3 * (model_mb + inputs_mb) + 2048.0))


def default_timeout(model_path: str | os.PathLike[str], invocations: int) -> float:
    """A generous time limit for a runner child: 120 s, plus 0.5 s per inference, plus 10 s per MB of model."""
    try:
        size_mb = Path(model_path).stat().st_size / 2**20
    except OSError:
        size_mb = 0.0
    return min(DEFAULT_TIMEOUT_S * 4, 120.0 + 0.5 * invocations + 10.0 * size_mb)


def run_bounded(cmd: list[str], timeout_s: float, *, env: dict[str, str] | None = None, what: str = "the child process",
                cwd: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs ``cmd`` in its own process group; past ``timeout_s`` the whole group is killed (:class:`TimeLimit`).

    An interrupt (Ctrl-C, SIGTERM) while waiting kills the group too before it propagates.
    """
    if not timeout_s > 0:
        raise InputError(f"timeout must be positive, got {timeout_s}", hint="e.g. timeout 60", settings=("timeout",))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, errors="replace",
                            env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise TimeLimit(f"{what} did not finish within {timeout_s:.0f} s and was stopped",
                        hint="a model that never finishes (a WHILE loop whose condition stays true?), or give more time with --timeout",
                        settings=("timeout",)) from None
    except BaseException:
        _kill_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        proc.communicate(timeout=10)


def _footprint(run: RunResult) -> tuple[float | None, float | None]:
    """(init, overall) MB the model adds over the runner's baseline after imports."""
    base = run.baseline_rss_mb
    if base is None:
        return None, None
    init = run.meta.get("init_peak_rss_mb")
    return (round(max(0.0, float(init) - base), 3) if init is not None else None,
            round(max(0.0, float(run.peak_rss_mb) - base), 3) if run.peak_rss_mb is not None else None)


def latency_stats(run: RunResult) -> LatencyStats:
    """LatencyStats from one runner result."""
    init, overall = _footprint(run)
    return LatencyStats.from_samples(
        run.timings_ms,
        warmup=run.warmup,
        threads=run.threads,
        first_inference_ms=run.first_inference_ms,
        init_ms=run.init_ms,
        peak_memory_mb=run.peak_rss_mb,
        runtime=f"{run.runtime} {run.runtime_version}",
        model_init_mb=init,
        model_overall_mb=overall,
    )


def pool_latency(runs: list[RunResult]) -> LatencyStats:
    """LatencyStats over the timed runs of several runner results (rounds of one artifact).

    First inference and init come from the first run; peak memory is the largest seen.
    """
    first = runs[0]
    stats = latency_stats(first)
    peaks = [r.peak_rss_mb for r in runs if r.peak_rss_mb is not None]
    footprints = [_footprint(r) for r in runs]
    inits = [i for i, _ in footprints if i is not None]
    overalls = [o for _, o in footprints if o is not None]
    return LatencyStats.from_samples(
        [t for r in runs for t in r.timings_ms], warmup=first.warmup, threads=first.threads,
        first_inference_ms=stats.first_inference_ms, init_ms=stats.init_ms, peak_memory_mb=max(peaks) if peaks else None,
        runtime=stats.runtime, model_init_mb=max(inits) if inits else None, model_overall_mb=max(overalls) if overalls else None)
