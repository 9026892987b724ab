"""Transports: how edgekit runs a command on a device and moves files to and from it.

A transport is a small interface with three implementations: :class:`LocalTransport` (a child
process on this machine), :class:`~edgekit.devices.ssh.SshTransport` (the system OpenSSH
client) and :class:`~edgekit.devices.adb.AdbTransport` (the system ``adb``). Commands are
argument lists; the remote transports quote them once with :func:`shlex.join`. Every run gets
its own work folder on the device, removed afterwards (:func:`work_dir`).

:func:`edgekit.devices.connect.open_transport` picks the implementation a profile names.

Example::

    transport = open_transport(load_profile("raspberry-pi-4"))
    try:
        with work_dir(transport) as work:
            transport.push(["model.tflite"], work)
            done = transport.run(["ls", "-l", work], timeout_s=30)
    finally:
        transport.close()
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from edgekit.core.errors import DeviceError
from edgekit.devices.profiles import DeviceProfile
from edgekit.runtime.local import run_bounded

# Appended to remote shell commands: the exit status survives transports that lose it (old adb)
# and a death by signal shows as 128+N (ssh itself exits 255 for a remote signal).
EXIT_MARKER = "__EDGEKIT_EXIT__="


@dataclass(frozen=True)
class Completed:
    """A finished command: exit code (negative for a signal, like subprocess), stdout, stderr."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def signal_name(self) -> str | None:
        """``SIGILL`` etc. when the command died from a signal (directly or as a shell's 128+N)."""
        number = -self.returncode if self.returncode < 0 else (self.returncode - 128 if 128 < self.returncode < 160 else None)
        if number is None:
            return None
        try:
            return signal.Signals(number).name
        except ValueError:
            return f"signal {number}"

    def tail(self, lines: int = 1) -> str:
        """The last non-empty stderr (else stdout) lines, for error messages."""
        for text in (self.stderr, self.stdout):
            kept = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
            if kept:
                return " | ".join(kept[-lines:])[:400]
        return "no output"


@runtime_checkable
class Transport(Protocol):
    """Runs commands on a device and copies files to and from it."""

    profile: DeviceProfile

    def run(self, argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None) -> Completed:
        """Runs ``argv`` on the device; returns its exit code and output (never raises for a non-zero exit)."""
        ...

    def push(self, local_paths: Sequence[str | os.PathLike[str]], remote_dir: str) -> None:
        """Copies local files into an existing folder on the device."""
        ...

    def pull(self, remote_path: str, local_path: str | os.PathLike[str]) -> None:
        """Copies one file from the device to this machine."""
        ...

    def make_work_dir(self) -> str:
        """Creates a fresh, private folder on the device and returns its path."""
        ...

    def remove_work_dir(self, path: str) -> None:
        """Removes a folder made by :meth:`make_work_dir`."""
        ...

    def close(self) -> None:
        """Releases connections (idempotent)."""
        ...


def split_exit_marker(stdout: str) -> tuple[str, int | None]:
    """Removes the exit marker line from ``stdout``; returns (output, exit code or None if absent).

    Example:
        >>> split_exit_marker("hello\\n__EDGEKIT_EXIT__=3\\n")
        ('hello\\n', 3)
    """
    text = stdout.replace("\r\n", "\n")
    head, sep, tail = text.rpartition(EXIT_MARKER)
    if not sep:
        return text, None
    code_text = tail.strip().split()[0] if tail.strip() else ""
    if not code_text.isdigit():
        return text, None
    if head.endswith("\n"):
        head = head[:-1]  # the newline the marker's printf added
    return head, int(code_text)


def with_exit_marker(command: str) -> str:
    """A shell command that prints its exit status after its output."""
    return f"{command}; printf '\\n{EXIT_MARKER}%s\\n' $?"


def env_argv(env: dict[str, str] | None) -> list[str]:
    """``env K=V ...`` prefix for a remote command (empty without variables)."""
    if not env:
        return []
    return ["env", *[f"{k}={v}" for k, v in env.items()]]


def check_remote_path(path: str) -> str:
    """Rejects remote paths that a shell or scp could misread."""
    if not path.startswith("/") or any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/" for c in path):
        raise DeviceError(f"refusing remote path '{path}': only absolute paths of letters, digits and ._-/ are used", hint="check work_root in the profile")
    return path


class LocalTransport:
    """Child processes on this machine (also runs an emulator's Python, e.g. under qemu-user)."""

    def __init__(self, profile: DeviceProfile) -> None:
        self.profile = profile

    def run(self, argv: Sequence[str], *, timeout_s: float, env: dict[str, str] | None = None) -> Completed:
        merged = {**os.environ, **(env or {})}
        try:  # its own process group, killed whole past the limit (TimeLimit, exit 10)
            proc = run_bounded(list(argv), timeout_s, env=merged, what=f"{shlex.join(argv[:3])} ... on this machine")
        except FileNotFoundError:
            return Completed(127, "", f"{argv[0]}: command not found")
        except PermissionError:
            return Completed(126, "", f"{argv[0]}: permission denied")
        return Completed(proc.returncode, proc.stdout, proc.stderr)

    def push(self, local_paths: Sequence[str | os.PathLike[str]], remote_dir: str) -> None:
        for path in local_paths:
            shutil.copy2(path, Path(remote_dir) / Path(path).name)

    def pull(self, remote_path: str, local_path: str | os.PathLike[str]) -> None:
        try:
            shutil.copy2(remote_path, local_path)
        except FileNotFoundError:
            raise DeviceError(f"{remote_path} was not written on this machine", hint="the runner failed before writing it; rerun with -v") from None

    def make_work_dir(self) -> str:
        root = self.profile.runner_settings.work_root
        return tempfile.mkdtemp(prefix="edgekit-run-", dir=root)

    def remove_work_dir(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def close(self) -> None:
        pass

    def __enter__(self) -> LocalTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def work_dir(transport: Transport) -> Iterator[str]:
    """A fresh folder on the device for one run, removed afterwards even when the run fails."""
    path = transport.make_work_dir()
    try:
        yield path
    except BaseException:
        try:
            transport.remove_work_dir(path)
        except DeviceError:
            pass  # the run's own error is the one to report
        raise
    transport.remove_work_dir(path)
