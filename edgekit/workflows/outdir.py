"""Output folders: checked before any work, assembled in a temporary folder, moved into place at the end.

Every command that writes a folder (``run``, ``optimize``, ``export``) uses these two functions:
:func:`prepare_out_dir` refuses a bad ``-o`` before anything is loaded, and :func:`staged_dir`
yields a temporary folder beside it that replaces the output only when the block ends (also when a
gate failed: the report is still wanted). A crash leaves the old output folder, if any, as it was.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from edgekit.core import interrupts
from edgekit.core.errors import GateFailed, InputError
from edgekit.core.fsutil import TMP_PREFIX


def prepare_out_dir(out_dir: str | os.PathLike[str], *, force: bool, inputs: Sequence[Any]) -> Path:
    """Checks the output folder before any work: absent, empty, or ``force``; never an input or a folder holding one."""
    out = Path(out_dir)
    resolved = out.resolve()
    for given in inputs:
        if given is None:
            continue
        src = Path(given).resolve()
        if src == resolved or resolved in src.parents:
            raise InputError(f"output folder {out} contains the input {given}",
                             hint="choose another -o folder; edgekit never overwrites its inputs")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file, expected a folder", hint="give a folder path with -o (it is created)")
    if not out.parent.exists():
        raise InputError(f"the parent folder of {out} does not exist", hint=f"create it first: mkdir -p {out.parent}")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError(f"output folder {out} already exists and is not empty",
                         hint="pass --force to replace it or choose another -o folder")
    return out


def move_into_place(tmp: Path, out: Path, *, force: bool = True) -> None:
    """Renames the finished ``tmp`` folder to ``out``; an old ``out`` is replaced only at the end, and restored on failure.

    Without ``force`` the rename itself decides: ``rename()`` onto an absent or empty folder succeeds and
    onto a non-empty one fails, in one step, so of several runs racing to the same new ``-o`` folder
    exactly one wins and the others fail with "already exists" (their staged folders are removed).
    """
    if not force:
        try:
            os.rename(tmp, out)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise InputError(f"output folder {out} already exists and is not empty (written by another run meanwhile?)",
                                 hint="pass --force to replace it or choose another -o folder", settings=("force",)) from None
            raise
        return
    backup = None
    if out.exists():
        backup = out.with_name(f"{TMP_PREFIX}old-{out.name}-{os.getpid()}")
        os.replace(out, backup)
    try:
        os.replace(tmp, out)
    except OSError:
        if backup is not None:
            os.replace(backup, out)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


@contextlib.contextmanager
def staged_dir(out: Path, *, force: bool = True) -> Iterator[Path]:
    """Yields a temporary folder beside ``out``; moves it to ``out`` when the block ends (also on :class:`GateFailed`).

    Without ``force`` the move refuses an ``out`` that another run filled meanwhile (see :func:`move_into_place`).
    """
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    moved = False
    try:
        try:
            yield tmp
            interrupts.check()  # a swallowed interrupt: the staged folder is removed, never moved into place
        except GateFailed:
            move_into_place(tmp, out, force=force)
            moved = True
            raise
        move_into_place(tmp, out, force=force)
        moved = True
    finally:
        if not moved:
            shutil.rmtree(tmp, ignore_errors=True)
