"""Structural verification of a ``.tflite`` file, in pure Python, before any native code sees it.

:mod:`edgekit.core.tflite_file` makes sure a flatbuffer can be *read* (offsets and vector lengths
inside the file). This module checks that what it says is *consistent*, the way the LiteRT
interpreter assumes it is:

- a known schema version (3) and known enum values: tensor types, builtin operator codes,
  options types, fused activations, paddings, quantization details, sparse index types;
- every buffer reference in range, buffer 0 empty, and each constant tensor's buffer exactly
  as large as its shape and dtype need (a sparse tensor: as large as its sparsity metadata
  says, after checking that metadata: traversal order, block map, dense sizes, CSR segments
  and indices);
- quantization: scale and zero-point counts equal, one scale per slice of the quantized
  dimension (which must be in range), scales finite and > 0, zero points within the dtype;
- operators: opcode and tensor indices in range, the options table the operator's own
  (a CONV_2D carrying Pool2DOptions is reported);
- subgraphs: every index an operator names (WHILE cond/body, IF then/else, CALL_ONCE init,
  StableHLO regions) in range; no subgraph calls itself or the main graph, and no cycles;
- subgraph inputs/outputs, signature tensors and metadata buffers in range.

All problems are collected (up to :data:`MAX_VIOLATIONS`; beyond that only counted) into a
frozen :class:`VerifyResult`. The work is linear in the file: vectors are checked with numpy.

Example:
    >>> result = verify_tflite("model.tflite")  # doctest: +SKIP
    >>> result.ok, [str(v) for v in result.violations][:1]  # doctest: +SKIP
    (False, ["subgraph 0 tensor 1 'conv1/filter': buffer 1 holds 576 bytes, shape [16, 3, 3, 1048576] FLOAT32 needs 603979776"])
    >>> info = read_verified_tflite("model.tflite")  # raises ModelError (exit 3)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

import numpy as np

from edgekit.core.errors import ModelError
from edgekit.core.fsutil import read_regular_bytes, require_regular
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.core.tflite_tensor_checks import (
    Problem,
    buffer_size_problem,
    enum_names,
    quantization_problems,
    schema_module,
    sparsity_problems,
    vector,
)

SCHEMA_VERSION = 3  # TFLITE_SCHEMA_VERSION: the only version the LiteRT interpreter loads
MAX_VIOLATIONS = 10_000  # listed; further ones are counted in VerifyResult.omitted
_MAX_FILE = 2**31 - 1
_READ_ERRORS = (struct.error, IndexError, ValueError, TypeError, OverflowError, UnicodeDecodeError, AttributeError)

#: operators whose options table is not named after them (the rest: CONV_2D -> Conv2DOptions)
_OPTIONS_BY_OP = {
    "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions", "L2_POOL_2D": "Pool2DOptions",
    "L2_NORMALIZATION": "L2NormOptions", "UNIDIRECTIONAL_SEQUENCE_RNN": "SequenceRNNOptions",
    "MEAN": "ReducerOptions", "SUM": "ReducerOptions", "REDUCE_PROD": "ReducerOptions", "REDUCE_MAX": "ReducerOptions",
    "REDUCE_MIN": "ReducerOptions", "REDUCE_ANY": "ReducerOptions", "REDUCE_ALL": "ReducerOptions",
    "MAXIMUM": "MaximumMinimumOptions", "MINIMUM": "MaximumMinimumOptions", "CONV_3D_TRANSPOSE": "Conv3DOptions",
    "RANDOM_STANDARD_NORMAL": "RandomOptions", "RANDOM_UNIFORM": "RandomOptions", "MULTINOMIAL": "RandomOptions",
}
#: operators that run other subgraphs and read their indices from their options table
_CONTROL_FLOW = {"WHILE": "WhileOptions", "IF": "IfOptions", "CALL_ONCE": "CallOnceOptions", "CALL": "CallOptions"}


@dataclass(frozen=True)
class Violation:
    """One structural problem, with where it is (subgraph, tensor, operator indices when they apply).

    ``check`` is one of: ``structure``, ``schema_version``, ``enum``, ``buffer``, ``buffer_size``,
    ``quantization``, ``sparsity``, ``tensor_index``, ``options``, ``subgraph``, ``signature``.
    """

    check: str
    message: str
    subgraph: int | None = None
    tensor: int | None = None
    tensor_name: str | None = None
    operator: int | None = None
    op: str | None = None

    def where(self) -> str:
        """``subgraph 0 tensor 1 'conv1/filter'``, ``subgraph 0 operator 3 (CONV_2D)`` or ``model``."""
        parts = []
        if self.subgraph is not None:
            parts.append(f"subgraph {self.subgraph}")
        if self.tensor is not None:
            parts.append(f"tensor {self.tensor}" + (f" {self.tensor_name!r}" if self.tensor_name else ""))
        if self.operator is not None:
            parts.append(f"operator {self.operator}" + (f" ({self.op})" if self.op else ""))
        return " ".join(parts) or "model"

    def __str__(self) -> str:
        return f"{self.where()}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, ``None`` ones left out."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of :func:`verify_tflite_bytes`: counts of what was checked and every violation."""

    source: str
    file_bytes: int
    schema_version: int | None
    subgraphs: int
    tensors: int
    operators: int
    violations: tuple[Violation, ...]
    omitted: int = 0  # violations beyond MAX_VIOLATIONS, counted but not listed

    @property
    def ok(self) -> bool:
        """True when no violation was found."""
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``violations`` as dicts)."""
        return {"source": self.source, "file_bytes": self.file_bytes, "schema_version": self.schema_version,
                "subgraphs": self.subgraphs, "tensors": self.tensors, "operators": self.operators, "ok": self.ok,
                "violation_count": len(self.violations) + self.omitted,
                "violations": [v.to_dict() for v in self.violations]}

    def error(self, shown: int = 3) -> ModelError:
        """A :class:`ModelError` naming the first ``shown`` violations."""
        total = len(self.violations) + self.omitted
        first = "; ".join(str(v) for v in self.violations[:shown])
        more = f" (and {total - shown} more)" if total > shown else ""
        return ModelError(f"{self.source} is not a valid TFLite model: {total} structural problem(s): {first}{more}",
                          hint="the file is corrupt or was edited after conversion; re-export it from the original model")

    def raise_if_invalid(self, shown: int = 3) -> VerifyResult:
        """Raises :meth:`error` if there is any violation; returns ``self`` otherwise."""
        if self.violations:
            raise self.error(shown)
        return self


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------


def verify_tflite(path: str | os.PathLike[str]) -> VerifyResult:
    """Reads ``path`` (a regular file up to 2 GiB) and verifies it; see :func:`verify_tflite_bytes`.

    Raises:
        InputError: the path is missing or not a regular file.
        ModelError: the file is larger than 2 GiB.
    """
    return verify_tflite_bytes(_read(path), str(path))


def read_verified_tflite(path: str | os.PathLike[str]) -> TfliteInfo:
    """:func:`~edgekit.core.tflite_file.read_tflite` that first verifies the structure.

    Reads the file once. This is what ``inspect``, ``check``, ``validate`` and ``benchmark`` call
    before anything else.

    Raises:
        InputError: the path is missing or not a regular file (a FIFO, a device), refused without
            a blocking open.
        ModelError: the file is not a TFLite model or has structural violations (the first few named).
    """
    buf = _read(path)
    verify_tflite_bytes(buf, str(path)).raise_if_invalid()
    return parse_tflite_bytes(buf, str(path))


def _read(path: str | os.PathLike[str]) -> bytes:
    p = require_regular(path, "model")
    if p.stat().st_size > _MAX_FILE:
        raise ModelError(f"{p} is larger than 2 GiB", hint="edgekit reads single-file TFLite models up to 2 GiB")
    return read_regular_bytes(p, "model")


def require_valid_tflite(data: bytes, name: str = "<bytes>") -> VerifyResult:
    """Verifies flatbuffer bytes and raises :class:`ModelError` (exit code 3) on any violation."""
    return verify_tflite_bytes(data, name).raise_if_invalid()


def verify_tflite_bytes(buf: bytes, name: str = "<bytes>") -> VerifyResult:
    """Checks the structure of a TFLite flatbuffer and lists every violation.

    Args:
        buf: the file's bytes.
        name: how messages name the file.

    Returns:
        A :class:`VerifyResult`; ``ok`` is True when nothing was found.
    """
    v = _Verifier(bytes(buf), name)
    v.run()
    return VerifyResult(source=name, file_bytes=len(buf), schema_version=v.version, subgraphs=v.n_subgraphs,
                        tensors=v.n_tensors, operators=v.n_operators, violations=tuple(v.found), omitted=v.omitted)


# ------------------------------------------------------------------------------------------------
# Schema tables
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tables:
    types: dict[int, str]
    ops: dict[int, str]
    options: dict[int, str]
    options2: dict[int, str]
    activations: dict[int, str]
    paddings: dict[int, str]
    expected: dict[int, tuple[int, int] | None]  # builtin code -> (1 or 2: which union, options code)
    subgraph_fields: dict[str, tuple[tuple[str, bool], ...]]  # options class -> ((method, is_vector), ...)


@cache
def _tables() -> _Tables:
    schema = schema_module()
    ops, opt1, opt2 = enum_names(schema.BuiltinOperator), enum_names(schema.BuiltinOptions), enum_names(schema.BuiltinOptions2)

    def key(text: str) -> str:
        return text.removesuffix("Options").replace("_", "").lower()

    by_key = {key(n): (2, c) for c, n in opt2.items() if c} | {key(n): (1, c) for c, n in opt1.items() if c}
    opt1_code = {n: c for c, n in opt1.items()}
    expected: dict[int, tuple[int, int] | None] = {}
    for code, op in ops.items():
        special = _OPTIONS_BY_OP.get(op)
        expected[code] = (1, opt1_code[special]) if special in opt1_code else by_key.get(key(op))
    subgraph_fields: dict[str, tuple[tuple[str, bool], ...]] = {}
    for cls_name in set(opt1.values()) | set(opt2.values()):
        cls = getattr(schema, cls_name, None)
        if cls is None:
            continue
        methods = tuple((m, hasattr(cls, m + "AsNumpy")) for m in sorted(dir(cls))
                        if "Subgraph" in m and not m.endswith(("Length", "AsNumpy", "IsNone")))
        if methods:
            subgraph_fields[cls_name] = methods
    return _Tables(types=enum_names(schema.TensorType), ops=ops, options=opt1, options2=opt2,
                   activations=enum_names(schema.ActivationFunctionType), paddings=enum_names(schema.Padding),
                   expected=expected, subgraph_fields=subgraph_fields)


# ------------------------------------------------------------------------------------------------
# The walk
# ------------------------------------------------------------------------------------------------


class _Stop(Exception):
    """The structure is too broken to go on (no root table)."""


class _Verifier:
    def __init__(self, buf: bytes, name: str) -> None:
        self.buf = buf
        self.name = name
        self.found: list[Violation] = []
        self.omitted = 0
        self.version: int | None = None
        self.n_subgraphs = self.n_tensors = self.n_operators = 0
        self.t = _tables()
        self.schema = schema_module()

    # --- helpers ---------------------------------------------------------------------------------

    def add(self, check: str, message: str, **where: Any) -> None:
        if len(self.found) < MAX_VIOLATIONS:
            self.found.append(Violation(check, message, **where))
        else:
            self.omitted += 1

    def add_all(self, problems: Sequence[Problem | None], where: dict[str, Any]) -> None:
        for problem in problems:
            if problem is not None:
                self.add(problem[0], problem[1], **where)

    def vec(self, table: Any, field: str, itemsize: int) -> np.ndarray:
        """A vector field as a numpy array (empty when absent), its length checked against the file."""
        return vector(table, field, itemsize, len(self.buf))

    def length(self, table: Any, field: str) -> int:
        n = getattr(table, field + "Length")()
        if n < 0 or n * 4 > len(self.buf):
            raise ValueError(f"{field} claims {n} entries, more than the file holds")
        return n

    # --- model -----------------------------------------------------------------------------------

    def run(self) -> None:
        if len(self.buf) < 16 or self.buf[4:8] != b"TFL3":
            self.add("structure", "not a TFLite flatbuffer (no 'TFL3' file identifier)")
            return
        try:
            self.model()
        except _Stop:
            pass
        except _READ_ERRORS as exc:
            self.add("structure", f"unreadable model table ({type(exc).__name__}: {exc})")

    def model(self) -> None:
        root = struct.unpack_from("<I", self.buf, 0)[0]
        if not 8 <= root < len(self.buf):
            self.add("structure", f"the root table offset {root} points outside the file")
            raise _Stop
        m = self.schema.Model.GetRootAs(self.buf, 0)
        self.version = int(m.Version())
        if self.version != SCHEMA_VERSION:
            self.add("schema_version", f"schema version {self.version}; the LiteRT runtime reads version {SCHEMA_VERSION}")
        self.codes = self.operator_codes(m)
        self.buffer_bytes = self.buffers(m)
        self.external_ids = self.external_buffers(m)
        n_sub = self.length(m, "Subgraphs")
        self.n_subgraphs = n_sub
        if n_sub == 0:
            self.add("subgraph", "the model has no subgraph")
            return
        self.tensor_counts: list[int] = []
        self.calls: dict[int, list[tuple[int, int, str]]] = {}  # subgraph -> [(target, operator, op)]
        subgraphs = []
        for s in range(n_sub):
            try:
                sub = m.Subgraphs(s)
                subgraphs.append(sub)
                self.tensor_counts.append(self.length(sub, "Tensors"))
            except _READ_ERRORS as exc:
                subgraphs.append(None)
                self.tensor_counts.append(0)
                self.add("structure", f"unreadable subgraph table ({type(exc).__name__})", subgraph=s)
        for s, sub in enumerate(subgraphs):
            if sub is not None:
                self.subgraph(sub, s)
        self.call_graph(n_sub)
        self.signatures(m, n_sub)
        self.metadata(m)

    def operator_codes(self, m: Any) -> list[tuple[str, int] | None]:
        codes: list[tuple[str, int] | None] = []
        for i in range(self.length(m, "OperatorCodes")):
            try:
                code = m.OperatorCodes(i)
                deprecated, builtin = int(code.DeprecatedBuiltinCode()), int(code.BuiltinCode())
                resolved = max(deprecated, builtin)
                name = self.t.ops.get(resolved)
                if name is None:
                    self.add("enum", f"operator code {i} has builtin code {resolved}, which is not a known operator")
                elif not 0 <= deprecated <= 127:
                    self.add("enum", f"operator code {i} ({name}) has deprecated builtin code {deprecated}, outside 0..127")
                elif name == "CUSTOM" and not code.CustomCode():
                    self.add("enum", f"operator code {i} is CUSTOM without a custom code name")
                codes.append((name, resolved) if name is not None else None)
            except _READ_ERRORS as exc:
                self.add("structure", f"operator code {i} is unreadable ({type(exc).__name__})")
                codes.append(None)
        return codes

    def buffers(self, m: Any) -> list[int | None]:
        sizes: list[int | None] = []
        for i in range(self.length(m, "Buffers")):
            try:
                b = m.Buffers(i)
                n = b.DataLength()
                if n:
                    if n < 0 or n > len(self.buf):
                        raise ValueError(f"data claims {n} bytes")
                    sizes.append(n)
                else:
                    offset, size = int(b.Offset()), int(b.Size())
                    if offset > 1 and offset + size > len(self.buf):
                        self.add("buffer", f"buffer {i} points at bytes {offset}..{offset + size}, past the end of the file ({len(self.buf)} bytes)")
                        sizes.append(None)
                        continue
                    sizes.append(size if offset > 1 else 0)
            except _READ_ERRORS as exc:
                self.add("structure", f"buffer {i} is unreadable ({type(exc).__name__})")
                sizes.append(None)
        if sizes and sizes[0]:
            self.add("buffer", f"buffer 0 holds {sizes[0]} bytes; it must be the empty sentinel")
        return sizes

    def external_buffers(self, m: Any) -> set[int]:
        return {int(m.ExternalBuffers(i).Id()) for i in range(self.length(m, "ExternalBuffers"))}

    # --- subgraphs -------------------------------------------------------------------------------

    def subgraph(self, sub: Any, s: int) -> None:
        n_t = self.tensor_counts[s]
        self.constants: set[int] = set()  # tensors of this subgraph with constant data (read-only at run time)
        names: list[str | None] = []
        for i in range(n_t):
            self.n_tensors += 1
            try:
                names.append(self.tensor(sub.Tensors(i), s, i))
            except _READ_ERRORS as exc:
                names.append(None)
                self.add("structure", f"unreadable tensor table ({type(exc).__name__})", subgraph=s, tensor=i)
        try:
            for field in ("Inputs", "Outputs"):
                idx = self.vec(sub, field, 4)
                bad = idx[(idx < 0) | (idx >= n_t)]
                if bad.size:
                    self.add("tensor_index", f"subgraph {field.lower()} name tensor {int(bad[0])}, but there are {n_t} tensors", subgraph=s)
                if s == 0 and not idx.size:
                    self.add("tensor_index", f"the main subgraph declares no {field.lower()}", subgraph=s)
                if field == "Inputs":
                    for i in sorted(self.constants.intersection(int(v) for v in idx)):
                        self.add("buffer", "is a subgraph input but holds constant data (read-only; the caller writes into it)",
                                 subgraph=s, tensor=i, tensor_name=names[i])
            n_ops = self.length(sub, "Operators")
        except _READ_ERRORS as exc:
            self.add("structure", f"unreadable subgraph ({type(exc).__name__})", subgraph=s)
            return
        for o in range(n_ops):
            self.n_operators += 1
            try:
                self.operator(sub.Operators(o), s, o, n_t)
            except _READ_ERRORS as exc:
                self.add("structure", f"unreadable operator table ({type(exc).__name__})", subgraph=s, operator=o)

    def tensor(self, ten: Any, s: int, i: int) -> str | None:
        raw = ten.Name()
        name = raw.decode("utf-8", "replace")[:200] if raw else None
        where = {"subgraph": s, "tensor": i, "tensor_name": name}
        dtype = self.t.types.get(int(ten.Type()))
        if dtype is None:
            self.add("enum", f"tensor type {int(ten.Type())} is not a known TensorType", **where)
        shape = [int(d) for d in self.vec(ten, "Shape", 4)]
        bidx = int(ten.Buffer())
        n_buf = len(self.buffer_bytes)
        data: int | None = 0
        if not 0 <= bidx < max(n_buf, 1):
            self.add("buffer", f"refers to buffer {bidx}, but there are {n_buf}", **where)
            data = None
        elif n_buf:
            data = self.buffer_bytes[bidx]
        ext = int(ten.ExternalBuffer())
        if ext and ext not in self.external_ids:
            self.add("buffer", f"refers to external buffer {ext}, which the model does not declare", **where)
        if any(d < -1 for d in shape):
            self.add("buffer_size", f"shape {shape} has a negative dimension", **where)
        sparsity = ten.Sparsity()
        values: int | None = None
        if sparsity is not None:
            values, problems = sparsity_problems(sparsity, shape, len(self.buf))
            self.add_all(problems, where)
            if not data:
                self.add("sparsity", "has sparsity metadata but no constant data", **where)
        if data:
            self.constants.add(i)
            if ten.IsVariable():
                self.add("buffer", f"is a variable tensor with constant buffer {bidx} (the runtime refuses it)", **where)
        if data and dtype is not None:
            self.add_all([buffer_size_problem(dtype, shape, data, values, sparsity is not None, bidx)], where)
        q = ten.Quantization()
        if q is not None:
            self.add_all(quantization_problems(q, dtype, shape, len(self.buf)), where)
        return name

    # --- operators -------------------------------------------------------------------------------

    def operator(self, op: Any, s: int, o: int, n_t: int) -> None:
        ci = int(op.OpcodeIndex())
        code = self.codes[ci] if 0 <= ci < len(self.codes) else None
        name = code[0] if code else None
        where = {"subgraph": s, "operator": o, "op": name}
        if not 0 <= ci < len(self.codes):
            self.add("tensor_index", f"uses operator code {ci}, but there are {len(self.codes)}", **where)
        for field, optional in (("Inputs", True), ("Outputs", False), ("Intermediates", False)):
            idx = self.vec(op, field, 4)
            bad = idx[((idx < 0) & ~((idx == -1) & optional)) | (idx >= n_t)]
            if bad.size:
                self.add("tensor_index", f"{field.lower()} name tensor {int(bad[0])}, but there are {n_t} tensors", **where)
            elif field == "Outputs":
                written = sorted(self.constants.intersection(int(v) for v in idx))
                if written:
                    self.add("buffer", f"writes its output into tensor {written[0]}, which holds constant (read-only) data", **where)
        if code is not None:
            self.options(op, code[0], code[1], where)

    def options(self, op: Any, name: str, code: int, where: dict[str, Any]) -> None:
        t1, t2 = int(op.BuiltinOptionsType()), int(op.BuiltinOptions2Type())
        if t1 not in self.t.options:
            self.add("enum", f"options type {t1} is not a known BuiltinOptions", **where)
            return
        if t2 not in self.t.options2:
            self.add("enum", f"options type {t2} is not a known BuiltinOptions2", **where)
            return
        expected = self.t.expected.get(code)
        exp_name = None if expected is None else (self.t.options if expected[0] == 1 else self.t.options2)[expected[1]]
        for union, actual in ((1, t1), (2, t2)):
            if actual and (expected is None or expected != (union, actual)):
                actual_name = (self.t.options if union == 1 else self.t.options2)[actual]
                self.add("options", f"carries {actual_name}, expected {exp_name or 'no options table'}", **where)
                return
        if name in _CONTROL_FLOW and (t1 == 0 or op.BuiltinOptions() is None):
            self.add("subgraph", f"has no {_CONTROL_FLOW[name]}: its subgraph indices default to 0, the main graph", **where)
            self.calls.setdefault(where["subgraph"], []).append((0, where["operator"], name))
            return
        actual = t1 or t2
        if not actual:
            return
        table = op.BuiltinOptions() if t1 else op.BuiltinOptions2()
        if table is None:
            return
        cls_name = (self.t.options if t1 else self.t.options2)[actual]
        opts = getattr(self.schema, cls_name)()
        opts.Init(table.Bytes, table.Pos)
        if hasattr(opts, "FusedActivationFunction") and int(opts.FusedActivationFunction()) not in self.t.activations:
            self.add("enum", f"fused activation {int(opts.FusedActivationFunction())} is not known", **where)
        if hasattr(opts, "Padding") and int(opts.Padding()) not in self.t.paddings:
            self.add("enum", f"padding {int(opts.Padding())} is not known", **where)
        for method, is_vector in self.t.subgraph_fields.get(cls_name, ()):
            targets = [int(v) for v in self.vec(opts, method, 4)] if is_vector else [int(getattr(opts, method)())]
            for target in targets:
                self.calls.setdefault(where["subgraph"], []).append((target, where["operator"], name))

    # --- whole model -----------------------------------------------------------------------------

    def call_graph(self, n_sub: int) -> None:
        edges: dict[int, list[tuple[int, int, str]]] = {}
        for s, calls in self.calls.items():
            for target, o, name in calls:
                where = {"subgraph": s, "operator": o, "op": name}
                if not 0 <= target < n_sub:
                    self.add("subgraph", f"names subgraph {target}, but there are {n_sub}", **where)
                elif target == 0:
                    self.add("subgraph", "calls the main graph (subgraph 0): unbounded recursion", **where)
                elif target == s:
                    self.add("subgraph", f"calls its own subgraph {s}: unbounded recursion", **where)
                else:
                    edges.setdefault(s, []).append((target, o, name))
        state = [0] * n_sub  # 0 new, 1 on the stack, 2 done
        reported: set[tuple[int, int]] = set()
        for start in range(n_sub):
            if state[start]:
                continue
            stack = [(start, iter(edges.get(start, ())))]
            state[start] = 1
            while stack:
                node, it = stack[-1]
                nxt = next(it, None)
                if nxt is None:
                    state[node] = 2
                    stack.pop()
                    continue
                target, o, name = nxt
                if state[target] == 1 and (node, o) not in reported:
                    reported.add((node, o))
                    self.add("subgraph", f"calls subgraph {target}, which calls back into subgraph {node}: a cycle",
                             subgraph=node, operator=o, op=name)
                elif state[target] == 0:
                    state[target] = 1
                    stack.append((target, iter(edges.get(target, ()))))

    def signatures(self, m: Any, n_sub: int) -> None:
        for i in range(self.length(m, "SignatureDefs")):
            try:
                sig = m.SignatureDefs(i)
                s = int(sig.SubgraphIndex())
                if not 0 <= s < n_sub:
                    self.add("signature", f"signature {i} names subgraph {s}, but there are {n_sub}")
                    continue
                for field in ("Inputs", "Outputs"):
                    for k in range(self.length(sig, field)):
                        idx = int(getattr(sig, field)(k).TensorIndex())
                        if not 0 <= idx < self.tensor_counts[s]:
                            self.add("signature", f"signature {i} {field.lower()} name tensor {idx}, but subgraph {s} has {self.tensor_counts[s]}")
            except _READ_ERRORS as exc:
                self.add("structure", f"signature {i} is unreadable ({type(exc).__name__})")

    def metadata(self, m: Any) -> None:
        n_buf = len(self.buffer_bytes)
        for i in range(self.length(m, "Metadata")):
            b = int(m.Metadata(i).Buffer())
            if not 0 <= b < n_buf:
                self.add("buffer", f"metadata {i} refers to buffer {b}, but there are {n_buf}")
        mb = self.vec(m, "MetadataBuffer", 4)
        if mb.size and ((mb < 0) | (mb >= n_buf)).any():
            self.add("buffer", f"metadata_buffer names buffers outside 0..{n_buf - 1}")
