"""Per-tensor checks of a ``.tflite`` flatbuffer: buffer size, quantization, sparsity metadata.

Pure functions over the generated LiteRT schema accessors, used by
:mod:`edgekit.core.tflite_verify`. Each returns ``(check, message)`` problems; vector lengths are
checked against the file size before numpy reads them, so a hostile length cannot allocate.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np

Problem = tuple[str, str]  # (check name, message)

#: bits per element of each tensor type; None: variable-size (strings) or no data (resources)
TYPE_BITS: dict[str, int | None] = {
    "FLOAT32": 32, "FLOAT16": 16, "INT32": 32, "UINT8": 8, "INT64": 64, "STRING": None, "BOOL": 8, "INT16": 16,
    "COMPLEX64": 64, "INT8": 8, "FLOAT64": 64, "COMPLEX128": 128, "UINT64": 64, "RESOURCE": None, "VARIANT": None,
    "UINT32": 32, "UINT16": 16, "INT4": 4, "BFLOAT16": 16, "INT2": 2, "UINT4": 4, "FLOAT8_E4M3FN": 8, "FLOAT8_E5M2": 8,
}
_ZERO_POINT_RANGE = {"INT8": (-128, 127), "UINT8": (0, 255), "INT16": (-32768, 32767), "INT4": (-8, 7), "UINT4": (0, 15)}
_INDEX_ITEMSIZE = {"Int32Vector": 4, "Uint16Vector": 2, "Uint8Vector": 1}


def schema_module():
    """The LiteRT flatbuffer schema (generated Python, no native code)."""
    from ai_edge_litert import schema_py_generated as schema

    return schema


def enum_names(cls) -> dict[int, str]:
    """value -> name of a generated schema enum class."""
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@cache
def _enums() -> tuple[dict[int, str], dict[int, str]]:
    schema = schema_module()
    return enum_names(schema.QuantizationDetails), enum_names(schema.SparseIndexVector)


def vector(table: Any, field: str, itemsize: int, limit: int) -> np.ndarray:
    """A vector field as a numpy array (empty when absent), its length checked against ``limit`` bytes.

    Raises:
        ValueError: the vector claims more entries than ``limit`` bytes can hold.
    """
    n = getattr(table, field + "Length")()
    if n < 0 or n * itemsize > limit:
        raise ValueError(f"{field} claims {n} entries, more than the file holds")
    arr = getattr(table, field + "AsNumpy")()
    return arr if isinstance(arr, np.ndarray) else np.zeros(0, np.int32)


def buffer_size_problem(dtype: str, shape: list[int], data: int, values: int | None, sparse: bool, bidx: int) -> Problem | None:
    """Whether constant data of ``data`` bytes fits a tensor: exactly the bytes its shape and dtype
    need (4- and 2-bit types: packed, or one byte per value), or for a sparse tensor the bytes of
    the ``values`` its sparsity metadata stores."""
    bits = TYPE_BITS.get(dtype)
    if bits is None:
        return None
    if sparse:
        if values is None:
            return None  # the sparsity metadata was already reported
        count, what = values, f"its sparsity metadata stores {values} values of {dtype}, which need"
    else:
        if any(d < 0 for d in shape):
            return "buffer_size", f"constant tensor has unknown dimensions {shape}"
        count, what = math.prod(shape), f"shape {shape} {dtype} needs"
    packed = (count * bits + 7) // 8
    if data != packed and not (bits < 8 and data == count):
        return "buffer_size", f"buffer {bidx} holds {data} bytes, {what} {packed}"
    return None


def quantization_problems(q: Any, dtype: str | None, shape: list[int], limit: int) -> list[Problem]:
    """Checks quantization parameters the way the interpreter needs them: as many zero points as
    scales, 1 scale or one per slice of the quantized dimension (in range), scales finite and > 0,
    zero points within the dtype. Blockwise/custom details are only checked for a known type."""
    details = int(q.DetailsType())
    if details not in _enums()[0]:
        return [("enum", f"quantization details type {details} is not known")]
    scales = vector(q, "Scale", 4, limit)
    zero_points = vector(q, "ZeroPoint", 8, limit)
    ns, nz = scales.size, zero_points.size
    if ns == 0 and nz == 0 or details != 0:
        return []
    problems: list[Problem] = []
    axis = int(q.QuantizedDimension())
    rank = len(shape)
    if axis < 0 or (rank and axis >= rank):
        problems.append(("quantization", f"quantized dimension {axis} is outside the tensor's {rank} dimension(s)"))
    elif ns != 1 and (rank == 0 or (shape[axis] >= 0 and ns != shape[axis])):
        size = shape[axis] if rank else 1
        problems.append(("quantization", f"{ns} scales for dimension {axis} of size {size} (expected 1 or {size})"))
    if nz != ns:
        problems.append(("quantization", f"{ns} scales but {nz} zero points"))
    bad = ~(np.isfinite(scales) & (scales > 0))
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        problems.append(("quantization", f"{int(bad.sum())} scale(s) not finite and > 0 (scale[{first}] = {float(scales[first])})"))
    lo_hi = _ZERO_POINT_RANGE.get(dtype or "")
    if lo_hi and nz and ((zero_points < lo_hi[0]) | (zero_points > lo_hi[1])).any():
        problems.append(("quantization", f"zero points outside the {dtype} range {lo_hi[0]}..{lo_hi[1]}"))
    return problems


def sparsity_problems(sp: Any, shape: list[int], limit: int) -> tuple[int | None, list[Problem]]:
    """Checks sparsity metadata (traversal order, block map, dense sizes, CSR segments and indices).

    Returns:
        (how many values the metadata says the buffer stores, or None if it is invalid; problems).
    """
    order = [int(v) for v in vector(sp, "TraversalOrder", 4, limit)]
    block_map = [int(v) for v in vector(sp, "BlockMap", 4, limit)]
    rank, n = len(shape), len(order)
    problems: list[str] = []
    if sorted(order) != list(range(n)) or n == 0:
        problems.append(f"traversal order {order[:8]} is not a permutation of 0..{max(n - 1, 0)}")
    if n != rank + len(block_map):
        problems.append(f"traversal order has {n} dimensions, expected {rank} + {len(block_map)} block dimension(s)")
    if len(set(block_map)) != len(block_map) or any(not 0 <= b < rank for b in block_map):
        problems.append(f"block map {block_map[:8]} names dimensions outside 0..{rank - 1}")
    n_meta = sp.DimMetadataLength()
    if n_meta < 0 or n_meta * 4 > limit:
        raise ValueError(f"DimMetadata claims {n_meta} entries, more than the file holds")
    if n_meta != n:
        problems.append(f"{n_meta} dimension metadata entries for {n} traversed dimensions")
    if any(d < 0 for d in shape):
        problems.append(f"a sparse tensor needs a known shape, got {shape}")
    if problems:
        return None, [("sparsity", "; ".join(problems))]
    metas = [sp.DimMetadata(k) for k in range(n)]
    block_size: dict[int, int] = {}
    for k, b in enumerate(block_map):
        meta = metas[order.index(rank + k)]
        if int(meta.Format()) != 0 or int(meta.DenseSize()) <= 0 or shape[b] % int(meta.DenseSize()):
            return None, [("sparsity", f"block dimension {k} must be dense with a size dividing {shape[b]}")]
        block_size[b] = int(meta.DenseSize())
    count = 1
    for k, meta in enumerate(metas):
        d = order[k]
        size = shape[d] // block_size.get(d, 1) if d < rank else block_size[block_map[d - rank]]
        fmt = int(meta.Format())
        if fmt == 0:
            if int(meta.DenseSize()) != size:
                return None, [("sparsity", f"dense dimension {d} has size {int(meta.DenseSize())}, the shape says {size}")]
            count *= size
        elif fmt == 1:
            segments = _index_vector(meta, "ArraySegments", limit)
            indices = _index_vector(meta, "ArrayIndices", limit)
            if segments is None or indices is None:
                return None, [("sparsity", f"sparse dimension {d} lacks valid segment/index vectors")]
            if segments.size != count + 1 or segments[0] != 0 or (np.diff(segments) < 0).any() or int(segments[-1]) != indices.size:
                return None, [("sparsity", f"sparse dimension {d}: segments must rise from 0 to the {indices.size} indices, "
                                           f"{count + 1} of them")]
            if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= size):
                return None, [("sparsity", f"sparse dimension {d}: indices outside 0..{size - 1}")]
            count = int(indices.size)
        else:
            return None, [("enum", f"dimension metadata format {fmt} is not known")]
    return count, []


def _index_vector(meta: Any, field: str, limit: int) -> np.ndarray | None:
    """A sparse dimension's segment or index vector (any of the three integer widths), or None."""
    kind = _enums()[1].get(int(getattr(meta, field + "Type")()))
    table = getattr(meta, field)()
    if kind not in _INDEX_ITEMSIZE or table is None:
        return None
    vec = getattr(schema_module(), kind)()
    vec.Init(table.Bytes, table.Pos)
    return vector(vec, "Values", _INDEX_ITEMSIZE[kind], limit).astype(np.int64)
