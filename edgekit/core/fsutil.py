"""File helpers: atomic writes, hashes, compressed sizes, and input/output-path checks.

Outputs are written to a temporary file in the destination folder and renamed into place, so an
interrupted run (Ctrl-C, a crash, a full disk) never leaves a half-written artifact under the
final name, and an existing file is replaced only when the new one is complete. Without
``overwrite`` the last step is ``os.link()`` of the temporary file to the final name, which fails
if the name exists: "exists without --force" is decided in that one step, so of N runs racing
to the same new path exactly one wins. Only regular files are ever replaced (``--report
/dev/null`` is refused, the device node left alone) and only regular files are read: FIFOs,
devices and sockets are refused from ``stat()`` alone, before any blocking ``open()``.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.core import interrupts
from edgekit.core.datatypes import SizeInfo
from edgekit.core.errors import EdgekitError, InputError

TMP_PREFIX = ".edgekit-tmp-"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The hex sha256 of a file (or of every file below a directory, in sorted order)."""
    digest = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            digest.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def size_info(path: str | os.PathLike[str]) -> SizeInfo:
    """Size on disk and gzip-compressed size (level 9, deterministic header)."""
    data = Path(path).read_bytes()
    return SizeInfo(bytes=len(data), gzip_bytes=len(gzip.compress(data, compresslevel=9, mtime=0)))


def _disk_error(path: Path, exc: OSError) -> EdgekitError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        what = "no space left on the device" if exc.errno != errno.EFBIG else "the file size limit was reached"
        return InputError(
            f"{what} while writing {path}; nothing was written",
            hint="free some disk space (or raise the limit) or choose another output folder with -o",
        )
    return InputError(f"cannot write {path}: {exc.strerror or exc}", hint="check the folder exists and is writable")


_KINDS = ((stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))


def file_kind(mode: int) -> str:
    """``regular file``, ``directory``, ``FIFO (named pipe)``, ``character device``... for an ``st_mode``."""
    if stat.S_ISREG(mode):
        return "regular file"
    return next((name for test, name in _KINDS if test(mode)), "special file")


def require_regular(path: str | os.PathLike[str], what: str, *, allow_dir: bool = False) -> Path:
    """Checks, with ``stat()`` only (never a blocking ``open()``), that ``path`` is a regular file.

    FIFOs, character/block devices and sockets are refused at once; a directory only when
    ``allow_dir`` (a SavedModel, an image folder). Symbolic links are followed.

    Args:
        path: the input.
        what: how the message names it ("model", "data", "recipe").
        allow_dir: accept a directory too.

    Returns:
        ``path`` as a Path.

    Raises:
        InputError: missing, unreadable, or not a regular file (exit code 2).
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise InputError(f"{what} {p} does not exist", hint="check the path") from None
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}", hint="check the path and its permissions") from None
    if stat.S_ISREG(mode) or (allow_dir and stat.S_ISDIR(mode)):
        return p
    if stat.S_ISDIR(mode):
        raise InputError(f"{what} {p} is a directory, expected a file", hint="give the path of the file itself")
    raise InputError(f"{what} {p} is a {file_kind(mode)}, not a regular file",
                     hint="give the path of a regular file; edgekit does not read pipes, devices or sockets")


def require_regular_tree(path: str | os.PathLike[str], what: str, *, max_entries: int = 100_000) -> Path:
    """Checks that every entry below directory ``path`` is a regular file or a directory.

    For a SavedModel (a FIFO named ``variables/variables.index`` would block TensorFlow forever)
    or an image folder. Symbolic links are judged by their target; at most ``max_entries`` are
    looked at (more is refused: not a model folder).

    Raises:
        InputError: a FIFO, device, socket or dangling link below ``path``, or too many entries.
    """
    root = require_regular(path, what, allow_dir=True)
    if not root.is_dir():
        return root
    seen = 0
    for folder, dirs, files in os.walk(root, followlinks=True):  # bounded by max_entries, even with link loops
        for name in dirs + files:
            seen += 1
            if seen > max_entries:
                raise InputError(f"{what} {root} holds more than {max_entries:,} entries", hint="point at the model or data folder itself")
            entry = Path(folder) / name
            try:
                mode = os.stat(entry).st_mode
            except OSError as exc:
                raise InputError(f"{what} {root} contains {entry}, which cannot be read ({exc.strerror or exc})",
                                 hint="remove the dangling link or fix its permissions") from None
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise InputError(f"{what} {root} contains {entry}, a {file_kind(mode)}",
                                 hint="a model or data folder holds only regular files and folders")
    return root


def read_regular_bytes(path: str | os.PathLike[str], what: str, *, max_bytes: int | None = None) -> bytes:
    """Reads a regular file whole, refusing anything else without blocking.

    The file is opened with ``O_NONBLOCK`` and checked again with ``fstat()`` on the open
    descriptor, so a path swapped for a FIFO after :func:`require_regular` still cannot block.

    Raises:
        InputError: not a regular file, unreadable, or larger than ``max_bytes``.
    """
    p = require_regular(path, what)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot read {what} {p}: {exc.strerror or exc}", hint="check the path and its permissions") from None
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{what} {p} is a {file_kind(st.st_mode)}, not a regular file",
                             hint="give the path of a regular file; edgekit does not read pipes, devices or sockets")
        if max_bytes is not None and st.st_size > max_bytes:
            raise InputError(f"{what} {p} is {st.st_size:,} bytes, more than the {max_bytes:,} bytes allowed", hint="give a smaller file")
        data = fh.read() if max_bytes is None else fh.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise InputError(f"{what} {p} is more than the {max_bytes:,} bytes allowed", hint="give a smaller file")
    return data


def _refuse_special_destination(final: Path) -> None:
    """Raises if ``final`` exists and is not a regular file (a device node, FIFO, socket, directory)."""
    try:
        mode = os.lstat(final).st_mode
    except FileNotFoundError:
        return
    except OSError:
        return  # the write itself reports what is wrong
    if stat.S_ISLNK(mode):
        with contextlib.suppress(OSError):
            mode = os.stat(final).st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISLNK(mode):
        raise InputError(f"output {final} is a {file_kind(mode)}; edgekit writes and replaces only regular files",
                         hint="choose a regular file path for the output")


def _exists_error(final: Path) -> InputError:
    return InputError(f"output {final} already exists (written by another run meanwhile?)",
                      hint="overwrite it with force or choose another output path", settings=("force",))


def _link_no_clobber(tmp: Path, final: Path) -> None:
    """Puts ``tmp`` at ``final`` only if ``final`` does not exist, atomically (``link()``)."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise _exists_error(final) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # no hard links on this file system: claim the name with O_EXCL, then replace the placeholder
        try:
            os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise _exists_error(final) from None
        os.replace(tmp, final)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; puts it at ``final`` if the block succeeds.

    Args:
        final: the destination. If it exists it must be a regular file (or a link to one).
        overwrite: replace an existing ``final`` (``os.replace``). When False the final step is
            ``os.link()``, which fails if ``final`` exists, so exactly one of several racing
            writers wins; the others raise :class:`InputError` and leave nothing behind.

    Example:
        >>> with atomic_path("out.tflite", overwrite=False) as tmp:  # doctest: +SKIP
        ...     tmp.write_bytes(model_bytes)
    """
    final = Path(final)
    _refuse_special_destination(final)
    if not overwrite and os.path.lexists(final):
        raise _exists_error(final)
    remove_stale_temps(final)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix="-" + final.name, dir=final.parent or ".")
    except OSError as exc:
        raise _disk_error(final, exc) from exc
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield tmp
        interrupts.check()  # an interrupt swallowed while the output was made: it is not put in place
        _refuse_special_destination(final)
        if overwrite:
            os.replace(tmp, final)
        else:
            _link_no_clobber(tmp, final)
    except OSError as exc:
        raise _disk_error(final, exc) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_keras_atomic(model: Any, final: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """``model.save`` to ``final`` (.keras) atomically: Keras needs the suffix, so it saves to a
    ``.keras`` name beside the temporary file, which then replaces ``final`` (see :func:`atomic_path`
    for ``overwrite``)."""
    with atomic_path(final, overwrite=overwrite) as tmp:
        target = tmp.with_name(tmp.name + ".keras")
        try:
            model.save(target)
            os.replace(target, tmp)
        finally:
            target.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(final: Path) -> None:
    """Deletes temporary files a killed edgekit run left for ``final`` (their process is gone)."""
    folder = final.parent if str(final.parent) else Path(".")
    if not folder.is_dir():
        return
    for tmp in folder.glob(f"{TMP_PREFIX}*-{final.name}"):
        pid_text = tmp.name[len(TMP_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> None:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_path` for ``overwrite``)."""
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def json_bytes(payload: Any) -> bytes:
    """``payload`` as the indented JSON edgekit writes (what :func:`write_json_atomic` writes)."""
    return (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode()


def write_json_atomic(path: str | os.PathLike[str], payload: Any, *, overwrite: bool = True) -> None:
    """Writes ``payload`` as indented JSON, atomically (see :func:`atomic_path` for ``overwrite``)."""
    write_bytes_atomic(path, json_bytes(payload), overwrite=overwrite)


def check_output_path(
    output: str | os.PathLike[str],
    *,
    inputs: list[str | os.PathLike[str] | None] = (),  # type: ignore[assignment]
    force: bool = False,
    suffixes: tuple[str, ...] = (),
    sidecars: list[Path] = (),  # type: ignore[assignment]
) -> Path:
    """Validates an output path before any work starts and returns it as a Path.

    Raises InputError if the output is one of the inputs, is a directory or another non-regular
    file (a device node, a FIFO: refused even with ``force``), has the wrong suffix, sits in a
    missing folder, or exists (with its sidecar files) and ``force`` is not set. The existence
    check here is early feedback only; the write decides it atomically (``atomic_path(...,
    overwrite=force)``).
    """
    out = Path(output)
    for given in inputs:
        if given is None:
            continue
        src = Path(given)
        if src.exists() and out.exists() and os.path.samefile(src, out) or out.resolve() == src.resolve():
            raise InputError(
                f"output path {out} is the same as the input {src}",
                hint="choose a different -o path; edgekit never overwrites its inputs",
            )
    if suffixes and out.suffix.lower() not in suffixes:
        raise InputError(
            f"output {out} should end with {' or '.join(suffixes)}",
            hint=f"for example -o {out.with_suffix(suffixes[0]).name}",
        )
    if out.is_dir():
        raise InputError(f"output {out} is a directory, expected a file path", hint=f"use -o {out}/model{suffixes[0] if suffixes else ''}")
    for destination in [out, *sidecars]:
        _refuse_special_destination(Path(destination))
    if not out.parent.exists():
        raise InputError(f"output folder {out.parent} does not exist", hint=f"create it first: mkdir -p {out.parent}")
    for existing in [out, *sidecars]:
        if existing.exists() and not force:
            raise InputError(f"output {existing} already exists", hint="pass --force to overwrite it or choose another -o path")
    return out


def require_file(path: str | os.PathLike[str], what: str, *, allow_dir: bool = False) -> Path:
    """Checks that ``path`` exists, is a regular file (or a directory if ``allow_dir``) and is not
    empty, and returns it. FIFOs, devices and sockets are refused (:func:`require_regular`)."""
    p = require_regular(path, what, allow_dir=allow_dir)
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{what} {p} is empty (0 bytes)", hint="the file was probably not written completely; recreate it")
    return p
