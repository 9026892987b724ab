"""Reads a ``.tflite`` flatbuffer in pure Python, checking it before native code sees it.

The LiteRT runtime is C++ and can crash on a malformed file. Everything edgekit hands to the
runtime is first parsed here: the file identifier, every table and vector offset, tensor and
buffer indices are bounds-checked, so a truncated or mutated file becomes a one-line
:class:`~edgekit.core.errors.ModelError` instead of a segfault. The result also powers ``inspect``.

Example:
    >>> info = read_tflite("model.tflite")  # doctest: +SKIP
    >>> info.op_histogram()["CONV_2D"]  # doctest: +SKIP
    2
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core.datatypes import QuantParams, TensorSpec
from edgekit.core.errors import ModelError

_MAX_FILE = 2**31 - 1  # flatbuffers are limited to 2 GiB; larger models use external buffers


def _schema():
    from ai_edge_litert import schema_py_generated as schema  # pure Python, no native code

    return schema


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


_DTYPE_BYTES = {
    "FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
    "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8, "UINT32": 4,
    "UINT16": 2, "INT4": 0.5, "BFLOAT16": 2, "INT2": 0.25, "UINT4": 0.5,
}


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph."""

    index: int
    name: str
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: str
    buffer: int
    constant_bytes: int
    quantization: QuantParams | None

    @property
    def is_constant(self) -> bool:
        return self.constant_bytes > 0

    @property
    def elements(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1


@dataclass(frozen=True)
class OperatorInfo:
    """One operator (node) of a subgraph."""

    index: int
    subgraph: int
    op: str
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    fused_activation: str | None = None


@dataclass(frozen=True)
class TfliteInfo:
    """What a ``.tflite`` file contains, read without running it."""

    path: str
    file_bytes: int
    schema_version: int
    description: str
    subgraph_count: int
    tensors: tuple[TensorInfo, ...]
    operators: tuple[OperatorInfo, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    metadata: dict[str, bytes] = field(default_factory=dict)
    signatures: tuple[str, ...] = ()
    #: the first signature's (name, tensor index) pairs: the model's own input/output names
    signature_inputs: tuple[tuple[str, int], ...] = ()
    signature_outputs: tuple[tuple[str, int], ...] = ()

    def op_histogram(self) -> dict[str, int]:
        """Operator name -> number of nodes, most frequent first."""
        return dict(Counter(op.op for op in self.operators).most_common())

    def _weight_tensors(self) -> list[TensorInfo]:
        """Constant tensors holding weights, one per buffer: float or quantized data, not the
        unquantized int32/int64/bool/string constants that carry shapes, axes and indices."""
        seen: set[int] = set()
        out = []
        for t in self.tensors:
            if not t.is_constant or t.buffer in seen:
                continue
            if t.dtype in ("INT32", "INT64", "STRING", "BOOL") and t.quantization is None:
                continue
            seen.add(t.buffer)
            out.append(t)
        return out

    @property
    def parameter_count(self) -> int:
        """Elements of the weight tensors (main subgraph; a shared buffer counts once)."""
        return sum(t.elements for t in self._weight_tensors())

    def size_breakdown(self) -> dict[str, int]:
        """Bytes of constant data per dtype, metadata and the rest (graph structure)."""
        out: dict[str, int] = {}
        seen: set[int] = set()
        for t in self.tensors:
            if t.is_constant and t.buffer not in seen:
                seen.add(t.buffer)
                key = f"weights_{t.dtype.lower()}"
                out[key] = out.get(key, 0) + t.constant_bytes
        out["metadata"] = sum(len(v) for v in self.metadata.values())
        out["graph_and_overhead"] = max(0, self.file_bytes - sum(out.values()))
        return out

    def weight_dtypes(self) -> dict[str, int]:
        """dtype -> elements of the weight tensors (see :attr:`parameter_count`)."""
        counts: Counter[str] = Counter()
        for t in self._weight_tensors():
            counts[t.dtype] += t.elements
        return dict(counts)


class _Reader:
    """Bounds-checked access to flatbuffer tables: every vector length is checked against the file."""

    def __init__(self, buf: bytes, path: str) -> None:
        self.buf = buf
        self.path = path

    def fail(self, what: str) -> ModelError:
        return ModelError(
            f"{self.path} is not a valid TFLite model: {what}",
            hint="the file is corrupt or truncated; re-export it from the original model",
        )

    def length(self, n: int, unit: int, what: str) -> int:
        if n < 0 or n * unit > len(self.buf):
            raise self.fail(f"{what} claims {n} entries, more than the file can hold")
        return n


def read_tflite(path: str | os.PathLike[str]) -> TfliteInfo:
    """Parses and bounds-checks a ``.tflite`` file.

    Args:
        path: the file.

    Returns:
        A :class:`TfliteInfo` describing tensors, operators, I/O and metadata.

    Raises:
        ModelError: the file is not a TFLite flatbuffer or is malformed.
    """
    p = Path(path)
    size = p.stat().st_size
    if size > _MAX_FILE:
        raise ModelError(f"{p} is larger than 2 GiB", hint="edgekit reads single-file TFLite models up to 2 GiB")
    buf = p.read_bytes()
    return parse_tflite_bytes(buf, str(p))


def parse_tflite_bytes(buf: bytes, name: str = "<bytes>") -> TfliteInfo:
    """Parses TFLite flatbuffer bytes; see :func:`read_tflite`."""
    reader = _Reader(buf, name)
    if len(buf) < 16 or buf[4:8] != b"TFL3":
        raise ModelError(
            f"{name} is not a TFLite model (no 'TFL3' file identifier)",
            hint="give a .tflite file produced by the TFLite/LiteRT converter",
        )
    try:
        return _parse(buf, reader)
    except ModelError:
        raise
    except (struct.error, IndexError, ValueError, TypeError, OverflowError, UnicodeDecodeError, MemoryError) as exc:
        raise reader.fail(f"unreadable structure ({type(exc).__name__})") from None


def _check_offset(reader: _Reader, off: int, what: str) -> None:
    if not 0 <= off < len(reader.buf):
        raise reader.fail(f"{what} points outside the file")


def _parse(buf: bytes, reader: _Reader) -> TfliteInfo:
    schema = _schema()
    root = struct.unpack_from("<I", buf, 0)[0]
    _check_offset(reader, root, "root table")
    model = schema.Model.GetRootAs(buf, 0)
    type_names = _enum_names(schema.TensorType)
    op_names = _enum_names(schema.BuiltinOperator)
    act_names = _enum_names(schema.ActivationFunctionType)

    n_codes = reader.length(model.OperatorCodesLength(), 4, "operator code table")
    codes: list[tuple[str, int]] = []
    for i in range(n_codes):
        code = model.OperatorCodes(i)
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        name = op_names.get(builtin, f"UNKNOWN_{builtin}")
        if name == "CUSTOM":
            custom = code.CustomCode()
            custom_name = custom.decode("utf-8", "replace") if custom else "?"
            name = f"FLEX:{custom_name[4:]}" if custom_name.startswith("Flex") else f"CUSTOM:{custom_name}"
        codes.append((name, int(code.Version())))

    n_buffers = reader.length(model.BuffersLength(), 4, "buffer table")
    buffer_bytes: list[int] = []
    for i in range(n_buffers):
        b = model.Buffers(i)
        data_len = b.DataLength()
        if data_len:
            reader.length(data_len, 1, f"buffer {i}")
            buffer_bytes.append(data_len)
        else:
            offset, bsize = int(b.Offset()), int(b.Size())
            if offset > 1 and (offset + bsize > len(buf)):
                raise reader.fail(f"buffer {i} points past the end of the file")
            buffer_bytes.append(bsize if offset > 1 else 0)

    n_sub = reader.length(model.SubgraphsLength(), 4, "subgraph table")
    if n_sub == 0:
        raise reader.fail("it has no subgraph")
    operators: list[OperatorInfo] = []
    tensors: list[TensorInfo] = []
    io_in: list[TensorSpec] = []
    io_out: list[TensorSpec] = []
    for s in range(n_sub):
        sub = model.Subgraphs(s)
        n_t = reader.length(sub.TensorsLength(), 4, f"subgraph {s} tensor table")
        sub_tensors = []
        for t in range(n_t):
            ten = sub.Tensors(t)
            shape = tuple(int(v) for v in ten.ShapeAsNumpy()) if ten.ShapeLength() else ()
            reader.length(len(shape), 4, "tensor shape")
            sig = tuple(int(v) for v in ten.ShapeSignatureAsNumpy()) if ten.ShapeSignatureLength() else shape
            bidx = int(ten.Buffer())
            if not 0 <= bidx < max(n_buffers, 1):
                raise reader.fail(f"tensor {t} refers to buffer {bidx}, but there are {n_buffers}")
            quant = None
            q = ten.Quantization()
            if q is not None and q.ScaleLength() > 0:
                reader.length(q.ScaleLength(), 4, "quantization scales")
                zps = tuple(int(v) for v in q.ZeroPointAsNumpy()) if q.ZeroPointLength() else (0,) * q.ScaleLength()
                quant = QuantParams(
                    scales=tuple(float(v) for v in q.ScaleAsNumpy()),
                    zero_points=zps,
                    axis=int(q.QuantizedDimension()),
                )
            raw_name = ten.Name()
            dtype = type_names.get(int(ten.Type()), f"TYPE_{ten.Type()}")
            sub_tensors.append(
                TensorInfo(
                    index=t,
                    name=raw_name.decode("utf-8", "replace") if raw_name else f"tensor_{t}",
                    shape=shape,
                    shape_signature=sig,
                    dtype=dtype,
                    buffer=bidx,
                    constant_bytes=buffer_bytes[bidx] if n_buffers else 0,
                    quantization=quant,
                )
            )
        n_ops = reader.length(sub.OperatorsLength(), 4, f"subgraph {s} operator table")
        for o in range(n_ops):
            op = sub.Operators(o)
            ci = int(op.OpcodeIndex())
            if not 0 <= ci < n_codes:
                raise reader.fail(f"operator {o} uses opcode {ci}, but there are {n_codes}")
            ins = tuple(int(v) for v in op.InputsAsNumpy()) if op.InputsLength() else ()
            outs = tuple(int(v) for v in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            for idx in ins + outs:
                if idx != -1 and not 0 <= idx < n_t:
                    raise reader.fail(f"operator {o} refers to tensor {idx}, but there are {n_t}")
            operators.append(
                OperatorInfo(
                    index=o, subgraph=s, op=codes[ci][0], version=codes[ci][1],
                    inputs=ins, outputs=outs, fused_activation=_fused_activation(schema, op, act_names),
                )
            )
        if s == 0:
            tensors = sub_tensors
            for vec, dest in ((sub.InputsAsNumpy(), io_in), (sub.OutputsAsNumpy(), io_out)):
                if isinstance(vec, int):  # flatbuffers returns 0 for an absent vector
                    continue
                for idx in vec:
                    idx = int(idx)
                    if not 0 <= idx < n_t:
                        raise reader.fail(f"subgraph input/output refers to tensor {idx}, but there are {n_t}")
                    io_tensor = sub_tensors[idx]
                    shape = io_tensor.shape_signature if io_tensor.shape_signature else io_tensor.shape
                    dest.append(TensorSpec(name=io_tensor.name, shape=shape, dtype=io_tensor.dtype.lower(),
                                           quantization=io_tensor.quantization))
    if not io_in or not io_out:
        raise reader.fail("the main subgraph declares no inputs or no outputs")

    metadata: dict[str, bytes] = {}
    n_meta = reader.length(model.MetadataLength(), 4, "metadata table")
    for i in range(n_meta):
        m = model.Metadata(i)
        bidx = int(m.Buffer())
        if not 0 <= bidx < n_buffers:
            raise reader.fail(f"metadata {i} refers to buffer {bidx}, but there are {n_buffers}")
        raw = model.Buffers(bidx)
        data = bytes(raw.DataAsNumpy().tobytes()) if raw.DataLength() else b""
        if not data and raw.Offset() > 1:
            data = bytes(buf[raw.Offset(): raw.Offset() + raw.Size()])
        key = m.Name().decode("utf-8", "replace") if m.Name() else f"metadata_{i}"
        metadata[key] = data

    signatures = []
    sig_inputs: list[tuple[str, int]] = []
    sig_outputs: list[tuple[str, int]] = []
    for i in range(reader.length(model.SignatureDefsLength(), 4, "signature table")):
        sdef = model.SignatureDefs(i)
        key = sdef.SignatureKey()
        signatures.append(key.decode("utf-8", "replace") if key else f"signature_{i}")
        if i == 0:  # the serving signature: names of the inputs/outputs as the model was written
            for count, get, found in ((sdef.InputsLength(), sdef.Inputs, sig_inputs), (sdef.OutputsLength(), sdef.Outputs, sig_outputs)):
                for j in range(reader.length(count, 4, "signature tensor map")):
                    tmap = get(j)
                    tensor_name = tmap.Name().decode("utf-8", "replace") if tmap.Name() else f"tensor_{j}"
                    found.append((tensor_name, int(tmap.TensorIndex())))

    desc = model.Description()
    return TfliteInfo(
        path=reader.path,
        file_bytes=len(buf),
        schema_version=int(model.Version()),
        description=desc.decode("utf-8", "replace") if desc else "",
        subgraph_count=n_sub,
        tensors=tuple(tensors),
        operators=tuple(operators),
        inputs=tuple(io_in),
        outputs=tuple(io_out),
        metadata=metadata,
        signatures=tuple(signatures),
        signature_inputs=tuple(sig_inputs),
        signature_outputs=tuple(sig_outputs),
    )


def _fused_activation(schema, op, act_names: dict[int, str]) -> str | None:
    """The fused activation of an operator whose options table carries one, else None."""
    table = op.BuiltinOptions()
    if table is None:
        return None
    options_names = _enum_names(schema.BuiltinOptions)
    name = options_names.get(int(op.BuiltinOptionsType()))
    cls = getattr(schema, name, None) if name else None
    if cls is None or not hasattr(cls, "FusedActivationFunction"):
        return None
    opts = cls()
    opts.Init(table.Bytes, table.Pos)
    return act_names.get(int(opts.FusedActivationFunction()), None)
