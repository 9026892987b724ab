"""An interrupt (Ctrl-C, SIGTERM) that nothing may swallow.

The CLI's signal handlers raise ``KeyboardInterrupt`` where the program is, and also mark the
interrupt here. A signal that lands inside third-party code with a bare ``except:`` (seen during
TensorFlow's import under load: the run then went on to the end and exited 0) would otherwise be
lost; the mark is checked again where it matters: before an output is put in place (atomic writes,
staged folders) and after every training batch, so an interrupted run still writes nothing and
exits 130/143.
"""

from __future__ import annotations

_signal: int | None = None  # the signal number that interrupted this process, once one did


def mark(signum: int) -> None:
    """Records an interrupt (called by the CLI's signal handlers)."""
    global _signal
    _signal = signum


def pending() -> int | None:
    """The signal that interrupted this process, if one did."""
    return _signal


def check() -> None:
    """Raises ``KeyboardInterrupt`` again if the process was interrupted (the first one may have been swallowed)."""
    if _signal is not None:
        raise KeyboardInterrupt
