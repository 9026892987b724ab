"""File helpers: atomic writes, hashes, compressed sizes, and output-path checks.

Outputs are written to a temporary file in the destination folder and renamed into place, so an
interrupted run (Ctrl-C, a crash, a full disk) never leaves a half-written artifact under the
final name, and an existing file is replaced only when the new one is complete.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yields a temporary path beside ``final``; renames it to ``final`` if the block succeeds.

    Example:
        >>> with atomic_path("out.tflite") as tmp:  # doctest: +SKIP
        ...     tmp.write_bytes(model_bytes)
    """
    final = Path(final)
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
        os.replace(tmp, final)
    except OSError as exc:
        raise _disk_error(final, exc) from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_keras_atomic(model: Any, final: str | os.PathLike[str]) -> None:
    """``model.save`` to ``final`` (.keras) atomically: Keras needs the suffix, so it saves to a
    ``.keras`` name beside the temporary file, which then replaces ``final``."""
    with atomic_path(final) as tmp:
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


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Writes ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def json_bytes(payload: Any) -> bytes:
    """``payload`` as the indented JSON edgekit writes (what :func:`write_json_atomic` writes)."""
    return (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode()


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> None:
    """Writes ``payload`` as indented JSON, atomically."""
    write_bytes_atomic(path, json_bytes(payload))


def check_output_path(
    output: str | os.PathLike[str],
    *,
    inputs: list[str | os.PathLike[str] | None] = (),  # type: ignore[assignment]
    force: bool = False,
    suffixes: tuple[str, ...] = (),
    sidecars: list[Path] = (),  # type: ignore[assignment]
) -> Path:
    """Validates an output path before any work starts and returns it as a Path.

    Raises InputError if the output is one of the inputs, is a directory, has the wrong suffix,
    sits in a missing folder, or exists (with its sidecar files) and ``force`` is not set.
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
    if not out.parent.exists():
        raise InputError(f"output folder {out.parent} does not exist", hint=f"create it first: mkdir -p {out.parent}")
    for existing in [out, *sidecars]:
        if existing.exists() and not force:
            raise InputError(f"output {existing} already exists", hint="pass --force to overwrite it or choose another -o path")
    return out


def require_file(path: str | os.PathLike[str], what: str, *, allow_dir: bool = False) -> Path:
    """Checks that ``path`` exists (and is a file unless ``allow_dir``) and returns it."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"{what} {p} does not exist", hint="check the path")
    if p.is_dir() and not allow_dir:
        raise InputError(f"{what} {p} is a directory, expected a file", hint="give the path of the file itself")
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{what} {p} is empty (0 bytes)", hint="the file was probably not written completely; recreate it")
    return p
