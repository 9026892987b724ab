"""Structured fuzzing of ``.tflite`` flatbuffers: valid seed models built in code, the structural
defects of issue 18 applied to them, and random field mutations.

Everything here edits a model through the flatbuffers object API of the LiteRT schema
(``ai_edge_litert.schema_py_generated``, pure Python): :func:`unpack` a flatbuffer into a
``ModelT``, change fields, :func:`pack` it back. No TensorFlow is needed, so building a case
costs about a millisecond.

Seeds (each runs in the LiteRT interpreter):

- ``float``: input float32 [1,8,8,1] -> CONV_2D (16x3x3x1 filter, 576 B) -> CONV_2D (8x3x3x16)
  -> MEAN -> FULLY_CONNECTED whose weights come from DENSIFY of a sparse (CSR) constant.
- ``int8``: the same graph with QUANTIZE, per-channel int8 convolutions and DEQUANTIZE.
- ``while``: a WHILE loop (cond subgraph 1, body subgraph 2) counting a float up to a limit;
  ``step=0`` makes it loop forever (a valid model that never ends).

Example:
    >>> model = unpack(seed_model("float"))
    >>> DEFECTS["huge_filter"](model)  # doctest: +SKIP
    >>> bad = pack(model)
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema

OP = schema.BuiltinOperator
TT = schema.TensorType
OPTS = schema.BuiltinOptions

_NP_TYPES = {TT.FLOAT32: np.float32, TT.INT8: np.int8, TT.INT32: np.int32, TT.BOOL: np.bool_}


# ------------------------------------------------------------------------------------------------
# Packing and lookup
# ------------------------------------------------------------------------------------------------


def pack(model: schema.ModelT) -> bytes:
    """Serializes a ``ModelT`` with the ``TFL3`` file identifier."""
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def unpack(data: bytes) -> schema.ModelT:
    """Parses flatbuffer bytes into a mutable ``ModelT``."""
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def tensor_index(model: schema.ModelT, name: str, subgraph: int = 0) -> int:
    """Index of the tensor called ``name`` in ``subgraph``."""
    for i, t in enumerate(model.subgraphs[subgraph].tensors):
        if _name(t.name) == name:
            return i
    raise KeyError(name)


def tensor(model: schema.ModelT, name: str, subgraph: int = 0) -> schema.TensorT:
    """The tensor called ``name`` in ``subgraph``."""
    return model.subgraphs[subgraph].tensors[tensor_index(model, name, subgraph)]


def operator_index(model: schema.ModelT, builtin: int, nth: int = 0, subgraph: int = 0) -> int:
    """Index of the ``nth`` operator with builtin code ``builtin`` in ``subgraph``."""
    seen = 0
    for i, op in enumerate(model.subgraphs[subgraph].operators):
        code = model.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin:
            if seen == nth:
                return i
            seen += 1
    raise KeyError(builtin)


def _name(raw: bytes | str | None) -> str:
    return raw.decode() if isinstance(raw, bytes) else (raw or "")


# ------------------------------------------------------------------------------------------------
# Seed models
# ------------------------------------------------------------------------------------------------


class _Graph:
    """Accumulates buffers, operator codes and tensors of one model while it is built."""

    def __init__(self) -> None:
        self.buffers = [schema.BufferT()]  # buffer 0: the empty sentinel
        self.codes: list[int] = []

    def buffer(self, values: np.ndarray | None) -> int:
        if values is None:
            return 0
        self.buffers.append(schema.BufferT(data=np.frombuffer(np.ascontiguousarray(values).tobytes(), np.uint8)))
        return len(self.buffers) - 1

    def opcode(self, builtin: int) -> int:
        if builtin not in self.codes:
            self.codes.append(builtin)
        return self.codes.index(builtin)

    def model(self, subgraphs: list[schema.SubGraphT]) -> schema.ModelT:
        codes = [schema.OperatorCodeT(deprecatedBuiltinCode=min(c, 127), builtinCode=c, version=1) for c in self.codes]
        main = subgraphs[0]
        signature = schema.SignatureDefT(
            inputs=[schema.TensorMapT(name=_name(main.tensors[i].name), tensorIndex=i) for i in main.inputs],
            outputs=[schema.TensorMapT(name=_name(main.tensors[i].name), tensorIndex=i) for i in main.outputs],
            signatureKey="serving_default", subgraphIndex=0,
        )
        return schema.ModelT(version=3, operatorCodes=codes, subgraphs=subgraphs, description="edgekit fuzz seed",
                             buffers=self.buffers, signatureDefs=[signature])


class _Subgraph:
    def __init__(self, graph: _Graph, name: str) -> None:
        self.graph = graph
        self.sub = schema.SubGraphT(tensors=[], inputs=[], outputs=[], operators=[], name=name)

    def tensor(self, name: str, shape: list[int], dtype: int, values: np.ndarray | None = None, *,
               scales: list[float] | None = None, zero_points: list[int] | None = None, axis: int = 0,
               sparsity: schema.SparsityParametersT | None = None) -> int:
        t = schema.TensorT(shape=list(shape), type=dtype, buffer=self.graph.buffer(values), name=name, sparsity=sparsity)
        if scales is not None:
            t.quantization = schema.QuantizationParametersT(
                scale=[float(s) for s in scales], zeroPoint=list(zero_points or [0] * len(scales)), quantizedDimension=axis)
        self.sub.tensors.append(t)
        return len(self.sub.tensors) - 1

    def op(self, builtin: int, inputs: list[int], outputs: list[int], options_type: int = 0, options=None) -> None:
        self.sub.operators.append(schema.OperatorT(opcodeIndex=self.graph.opcode(builtin), inputs=inputs, outputs=outputs,
                                                   builtinOptionsType=options_type, builtinOptions=options))


def _conv_options(activation: int = 0) -> schema.Conv2DOptionsT:
    return schema.Conv2DOptionsT(padding=schema.Padding.VALID, strideW=1, strideH=1, fusedActivationFunction=activation)


def _csr(dense: np.ndarray) -> tuple[np.ndarray, schema.SparsityParametersT]:
    """The non-zero values (row-major) and CSR sparsity parameters of a 2-D array."""
    rows, cols = dense.shape
    segments, indices, values = [0], [], []
    for r in range(rows):
        nz = np.flatnonzero(dense[r])
        indices.extend(int(c) for c in nz)
        values.extend(dense[r, nz])
        segments.append(len(indices))
    dims = [
        schema.DimensionMetadataT(format=schema.DimensionType.DENSE, denseSize=rows),
        schema.DimensionMetadataT(format=schema.DimensionType.SPARSE_CSR,
                                  arraySegmentsType=schema.SparseIndexVector.Int32Vector, arraySegments=schema.Int32VectorT(values=segments),
                                  arrayIndicesType=schema.SparseIndexVector.Int32Vector, arrayIndices=schema.Int32VectorT(values=indices)),
    ]
    return np.asarray(values, dense.dtype), schema.SparsityParametersT(traversalOrder=[0, 1], dimMetadata=dims)


def _conv_seed(quantized: bool) -> schema.ModelT:
    rng = np.random.default_rng(18)
    g = _Graph()
    s = _Subgraph(g, "main")
    x = s.tensor("input", [1, 8, 8, 1], TT.FLOAT32)
    w1 = rng.normal(0, 0.3, (16, 3, 3, 1)).astype(np.float32)
    b1 = rng.normal(0, 0.1, 16).astype(np.float32)
    w2 = rng.normal(0, 0.1, (8, 3, 3, 16)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 8).astype(np.float32)
    if quantized:
        in_scale, mid_scale, out_scale = 1 / 255, 0.02, 0.02
        xq = s.tensor("input_int8", [1, 8, 8, 1], TT.INT8, scales=[in_scale], zero_points=[-128])
        s.op(OP.QUANTIZE, [x], [xq], OPTS.QuantizeOptions, schema.QuantizeOptionsT())
        layers = []
        for name, w, b, scale_in, scale_out, shape_out in (("conv1", w1, b1, in_scale, mid_scale, [1, 6, 6, 16]),
                                                           ("conv2", w2, b2, mid_scale, out_scale, [1, 4, 4, 8])):
            w_scales = np.abs(w).reshape(len(w), -1).max(axis=1) / 127
            wq = np.clip(np.round(w / w_scales[:, None, None, None]), -127, 127).astype(np.int8)
            b_scales = scale_in * w_scales
            bq = np.round(b / b_scales).astype(np.int32)
            layers.append((name, wq, w_scales, bq, b_scales, scale_out, shape_out))
        prev = xq
        for name, wq, w_scales, bq, b_scales, scale_out, shape_out in layers:
            wt = s.tensor(f"{name}/filter", list(wq.shape), TT.INT8, wq, scales=list(w_scales), axis=0)
            bt = s.tensor(f"{name}/bias", [len(bq)], TT.INT32, bq, scales=list(b_scales), axis=0)
            out = s.tensor(f"{name}/out", shape_out, TT.INT8, scales=[scale_out], zero_points=[-128])
            s.op(OP.CONV_2D, [prev, wt, bt], [out], OPTS.Conv2DOptions, _conv_options(schema.ActivationFunctionType.RELU))
            prev = out
        features = s.tensor("features", [1, 4, 4, 8], TT.FLOAT32)
        s.op(OP.DEQUANTIZE, [prev], [features], OPTS.DequantizeOptions, schema.DequantizeOptionsT())
    else:
        f1 = s.tensor("conv1/filter", [16, 3, 3, 1], TT.FLOAT32, w1)
        c1 = s.tensor("conv1/bias", [16], TT.FLOAT32, b1)
        h1 = s.tensor("conv1/out", [1, 6, 6, 16], TT.FLOAT32)
        s.op(OP.CONV_2D, [x, f1, c1], [h1], OPTS.Conv2DOptions, _conv_options(schema.ActivationFunctionType.RELU))
        f2 = s.tensor("conv2/filter", [8, 3, 3, 16], TT.FLOAT32, w2)
        c2 = s.tensor("conv2/bias", [8], TT.FLOAT32, b2)
        features = s.tensor("features", [1, 4, 4, 8], TT.FLOAT32)
        s.op(OP.CONV_2D, [h1, f2, c2], [features], OPTS.Conv2DOptions, _conv_options())
    axes = s.tensor("mean/axes", [2], TT.INT32, np.array([1, 2], np.int32))
    pooled = s.tensor("pooled", [1, 8], TT.FLOAT32)
    s.op(OP.MEAN, [features, axes], [pooled], OPTS.ReducerOptions, schema.ReducerOptionsT(keepDims=False))
    dense = rng.normal(0, 0.5, (4, 8)).astype(np.float32)
    dense[np.abs(dense) < 0.35] = 0.0
    values, sparsity = _csr(dense)
    sparse_w = s.tensor("fc/weights_sparse", [4, 8], TT.FLOAT32, values, sparsity=sparsity)
    fc_w = s.tensor("fc/weights", [4, 8], TT.FLOAT32)
    s.op(OP.DENSIFY, [sparse_w], [fc_w], OPTS.DensifyOptions, schema.DensifyOptionsT())
    fc_b = s.tensor("fc/bias", [4], TT.FLOAT32, rng.normal(0, 0.1, 4).astype(np.float32))
    out = s.tensor("output", [1, 4], TT.FLOAT32)
    s.op(OP.FULLY_CONNECTED, [pooled, fc_w, fc_b], [out], OPTS.FullyConnectedOptions, schema.FullyConnectedOptionsT())
    s.sub.inputs, s.sub.outputs = [x], [out]
    return g.model([s.sub])


def _while_seed(limit: float, step: float) -> schema.ModelT:
    g = _Graph()
    main = _Subgraph(g, "main")
    x = main.tensor("input", [1], TT.FLOAT32)
    y = main.tensor("output", [1], TT.FLOAT32)
    main.op(OP.WHILE, [x], [y], OPTS.WhileOptions, schema.WhileOptionsT(condSubgraphIndex=1, bodySubgraphIndex=2))
    main.sub.inputs, main.sub.outputs = [x], [y]
    cond = _Subgraph(g, "cond")
    cx = cond.tensor("x", [1], TT.FLOAT32)
    lim = cond.tensor("limit", [1], TT.FLOAT32, np.array([limit], np.float32))
    keep = cond.tensor("keep_going", [1], TT.BOOL)
    cond.op(OP.LESS, [cx, lim], [keep], OPTS.LessOptions, schema.LessOptionsT())
    cond.sub.inputs, cond.sub.outputs = [cx], [keep]
    body = _Subgraph(g, "body")
    bx = body.tensor("x", [1], TT.FLOAT32)
    inc = body.tensor("step", [1], TT.FLOAT32, np.array([step], np.float32))
    nx = body.tensor("x_next", [1], TT.FLOAT32)
    body.op(OP.ADD, [bx, inc], [nx], OPTS.AddOptions, schema.AddOptionsT())
    body.sub.inputs, body.sub.outputs = [bx], [nx]
    return g.model([main.sub, cond.sub, body.sub])


SEEDS = ("float", "int8", "while")


def seed_model(kind: str = "float", *, limit: float = 10.0, step: float = 1.0) -> bytes:
    """A valid small model as flatbuffer bytes: ``float``, ``int8`` or ``while`` (see the module doc).

    Args:
        kind: which seed.
        limit: the ``while`` seed loops while the value is below ``limit``.
        step: what each ``while`` iteration adds; 0 loops forever.
    """
    if kind == "while":
        return pack(_while_seed(limit, step))
    if kind in ("float", "int8"):
        return pack(_conv_seed(kind == "int8"))
    raise ValueError(f"unknown seed {kind!r}; expected one of {SEEDS}")


def seed_input(kind: str = "float", samples: int = 4, seed: int = 0) -> np.ndarray:
    """Input data matching a seed model (float32, values in [0, 1))."""
    shape = (samples,) if kind == "while" else (samples, 8, 8, 1)
    return np.random.default_rng(seed).uniform(0, 1, shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------
# The structural defects of issue 18
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defect:
    """A named structural defect: which seed it applies to, what it does and what the verifier
    must report (the check name and the tensor/operator/subgraph it must name)."""

    name: str
    seed: str
    apply: Callable[[schema.ModelT], None]
    check: str
    tensor: str | None = None  # the name of the tensor the report must name
    operator: tuple[int, int] | None = None  # (builtin code, nth) of the operator it must name
    subgraph: int | None = 0  # the subgraph it must name (None: any)


def _set_shape(name: str, shape: list[int]) -> Callable[[schema.ModelT], None]:
    def apply(m: schema.ModelT) -> None:
        tensor(m, name).shape = list(shape)
    return apply


def _other_buffer(m: schema.ModelT) -> None:
    tensor(m, "conv1/filter").buffer = tensor(m, "conv2/filter").buffer


def _scales(count: int) -> Callable[[schema.ModelT], None]:
    def apply(m: schema.ModelT) -> None:
        q = tensor(m, "conv1/filter").quantization
        q.scale = [0.01] * count
        q.zeroPoint = [0] * count
    return apply


def _quantized_dimension(m: schema.ModelT) -> None:
    tensor(m, "conv1/filter").quantization.quantizedDimension = 99


def _scale_value(value: float) -> Callable[[schema.ModelT], None]:
    def apply(m: schema.ModelT) -> None:
        tensor(m, "conv1/filter").quantization.scale[3] = value
    return apply


def _input_type(m: schema.ModelT) -> None:
    tensor(m, "input").type = 99


def _schema_version(m: schema.ModelT) -> None:
    m.version = 99


def _sparsity(kind: str) -> Callable[[schema.ModelT], None]:
    def apply(m: schema.ModelT) -> None:
        sp = tensor(m, "fc/weights_sparse").sparsity
        if kind == "order":
            sp.traversalOrder = [7, 0]
        elif kind == "indices":
            sp.dimMetadata[1].arrayIndices.values = [v + 1000 for v in sp.dimMetadata[1].arrayIndices.values]
        elif kind == "segments":
            sp.dimMetadata[1].arraySegments.values = list(reversed(sp.dimMetadata[1].arraySegments.values))
        elif kind == "dims":
            sp.dimMetadata = sp.dimMetadata[:1]
        elif kind == "dense_size":
            sp.dimMetadata[0].denseSize = 1 << 30
    return apply


def _while(cond: int | None = None, body: int | None = None) -> Callable[[schema.ModelT], None]:
    def apply(m: schema.ModelT) -> None:
        opts = m.subgraphs[0].operators[operator_index(m, OP.WHILE)].builtinOptions
        if cond is not None:
            opts.condSubgraphIndex = cond
        if body is not None:
            opts.bodySubgraphIndex = body
    return apply


def _while_inside(subgraph: int, cond: int, body: int) -> Callable[[schema.ModelT], None]:
    """Adds a WHILE(cond, body) operator to ``subgraph`` (a body that loops into itself or back)."""
    def apply(m: schema.ModelT) -> None:
        code = next(i for i, c in enumerate(m.operatorCodes) if c.builtinCode == OP.WHILE)
        sub = m.subgraphs[subgraph]
        sub.operators.append(schema.OperatorT(opcodeIndex=code, inputs=[sub.inputs[0]], outputs=[sub.outputs[0]],
                                              builtinOptionsType=OPTS.WhileOptions,
                                              builtinOptions=schema.WhileOptionsT(condSubgraphIndex=cond, bodySubgraphIndex=body)))
    return apply


def _conv_with_pool_options(m: schema.ModelT) -> None:
    op = m.subgraphs[0].operators[operator_index(m, OP.CONV_2D)]
    op.builtinOptionsType = OPTS.Pool2DOptions
    op.builtinOptions = schema.Pool2DOptionsT(padding=schema.Padding.VALID, strideW=1, strideH=1, filterWidth=2, filterHeight=2)


def _operator_tensor(m: schema.ModelT) -> None:
    m.subgraphs[0].operators[operator_index(m, OP.CONV_2D)].inputs[1] = 1000


DEFECTS: dict[str, Defect] = {d.name: d for d in (
    Defect("huge_filter", "float", _set_shape("conv1/filter", [16, 3, 3, 1048576]), "buffer_size", tensor="conv1/filter"),
    Defect("other_layer_buffer", "float", _other_buffer, "buffer_size", tensor="conv1/filter"),
    Defect("two_scales", "int8", _scales(2), "quantization", tensor="conv1/filter"),
    Defect("100k_scales", "int8", _scales(100_000), "quantization", tensor="conv1/filter"),
    Defect("quantized_dimension_99", "int8", _quantized_dimension, "quantization", tensor="conv1/filter"),
    Defect("nan_scale", "int8", _scale_value(float("nan")), "quantization", tensor="conv1/filter"),
    Defect("zero_scale", "int8", _scale_value(0.0), "quantization", tensor="conv1/filter"),
    Defect("input_type_99", "float", _input_type, "enum", tensor="input"),
    Defect("schema_version_99", "float", _schema_version, "schema_version"),
    Defect("sparsity_order", "float", _sparsity("order"), "sparsity", tensor="fc/weights_sparse"),
    Defect("sparsity_indices", "float", _sparsity("indices"), "sparsity", tensor="fc/weights_sparse"),
    Defect("sparsity_segments", "float", _sparsity("segments"), "sparsity", tensor="fc/weights_sparse"),
    Defect("sparsity_dims", "float", _sparsity("dims"), "sparsity", tensor="fc/weights_sparse"),
    Defect("sparsity_dense_size", "float", _sparsity("dense_size"), "sparsity", tensor="fc/weights_sparse"),
    Defect("while_cond_99", "while", _while(cond=99), "subgraph", operator=(OP.WHILE, 0)),
    Defect("while_body_main", "while", _while(body=0), "subgraph", operator=(OP.WHILE, 0)),
    Defect("while_body_self", "while", _while_inside(2, cond=1, body=2), "subgraph", operator=(OP.WHILE, 0), subgraph=2),
    Defect("while_cycle", "while", lambda m: (_while_inside(1, 2, 2)(m), _while_inside(2, 1, 1)(m)), "subgraph",
           operator=(OP.WHILE, 0), subgraph=None),
    Defect("conv_pool_options", "float", _conv_with_pool_options, "options", operator=(OP.CONV_2D, 0)),
    Defect("operator_tensor_1000", "float", _operator_tensor, "tensor_index", operator=(OP.CONV_2D, 0)),
)}


def defective_model(name: str) -> bytes:
    """The seed of defect ``name`` with the defect applied, as flatbuffer bytes."""
    defect = DEFECTS[name]
    model = unpack(seed_model(defect.seed))
    defect.apply(model)
    return pack(model)


# ------------------------------------------------------------------------------------------------
# Random mutations
# ------------------------------------------------------------------------------------------------

_INTERESTING_INTS = (-(2**31), -(2**15), -129, -2, -1, 0, 1, 2, 3, 7, 99, 127, 128, 255, 256, 1 << 20, 2**31 - 1)
_INTERESTING_FLOATS = (float("nan"), float("inf"), -float("inf"), 0.0, -0.0, -1.0, 1e-45, 1e38, 3.4e38)


def _fields(obj) -> list[tuple[object, str]]:
    """Every (object, attribute) pair reachable below ``obj`` (a ModelT part): the mutation sites."""
    out: list[tuple[object, str]] = []
    stack = [obj]
    while stack:
        cur = stack.pop()
        for attr, value in vars(cur).items():
            out.append((cur, attr))
            if isinstance(value, list):
                stack.extend(v for v in value if hasattr(v, "__dict__"))
            elif hasattr(value, "__dict__"):
                stack.append(value)
    return out


def _mutate_value(value, rng: random.Random):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return rng.choice((rng.choice(_INTERESTING_INTS), value + rng.choice((-1, 1)), rng.randrange(-300, 300)))
    if isinstance(value, float):
        return rng.choice(_INTERESTING_FLOATS)
    if isinstance(value, np.ndarray):
        value = value.copy()
        if value.size:
            i = rng.randrange(value.size)
            if value.dtype.kind == "f":
                value.flat[i] = rng.choice(_INTERESTING_FLOATS)
            else:
                info = np.iinfo(value.dtype)
                value.flat[i] = min(max(rng.choice(_INTERESTING_INTS), info.min), info.max)
        return value
    if isinstance(value, list):
        value = list(value)
        action = rng.randrange(4)
        if action == 0 and value:
            value.pop(rng.randrange(len(value)))
        elif action == 1 and value:
            value.append(copy.deepcopy(value[rng.randrange(len(value))]))
        elif action == 2:
            value = value * rng.choice((2, 100)) if len(value) < 64 else value[: len(value) // 2]
        elif value and not hasattr(value[0], "__dict__"):
            i = rng.randrange(len(value))
            value[i] = _mutate_value(value[i], rng)
        return value
    if isinstance(value, (bytes, str)):
        return rng.choice((b"", b"\xff\xfe" * 8, b"x" * 300))
    if value is None:
        return None
    return value


def mutate_fields(model: schema.ModelT, rng: random.Random, count: int = 1) -> list[str]:
    """Changes ``count`` random fields of ``model`` in place to hostile values; returns what changed."""
    changed = []
    sites = _fields(model)
    for _ in range(count):
        obj, attr = rng.choice(sites)
        old = getattr(obj, attr)
        new = _mutate_value(old, rng)
        setattr(obj, attr, new)
        changed.append(f"{type(obj).__name__}.{attr}")
    return changed


def _structured(model: schema.ModelT, rng: random.Random) -> str:
    """One targeted edit of a class of issue 18, at a random place."""
    sub = rng.choice(model.subgraphs)
    consts = [t for t in sub.tensors if t.buffer]
    quant = [t for t in sub.tensors if t.quantization is not None and t.quantization.scale is not None and len(t.quantization.scale)]
    kind = rng.choice(("shape", "buffer", "scales", "qdim", "scale_value", "type", "version", "sparsity",
                       "subgraph", "options", "op_tensor", "opcode", "io"))
    if kind == "shape" and sub.tensors:
        t = rng.choice(consts or sub.tensors)
        t.shape = [rng.choice((0, 1, 3, 99, 1 << 20, -1, -7)) for _ in range(rng.randrange(0, 6))]
    elif kind == "buffer" and sub.tensors:
        rng.choice(sub.tensors).buffer = rng.choice((0, 1, len(model.buffers) - 1, len(model.buffers), 2**31 - 1, rng.randrange(len(model.buffers))))
    elif kind == "scales" and quant:
        q = rng.choice(quant).quantization
        n = rng.choice((0, 1, 2, 3, 15, 17, 100_000))
        q.scale, q.zeroPoint = [0.01] * n, [0] * rng.choice((n, n, 0, 1))
    elif kind == "qdim" and quant:
        rng.choice(quant).quantization.quantizedDimension = rng.choice((-1, 1, 3, 4, 99, 2**31 - 1))
    elif kind == "scale_value" and quant:
        q = rng.choice(quant).quantization
        q.scale = list(q.scale)
        q.scale[rng.randrange(len(q.scale))] = rng.choice(_INTERESTING_FLOATS)
    elif kind == "type" and sub.tensors:
        rng.choice(sub.tensors).type = rng.choice((23, 99, 127, -1 & 0x7F, rng.randrange(0, 23)))
    elif kind == "version":
        model.version = rng.choice((0, 1, 2, 4, 99, 2**31 - 1))
    elif kind == "sparsity":
        sparse = [t for s in model.subgraphs for t in s.tensors if t.sparsity is not None]
        if sparse:
            _sparsity(rng.choice(("order", "indices", "segments", "dims", "dense_size")))(model) if any(
                _name(t.name) == "fc/weights_sparse" for t in model.subgraphs[0].tensors) else None
        elif consts:
            t = rng.choice(consts)
            t.sparsity = schema.SparsityParametersT(traversalOrder=[rng.randrange(-2, 9) for _ in range(rng.randrange(0, 5))],
                                                    dimMetadata=[schema.DimensionMetadataT(format=rng.randrange(0, 3), denseSize=rng.choice(_INTERESTING_INTS))])
    elif kind == "subgraph":
        for s in model.subgraphs:
            for op in s.operators:
                if op.builtinOptionsType == OPTS.WhileOptions:
                    setattr(op.builtinOptions, rng.choice(("condSubgraphIndex", "bodySubgraphIndex")),
                            rng.choice((0, 1, 2, 3, 99, -1, 2**31 - 1)))
                    return kind
        op = rng.choice(sub.operators) if sub.operators else None
        if op is not None:
            op.builtinOptionsType = rng.choice((OPTS.WhileOptions, OPTS.IfOptions, OPTS.CallOnceOptions))
            op.builtinOptions = rng.choice((schema.WhileOptionsT(0, 0), schema.IfOptionsT(99, 0), schema.CallOnceOptionsT(0)))
    elif kind == "options" and sub.operators:
        op = rng.choice(sub.operators)
        choice = rng.choice((OPTS.Pool2DOptions, OPTS.Conv2DOptions, OPTS.AddOptions, OPTS.ReshapeOptions, 0, 200))
        op.builtinOptionsType = choice
        cls = {OPTS.Pool2DOptions: schema.Pool2DOptionsT, OPTS.Conv2DOptions: schema.Conv2DOptionsT,
               OPTS.AddOptions: schema.AddOptionsT, OPTS.ReshapeOptions: schema.ReshapeOptionsT}.get(choice)
        op.builtinOptions = cls() if cls else None
    elif kind == "op_tensor" and sub.operators:
        op = rng.choice(sub.operators)
        vec = rng.choice(("inputs", "outputs"))
        current = getattr(op, vec)
        values = list(current) if current is not None and len(current) else [0]
        values[rng.randrange(len(values))] = rng.choice((-2, -1, len(sub.tensors), 1000, 2**31 - 1))
        setattr(op, vec, values)
    elif kind == "opcode" and model.operatorCodes:
        code = rng.choice(model.operatorCodes)
        code.builtinCode = rng.choice((0, 3, 127, 210, 999, 2**31 - 1, rng.randrange(0, 210)))
        code.deprecatedBuiltinCode = min(code.builtinCode, 127) if rng.random() < 0.5 else rng.choice((-1, 126, 127))
    elif kind == "io":
        setattr(sub, rng.choice(("inputs", "outputs")), rng.choice(([], [len(sub.tensors)], [-1], [0, 0])))
    return kind


def fuzz_case(rng: random.Random, seeds: dict[str, bytes] | None = None) -> tuple[str, bytes]:
    """One fuzz case: a seed with a named defect, a structured edit, random field mutations, or
    byte-level damage of a packed model. Returns (a description, the bytes)."""
    seeds = seeds or {k: seed_model(k) for k in SEEDS}
    roll = rng.random()
    if roll < 0.15:
        name = rng.choice(sorted(DEFECTS))
        return f"defect:{name}", defective_model(name)
    seed = rng.choice(SEEDS)
    for _ in range(8):  # a mutation the packer cannot encode (an int out of its field's range) is retried
        model = unpack(seeds[seed])
        if roll < 0.6:
            what = f"structured:{seed}:{'+'.join(_structured(model, rng) for _ in range(rng.choice((1, 1, 2, 3))))}"
        else:
            what = f"fields:{seed}:{'+'.join(mutate_fields(model, rng, rng.choice((1, 2, 4))))}"
        try:
            data = pack(model)
        except (TypeError, ValueError, OverflowError, AttributeError, IndexError):
            continue
        if rng.random() < 0.1:
            return f"{what}+bytes", _byte_damage(data, rng)
        return what, data
    return f"bytes:{seed}", _byte_damage(seeds[seed], rng)


def _byte_damage(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        pos = rng.randrange(0, max(len(b) - 4, 1))
        b[pos: pos + 4] = rng.randrange(0, 2**32).to_bytes(4, "little")
    return bytes(b)


# ------------------------------------------------------------------------------------------------
# Running cases through the CLI (subprocesses) and classifying what happened
# ------------------------------------------------------------------------------------------------

COMMANDS = ("inspect", "check", "validate", "benchmark")
#: exit codes a command may end with on hostile input (0: accepted; 2 bad input, 3 bad model,
#: 4 bad data, 5 conversion, 6 runtime failure; 7 device; 10 a time limit (--timeout)
KNOWN_CODES = {0, 2, 3, 4, 5, 6, 7, 10, 11}  # 10: the run hit its --timeout (an endless model); 11: its memory limit


@dataclass(frozen=True)
class Outcome:
    """One command run on one case."""

    command: str
    code: int | None  # None: killed at the harness time limit (a hang)
    seconds: float
    traceback: bool
    leftovers: tuple[str, ...]  # files the run left in its working folder
    violations: int  # what the verifier finds in the case (0: structurally valid)
    tail: str  # the last line of stderr

    @property
    def kind(self) -> str:
        """``ok``, ``rejected``, ``hang``, ``traceback``, ``exit_1``, ``crash`` (killed by a signal or
        an unknown code), ``leftovers`` or ``accepted_invalid`` (exit 0 on a model the verifier rejects)."""
        if self.code is None:
            return "hang"
        if self.traceback:
            return "traceback"
        if self.code == 1:
            return "exit_1"
        if self.code < 0 or self.code not in KNOWN_CODES:
            return "crash"
        if self.leftovers:
            return "leftovers"
        if self.code == 0 and self.violations:
            return "accepted_invalid"
        return "ok" if self.code == 0 else "rejected"

    def to_dict(self) -> dict:
        return {"command": self.command, "code": self.code, "kind": self.kind, "seconds": round(self.seconds, 3),
                "violations": self.violations, "leftovers": list(self.leftovers), "tail": self.tail}


def write_seed_data(folder, kind: str, samples: int = 4):
    """The .npz data file ``validate`` reads for a case made from seed ``kind``."""
    from pathlib import Path

    path = Path(folder) / f"data_{kind}.npz"
    if not path.exists():
        np.savez(path, x=seed_input(kind, samples), y=np.arange(samples) % 4)
    return path


RUN_TIMEOUT_S = 15  # edgekit's own runner limit in the fuzz runs (exit 10 past it); the harness kills at its own, longer limit


def command_line(command: str, model, data, report) -> list[str]:
    """The ``edgekit`` arguments of ``command`` for one case (tiny runs, JSON output)."""
    if command == "inspect":
        return ["inspect", str(model), "--json"]
    if command == "check":
        return ["check", str(model), "--target", "cpu", "--json"]
    if command == "validate":
        return ["validate", str(model), "--data", str(data), "--runs", "1", "--warmup", "0", "--timeout", str(RUN_TIMEOUT_S), "--json",
                "--report", str(report)]
    if command == "benchmark":
        return ["benchmark", str(model), "--runs", "2", "--warmup", "0", "--timeout", str(RUN_TIMEOUT_S), "--json"]
    raise ValueError(command)


def run_command(command: str, data_bytes: bytes, seed_kind: str, workdir, *, python: str, repo, timeout: float,
                violations: int, data_dir) -> Outcome:
    """Runs ``python -m edgekit COMMAND`` on one case in ``workdir`` (emptied first) and classifies it.

    The case file and nothing else is in ``workdir`` before the run; a successful ``validate``
    may leave its report, anything else left there counts as leftovers. A run past ``timeout``
    is killed with its process group and counts as a hang.
    """
    import os
    import shutil
    import signal
    import subprocess
    import time
    from pathlib import Path

    work = Path(workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    model = work / "case.tflite"
    model.write_bytes(data_bytes)
    report = work / "report.json"
    env = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [python, "-m", "edgekit", *command_line(command, model, write_seed_data(data_dir, seed_kind), report)]
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    seconds = time.perf_counter() - start
    text = (out + err).decode("utf-8", "replace")
    left = {str(p.relative_to(work)) for p in work.rglob("*") if p.is_file()} - {"case.tflite"}
    if code == 0 and command == "validate":
        left.discard("report.json")
    tail = err.decode("utf-8", "replace").strip().splitlines()
    return Outcome(command=command, code=code, seconds=seconds, traceback="Traceback (most recent call last)" in text,
                   leftovers=tuple(sorted(left)), violations=violations, tail=(tail[-1] if tail else "")[:300])


def case_seed_kind(description: str) -> str:
    """The seed a case was made from (its data file follows it)."""
    if description.startswith("defect:"):
        return DEFECTS[description.split(":", 1)[1]].seed
    parts = description.split(":")
    return parts[1] if len(parts) > 1 and parts[1] in SEEDS else "float"
