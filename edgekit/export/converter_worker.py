"""The TFLite converter in its own process: a converter crash (a segfault in native code) or a
conversion that never ends fails one command with a clear message instead of killing edgekit.

The converter and its calibration run native code on a user's model; with TF 2.21 a Conv1D+GRU
model made int8 calibration segfault (exit 139, no message, partial outputs possible). Here every
conversion runs in one long-lived worker process started with ``spawn`` (never ``fork``: forking a
process whose TensorFlow threads are running can deadlock), so TensorFlow is imported once per
edgekit run, not once per conversion. The model travels as a ``.keras`` file edgekit writes into a
private temporary folder; the worker loads it back with Keras' safe mode (unless the model was
loaded with ``--unsafe``) and converts it with the same code as in process
(:func:`edgekit.export.convert.convert`), so the bytes are the same. The other native converter
stages run there too, each named in its error: the QAT export (the QAT graph travels as the
SavedModel ``TFLiteConverter.from_keras_model`` would export itself, since its fake-quant layers are
never saved as ``.keras``) and the per-layer sensitivity analysis (debugger calibration, the
instrumented run and every re-quantization with layers kept in float, from the calibrated bytes).

If the worker dies, the command fails with exit 5 (``ConversionError``) naming the signal, and the
next conversion starts a fresh worker; past the time limit the worker is killed (exit 10,
``TimeLimit``). A model that cannot travel as a file (custom classes from a Python dict, a
subclassed model) converts in process, as before. ``EDGEKIT_CONVERTER=inprocess`` turns the worker
off (debugging with ``pdb``).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import multiprocessing
import os
import signal
import tempfile
import time
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from edgekit.core import errors as error_types
from edgekit.core.errors import ConversionError, EdgekitError, TimeLimit
from edgekit.core.tfshim import native_output_captured

DEFAULT_TIMEOUT_S = 1800.0  # a conversion of a large model with calibration takes minutes, never hours

_executor: concurrent.futures.ProcessPoolExecutor | None = None
_unavailable: str | None = None  # why no worker can start in this process (then conversions run in process)


def isolation_enabled() -> bool:
    return os.environ.get("EDGEKIT_CONVERTER", "worker") != "inprocess" and _unavailable is None


def _init_worker(verbose: bool) -> None:
    """Quiet TensorFlow's start-up banner in the worker (its logs are captured per conversion)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it stops the worker
    if not verbose:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)


def _get_executor() -> concurrent.futures.ProcessPoolExecutor | None:
    """The worker, started (and checked to answer) on first use; None when no worker can start here.

    A script that calls edgekit at import time without an ``if __name__ == "__main__":`` guard
    cannot start ``spawn`` processes (Python re-imports the main module in the child); its
    conversions then run in process, as before, and the reason is kept.
    """
    global _executor, _unavailable
    if _executor is None:
        executor = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=(bool(os.environ.get("EDGEKIT_VERBOSE")),))
        try:
            executor.submit(os.getpid).result(timeout=120)
        except (BrokenProcessPool, concurrent.futures.TimeoutError, OSError, RuntimeError) as exc:
            _unavailable = f"the converter's worker process could not start ({type(exc).__name__}); converting in process"
            executor.shutdown(wait=False, cancel_futures=True)
            return None
        _executor = executor
    return _executor


def _exit_signal(procs: list[Any] | None = None) -> str:
    """The signal that ended the worker (SIGSEGV, SIGABRT...), if it can be told."""
    if procs is None:
        procs = list(getattr(_executor, "_processes", {}).values()) if _executor is not None else []
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=2)  # the pool may notice the death before the process is reaped
        code = getattr(proc, "exitcode", None)
        # the pool's own thread may reap the process at the same moment (our wait then sees no child, and the
        # status lands on the shared process object a moment later): look again for a little while
        for _ in range(30):
            if code is not None:
                break
            time.sleep(0.05)
            code = getattr(proc, "exitcode", None)
        if isinstance(code, int) and code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        if isinstance(code, int) and code > 0:
            return f"exit code {code}"
    return "a native crash"


def _discard_executor(kill: bool) -> None:
    """Drops the worker (killing its process when it hangs); the next conversion starts a fresh one."""
    global _executor
    executor, _executor = _executor, None
    if executor is None:
        return
    if kill:
        for proc in list(getattr(executor, "_processes", {}).values()):
            try:
                proc.kill()
            except (OSError, AttributeError):
                pass
    executor.shutdown(wait=False, cancel_futures=True)


def error_details(exc: EdgekitError) -> dict[str, Any]:
    """An error raised in the worker, as plain data (re-raised as the same class by the parent)."""
    return {"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint, "settings": list(exc.settings)}


def _raise_from(details: dict[str, Any]) -> None:
    cls = getattr(error_types, details.get("kind", ""), None)
    if not (isinstance(cls, type) and issubclass(cls, EdgekitError)):
        cls = ConversionError
    raise cls(details["message"], hint=details.get("hint"), settings=tuple(details.get("settings") or ()))


def _save_for_worker(keras_model: Any, folder: Path) -> Path | None:
    """The model as a ``.keras`` file the worker can load, or None if it cannot travel as a file."""
    path = folder / "model.keras"
    try:
        with native_output_captured(stdout=False), contextlib.redirect_stdout(io.StringIO()):
            keras_model.save(path)
    except Exception:  # noqa: BLE001 - any model Keras cannot serialize converts in process instead
        return None
    return path


def model_for_worker(loaded: Any, folder: Path) -> str | None:
    """A file or folder the worker can load ``loaded`` from (written into ``folder``), or None."""
    if loaded.keras_model is not None:
        path = _save_for_worker(loaded.keras_model, folder)
        return None if path is None else str(path)
    if loaded.saved_model_dir is not None:
        return str(loaded.saved_model_dir)
    return None


def run_in_worker(job_fn: Callable[[dict[str, Any]], tuple[str, Any]], job: dict[str, Any], *, stage: str, name: str,
                  timeout_s: float | None = None, hint: str = "") -> tuple[str, Any] | None:
    """Runs ``job_fn(job)`` in the worker process: its ``(status, value)``; None when no worker can start.

    ``stage`` names what runs ("conversion to int8", "QAT export", "the per-layer sensitivity
    analysis") in the messages. A ``("error", details)`` answer is re-raised here as the same
    edgekit error.

    Raises:
        ConversionError: the job raised, or the worker died (a native crash), naming the signal and the stage.
        TimeLimit: the job ran past ``timeout_s`` (the worker was killed).
    """
    executor = _get_executor()
    if executor is None:
        return None
    limit = timeout_s or DEFAULT_TIMEOUT_S
    procs = list(getattr(executor, "_processes", {}).values())  # kept: the pool forgets them once it breaks
    try:
        future = executor.submit(job_fn, job)
        # a fresh pool starts its process in submit: keep it too (its exit code names the signal of a crash)
        procs += [p for p in getattr(executor, "_processes", {}).values() if p not in procs]
        status, value = future.result(timeout=limit)
    except concurrent.futures.TimeoutError:
        _discard_executor(kill=True)
        raise TimeLimit(f"the TFLite converter did not finish {stage} of {name} within {limit:.0f} s; it was stopped",
                        hint="check the model converts in float32 first; rerun with -v for the converter log") from None
    except BrokenProcessPool:
        how = _exit_signal(procs)
        _discard_executor(kill=True)
        raise ConversionError(f"the TFLite converter crashed ({how} in its own process) during {stage} of {name}; "
                              "edgekit is unaffected and wrote nothing",
                              hint=hint + "try another mode (float32, dynamic); rerun with -v for the converter log") from None
    except KeyboardInterrupt:
        _discard_executor(kill=True)
        raise
    if status == "error":
        _raise_from(value)
    return status, value


def convert_in_worker(job_fn: Callable[[dict[str, Any]], tuple[str, Any]], loaded: Any, mode: Any, *, calibration: Any, io_type: Any,
                      allow_select_tf_ops: bool, per_channel: bool, timeout_s: float | None = None) -> bytes | None:
    """Converts in the worker process; None when the model cannot travel to it (convert in process then).

    Raises:
        ConversionError: the converter failed, or its process died (a native crash), naming the signal.
        TimeLimit: the conversion ran past ``timeout_s`` (the worker was killed).
    """
    with tempfile.TemporaryDirectory(prefix="edgekit-convert-") as tmp:
        source = model_for_worker(loaded, Path(tmp))
        if source is None:
            return None
        job = {"model": source, "unsafe": bool(getattr(loaded, "unsafe", False)), "mode": mode.value, "calibration": calibration,
               "io_type": io_type.value, "allow_select_tf_ops": allow_select_tf_ops, "per_channel": per_channel}
        done = run_in_worker(job_fn, job, stage=f"the conversion to {mode.value}", name=str(getattr(loaded, "path", "") or "the model"),
                             timeout_s=timeout_s,
                             hint="without --allow-select-tf-ops edgekit unrolls LSTM/GRU layers to builtin ops; " if allow_select_tf_ops else "")
    if done is None:
        return None
    status, value = done
    if status == "ok":
        return bytes(value)
    return None  # "reload": the saved copy does not load back alone (custom classes): convert in process
