"""Arrays kept on disk: memory maps the kernel pages in and out, so data may be larger than memory.

:func:`disk_array` makes a writable ``np.memmap`` on an unlinked temporary file (it disappears
with the process); :func:`take_rows` selects rows of an on-disk array into another disk array when
the selection is large (``EDGEKIT_STREAM_MB``), into memory otherwise.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from edgekit.core.errors import DataError

__all__ = ["disk_array", "is_on_disk", "stream_threshold_bytes", "take_rows"]

DEFAULT_STREAM_MB = 1024


def stream_threshold_bytes() -> int:
    """Arrays larger than this many bytes (as float32) are kept on disk: ``EDGEKIT_STREAM_MB``, default 1024."""
    raw = os.environ.get("EDGEKIT_STREAM_MB", "").strip()
    try:
        mb = float(raw) if raw else DEFAULT_STREAM_MB
    except ValueError:
        raise DataError(f"EDGEKIT_STREAM_MB must be a number of megabytes, got {raw!r}", hint="e.g. EDGEKIT_STREAM_MB=2048") from None
    return int(max(0.0, mb) * 2**20)


def disk_array(shape: tuple[int, ...], dtype: Any) -> np.memmap:
    """A writable ``np.memmap`` of ``shape`` on an unlinked temporary file (``EDGEKIT_TMPDIR`` or the system's)."""
    folder = os.environ.get("EDGEKIT_TMPDIR") or None
    with tempfile.TemporaryFile(dir=folder, prefix="edgekit-data-") as handle:  # unlinked: gone with the process
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        handle.truncate(max(1, nbytes))
        return np.memmap(handle, dtype=dtype, mode="w+", shape=shape)  # mmap keeps its own descriptor


def is_on_disk(array: Any) -> bool:
    """Whether ``array`` is memory-mapped (an ``.npy``/``.npz`` member, or a :func:`disk_array`)."""
    return isinstance(array, np.memmap) or isinstance(getattr(array, "base", None), np.memmap)


def take_rows(array: Any, idx: np.ndarray) -> Any:
    """``array[idx]``; for an on-disk array whose selection is larger than the threshold, a disk array (copied in chunks)."""
    if not is_on_disk(array) or len(idx) * int(np.prod(array.shape[1:], dtype=np.int64)) * 4 <= stream_threshold_bytes():
        return array[idx]
    out = disk_array((len(idx), *array.shape[1:]), array.dtype)
    for start in range(0, len(idx), 4096):
        out[start:start + 4096] = array[idx[start:start + 4096]]
    out.flush()
    return out
