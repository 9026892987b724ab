"""Bounds for zip archives (``.keras`` models, ``.npz`` data), checked before anything is inflated.

A zip's central directory declares every member's compressed and uncompressed size. Python's
``zipfile`` (which Keras and numpy use) never inflates a member past its declared size (more data
fails the CRC check), so refusing members whose *declared* size is over a limit, or whose
declared inflation ratio is implausible, bounds the memory and time of everything after: a
12 GiB zip64 bomb or a 4 MB file declaring 4 GiB of weights is refused in milliseconds, from
the central directory alone. Nothing is decompressed here except ``.npy`` headers (a few hundred
bytes each, to check that the array a header declares fits the member that holds it: numpy
allocates the declared shape before reading) and, through :func:`read_member`, small JSON
members with a hard cap.

Example:
    >>> scan = scan_keras_archive("model.keras")  # doctest: +SKIP
    >>> config = json.loads(read_member("model.keras", "config.json", KERAS_LIMITS.max_config_bytes))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.errors import DataError, EdgekitError, ModelError
from edgekit.core.fsutil import require_regular

GiB = 2**30
MiB = 2**20


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may declare.

    Attributes:
        max_members: members in the central directory.
        max_member_bytes: declared uncompressed size of one member.
        max_total_bytes: declared uncompressed size of all members together.
        max_ratio: declared uncompressed / compressed size of a member (deflate reaches ~1000
            only on runs of one byte; real weights and images stay under ~20).
        ratio_floor_bytes: members smaller than this are not held to ``max_ratio``.
        max_config_bytes: a JSON member read whole (``config.json``, ``metadata.json``).
        max_npy_header_bytes: the header of a ``.npy`` member.
    """

    max_members: int = 10_000
    max_member_bytes: int = 8 * GiB
    max_total_bytes: int = 16 * GiB
    max_ratio: float = 100.0
    ratio_floor_bytes: int = 16 * MiB
    max_config_bytes: int = 64 * MiB
    max_npy_header_bytes: int = 10_000


KERAS_LIMITS = ArchiveLimits()
NPZ_LIMITS = ArchiveLimits(max_members=1_000, max_member_bytes=8 * GiB, max_total_bytes=16 * GiB)


@dataclass(frozen=True)
class ArchiveMember:
    """One member as its central directory entry declares it."""

    name: str
    compressed_bytes: int
    uncompressed_bytes: int
    method: int  # zipfile.ZIP_STORED (0), ZIP_DEFLATED (8), ...


@dataclass(frozen=True)
class ArchiveScan:
    """The declared content of an archive that passed its limits."""

    path: str
    file_bytes: int
    members: tuple[ArchiveMember, ...]

    @property
    def total_uncompressed_bytes(self) -> int:
        return sum(m.uncompressed_bytes for m in self.members)

    def member(self, name: str) -> ArchiveMember | None:
        """The member called ``name``, or None."""
        return next((m for m in self.members if m.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "file_bytes": self.file_bytes, "total_uncompressed_bytes": self.total_uncompressed_bytes,
                "members": [asdict(m) for m in self.members]}


def _declared_entries(fh, file_bytes: int) -> int | None:
    """The entry count of the end-of-central-directory record (zip64 aware), read from the
    file's tail only, so a central directory of millions of entries is refused before parsing."""
    tail_len = min(file_bytes, 22 + 65_535 + 20)
    fh.seek(file_bytes - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(b"PK\x05\x06")
    if pos < 0 or pos + 22 > len(tail):
        return None
    entries = struct.unpack_from("<H", tail, pos + 10)[0]
    if entries == 0xFFFF and pos >= 20 and tail[pos - 20: pos - 16] == b"PK\x06\x07":
        eocd64 = struct.unpack_from("<Q", tail, pos - 12)[0]
        if 0 <= eocd64 <= file_bytes - 56:
            fh.seek(eocd64)
            record = fh.read(56)
            if record[:4] == b"PK\x06\x06":
                entries = struct.unpack_from("<Q", record, 32)[0]
    return entries


def scan_zip(path: str | os.PathLike[str], *, what: str, limits: ArchiveLimits = KERAS_LIMITS,
             error: type[EdgekitError] = ModelError, hint: str = "re-save the file") -> ArchiveScan:
    """Reads a zip's central directory and refuses it if a declared size is over ``limits``.

    Args:
        path: the archive (a regular file).
        what: how messages name it ("model", "data").
        limits: the bounds.
        error: the exception class raised (ModelError for models, DataError for data).
        hint: the hint of a "not a valid zip" error.

    Returns:
        An :class:`ArchiveScan` of the declared members.

    Raises:
        InputError: the path is not a regular file.
        error: not a zip, or a member or the total over the limits.
    """
    p = require_regular(path, what)
    file_bytes = p.stat().st_size
    try:
        with open(p, "rb") as fh:
            entries = _declared_entries(fh, file_bytes)
        if entries is not None and entries > limits.max_members:
            raise error(f"{what} {p} declares {entries:,} archive members, more than the {limits.max_members:,} allowed",
                        hint="this is not a file edgekit writes or reads; re-save it")
        with zipfile.ZipFile(p) as zf:
            infos = zf.infolist()
    except EdgekitError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, struct.error, NotImplementedError) as exc:
        raise error(f"{what} {p} is not a valid zip archive ({type(exc).__name__}: truncated or corrupt?)", hint=hint) from None
    if len(infos) > limits.max_members:
        raise error(f"{what} {p} has {len(infos):,} archive members, more than the {limits.max_members:,} allowed",
                    hint="this is not a file edgekit writes or reads; re-save it")
    members = []
    total = 0
    for info in infos:
        member = ArchiveMember(info.filename, int(info.compress_size), int(info.file_size), int(info.compress_type))
        _check_member(p, what, member, info.header_offset, file_bytes, limits, error)
        total += member.uncompressed_bytes
        members.append(member)
    if total > limits.max_total_bytes:
        raise error(f"{what} {p} declares {_size(total)} uncompressed in all, more than the {_size(limits.max_total_bytes)} allowed",
                    hint="a zip bomb or a far larger file than edgekit handles; check where the file came from")
    return ArchiveScan(path=str(p), file_bytes=file_bytes, members=tuple(members))


def _check_member(p: Path, what: str, m: ArchiveMember, header_offset: int, file_bytes: int, limits: ArchiveLimits,
                  error: type[EdgekitError]) -> None:
    where = f"{what} {p}: member {m.name[:100]!r}"
    if m.compressed_bytes < 0 or header_offset < 0 or header_offset + 30 + m.compressed_bytes > file_bytes:
        raise error(f"{where} claims {_size(m.compressed_bytes)} of data at offset {header_offset}, past the end of the "
                    f"{_size(file_bytes)} file", hint="the archive is truncated or forged; re-save it")
    if m.method == zipfile.ZIP_STORED and m.compressed_bytes != m.uncompressed_bytes:
        raise error(f"{where} is stored uncompressed but declares {_size(m.uncompressed_bytes)} from {_size(m.compressed_bytes)}",
                    hint="the archive is corrupt or forged; re-save it")
    if m.uncompressed_bytes > limits.max_member_bytes:
        raise error(f"{where} declares {_size(m.uncompressed_bytes)} uncompressed, more than the {_size(limits.max_member_bytes)} allowed",
                    hint="a zip bomb or a far larger file than edgekit handles; check where the file came from")
    if m.uncompressed_bytes >= limits.ratio_floor_bytes:
        ratio = m.uncompressed_bytes / max(m.compressed_bytes, 1)
        if ratio > limits.max_ratio:
            raise error(f"{where} declares {_size(m.uncompressed_bytes)} from {_size(m.compressed_bytes)} "
                        f"(x{ratio:,.0f} compression, more than x{limits.max_ratio:g})",
                        hint="a zip bomb; real weights and data do not compress that well. Check where the file came from")


def _size(n: int) -> str:
    if n >= GiB:
        return f"{n / GiB:,.1f} GiB"
    if n >= MiB:
        return f"{n / MiB:,.1f} MiB"
    return f"{n:,} bytes"


def read_member(path: str | os.PathLike[str], name: str, max_bytes: int, *, what: str = "model",
                error: type[EdgekitError] = ModelError) -> bytes:
    """Reads one archive member whole, refusing it if it holds more than ``max_bytes``.

    Inflates at most ``max_bytes + 1`` bytes, whatever the member declares; the CRC is checked
    when the member is read to its end.

    Raises:
        error: the member is missing, over ``max_bytes``, or corrupt.
    """
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as zf, zf.open(name) as fh:
            data = fh.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise error(f"{what} {p}: member {name!r} holds more than {_size(max_bytes)}",
                            hint="a model's config is a few MB at most; check where the file came from")
            fh.read(1)  # reach the end: zipfile checks the CRC there
    except EdgekitError:
        raise
    except KeyError:
        raise error(f"{what} {p} has no member {name!r}", hint="re-save the file") from None
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, zlib.error, NotImplementedError) as exc:
        raise error(f"{what} {p}: member {name!r} cannot be read ({type(exc).__name__}: corrupt?)", hint="re-save the file") from None
    return data


def scan_keras_archive(path: str | os.PathLike[str], limits: ArchiveLimits = KERAS_LIMITS) -> ArchiveScan:
    """:func:`scan_zip` for a ``.keras`` model; its JSON members must also fit ``max_config_bytes``.

    Raises:
        ModelError: over a limit, not a zip, or no ``config.json``.
    """
    scan = scan_zip(path, what="model", limits=limits, error=ModelError, hint="re-save the model with model.save('model.keras')")
    config = scan.member("config.json")
    if config is None:
        raise ModelError(f"{path} has no config.json; it is not a Keras 3 model archive", hint="re-save it with model.save('model.keras')")
    for m in scan.members:
        if m.name.endswith(".json") and m.uncompressed_bytes > limits.max_config_bytes:
            raise ModelError(f"model {path}: member {m.name!r} declares {_size(m.uncompressed_bytes)}, more than the "
                             f"{_size(limits.max_config_bytes)} a model config may hold", hint="check where the file came from")
    return scan


def scan_npz(path: str | os.PathLike[str], limits: ArchiveLimits = NPZ_LIMITS) -> ArchiveScan:
    """:func:`scan_zip` for ``.npz`` data, plus each ``.npy`` member's header: the array it
    declares must be exactly the bytes the member holds (numpy allocates the declared shape
    before it reads), and hold no Python objects.

    Raises:
        DataError: over a limit, not a zip, or an array header that lies about its size.
    """
    scan = scan_zip(path, what="data", limits=limits, error=DataError, hint="save it again with numpy.savez")
    with zipfile.ZipFile(path) as zf:
        for m in scan.members:
            if m.name.endswith(".npy"):
                _check_npy_header(zf, Path(path), m, limits)
    return scan


def _check_npy_header(zf: zipfile.ZipFile, p: Path, m: ArchiveMember, limits: ArchiveLimits) -> None:
    where = f"data {p}: array {m.name.removesuffix('.npy')!r}"
    try:
        with zf.open(m.name) as fh:
            head = fh.read(min(limits.max_npy_header_bytes + 16, m.uncompressed_bytes))
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError) as exc:
        raise DataError(f"{where} cannot be read ({type(exc).__name__}: corrupt?)", hint="save it again with numpy.savez") from None
    buf = io.BytesIO(head)
    try:
        version = np.lib.format.read_magic(buf)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(buf, max_header_size=limits.max_npy_header_bytes)
    except (ValueError, EOFError, SyntaxError, TypeError, OverflowError) as exc:
        raise DataError(f"{where} has an unreadable .npy header ({str(exc)[:120]})", hint="save it again with numpy.savez") from None
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (pickled arrays)", hint="edgekit never unpickles data; save plain numeric arrays")
    if any(d < 0 for d in shape):
        raise DataError(f"{where} declares a negative dimension {shape}", hint="save it again with numpy.savez")
    declared = math.prod(shape) * dtype.itemsize
    held = m.uncompressed_bytes - buf.tell()
    if declared != held:
        raise DataError(f"{where} declares shape {tuple(shape)} of {dtype} ({_size(declared)}) but the archive member "
                        f"holds {_size(max(held, 0))}", hint="the file is corrupt or forged; save it again with numpy.savez")
