"""What the delegate checks need to know about a ``.tflite`` graph: operator options, FLOPs,
the Keras layer behind each node, and TFLite's own partitioning of nodes into delegate subsets.

Example:
    >>> guess_layer("m_1/m_1/relu_1/Relu6;m_1/m_1/conv_1/convolution", {"conv": "Conv2D"})
    'conv (Conv2D)'
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgekit.core.errors import ModelError
from edgekit.core.tflite_file import OperatorInfo, TensorInfo, TfliteInfo

QUASI_STATIC_OPS = ("DEQUANTIZE", "DENSIFY")


def read_operator_options(buf: bytes) -> list[Any]:
    """The builtin options object (object API, e.g. ``StridedSliceOptionsT``) of each main-subgraph node.

    Call only on bytes that :func:`edgekit.core.tflite_file.parse_tflite_bytes` accepted.
    """
    from ai_edge_litert import schema_py_generated as schema

    try:
        model = schema.Model.GetRootAs(buf, 0)
        sub = model.Subgraphs(0)
        out: list[Any] = []
        for o in range(sub.OperatorsLength()):
            op = sub.Operators(o)
            opts = None
            if op.BuiltinOptionsType():
                opts = schema.BuiltinOptionsCreator(op.BuiltinOptionsType(), op.BuiltinOptions())
            elif op.BuiltinOptions2Type():
                opts = schema.BuiltinOptions2Creator(op.BuiltinOptions2Type(), op.BuiltinOptions2())
            out.append(opts)
        return out
    except Exception as exc:  # a malformed options table: the model is corrupt
        raise ModelError(f"cannot read operator options ({type(exc).__name__})", hint="the file is corrupt; re-export it") from None



def tensor_dtype(t: TensorInfo) -> str:
    """The tensor's dtype in lower case (``int8``), as the rule tables write it."""
    return t.dtype.lower()


def main_ops(info: TfliteInfo) -> list[OperatorInfo]:
    """The operators of the main subgraph (the one the delegates see)."""
    return [op for op in info.operators if op.subgraph == 0]


def quasi_constant_tensors(info: TfliteInfo, ops: list[OperatorInfo]) -> tuple[set[int], set[int]]:
    """(constant-or-folded tensor indices, indices of DEQUANTIZE/DENSIFY nodes that fold constants)."""
    constant = {t.index for t in info.tensors if t.is_constant}
    folded_nodes: set[int] = set()
    for op in ops:
        ins = [i for i in op.inputs if i >= 0]
        if op.op in QUASI_STATIC_OPS and ins and all(i in constant for i in ins):
            folded_nodes.add(op.index)
            constant.update(o for o in op.outputs if o >= 0)
    return constant, folded_nodes



# ----------------------------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------------------------

_ELEMENTWISE = {
    "ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "POW", "FLOOR_DIV", "FLOOR_MOD",
    "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "PRELU", "LOGISTIC", "TANH", "ELU", "GELU",
    "HARD_SWISH", "EXP", "LOG", "SQRT", "RSQRT", "SQUARE", "ABS", "NEG", "SIN", "COS", "FLOOR", "CEIL", "ROUND",
    "SIGN", "SOFTMAX", "LOG_SOFTMAX", "L2_NORMALIZATION", "QUANTIZE", "ADD_N", "SELECT", "SELECT_V2",
    "EQUAL", "NOT_EQUAL", "GREATER", "GREATER_EQUAL", "LESS", "LESS_EQUAL", "LOGICAL_AND", "LOGICAL_OR",
    "LOGICAL_NOT", "CAST", "CUMSUM",
}
_REDUCTIONS = {"MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "SEGMENT_SUM", "UNSORTED_SEGMENT_SUM", "TOPK_V2", "ARG_MAX", "ARG_MIN"}


def _elements(t: TensorInfo | None) -> int:
    if t is None:
        return 0
    return int(np.prod([max(d, 1) for d in t.shape])) if t.shape else 1


def estimate_flops(op: OperatorInfo, tensors: tuple[TensorInfo, ...], options: Any = None, folded: bool = False) -> int:
    """A rough FLOP count for one node (a multiply-add counts 2), from the tensor shapes.

    Convolutions, fully connected layers and matrix multiplies count their multiply-adds;
    elementwise ops count one per output element, reductions and pooling one per input element
    (times the window for pooling); data movement (reshape, transpose, pad, concat...) counts 0.
    Weight DEQUANTIZE/DENSIFY nodes that fold constants count 0 (they run once, at load).
    """
    if folded:
        return 0

    def tensor(pos: int, outputs: bool = False) -> TensorInfo | None:
        idx = (op.outputs if outputs else op.inputs)
        if pos >= len(idx) or idx[pos] < 0:
            return None
        return tensors[idx[pos]]

    out = tensor(0, outputs=True)
    out_elems = _elements(out)
    name = op.op
    if name == "CONV_2D":
        w = tensor(1)
        if w is None or len(w.shape) != 4:
            return 0
        return 2 * out_elems * w.shape[1] * w.shape[2] * w.shape[3]
    if name == "DEPTHWISE_CONV_2D":
        w = tensor(1)
        if w is None or len(w.shape) != 4:
            return 0
        return 2 * out_elems * w.shape[1] * w.shape[2]
    if name == "CONV_3D":
        w = tensor(1)  # [d, h, w, in, out]
        return 2 * out_elems * int(np.prod(w.shape[:4])) if w is not None and len(w.shape) == 5 else 0
    if name == "TRANSPOSE_CONV":
        w, x = tensor(1), tensor(2)  # filter [out, h, w, in], input
        if w is None or x is None or len(w.shape) != 4:
            return 0
        return 2 * _elements(x) * w.shape[0] * w.shape[1] * w.shape[2]
    if name == "FULLY_CONNECTED":
        w = tensor(1)
        if w is None or len(w.shape) != 2:
            return 0
        return 2 * (out_elems // max(w.shape[0], 1)) * w.shape[0] * w.shape[1]
    if name == "BATCH_MATMUL":
        a = tensor(0)
        if a is None or len(a.shape) < 2:
            return 0
        adj_x = bool(getattr(options, "adjX", False))
        k = a.shape[-2] if adj_x else a.shape[-1]
        return 2 * out_elems * max(k, 1)
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"):
        window = int(getattr(options, "filterWidth", 1) or 1) * int(getattr(options, "filterHeight", 1) or 1)
        return out_elems * window
    if name in _REDUCTIONS:
        return _elements(tensor(0))
    if name in _ELEMENTWISE or name in ("DEQUANTIZE",):
        return out_elems
    return 0


# ----------------------------------------------------------------------------------------------
# Layer names
# ----------------------------------------------------------------------------------------------

_SUFFIX = re.compile(r"_\d+$")


def guess_layer(tensor_name: str, layers: dict[str, str] | None = None) -> str | None:
    """The Keras layer a node came from, read from its output tensor's name.

    The converter names tensors ``model/model/layer/Op``; fused nodes join names with ``;`` and
    the main op (the convolution, the matmul) comes last. With ``layers`` (layer name -> class,
    recorded by ``edgekit export`` in the manifest) the name is matched exactly, including the
    ``_1`` suffix Keras adds when the model is called inside a wrapper.

    Example:
        >>> guess_layer("m_1/m_1/relu_1/Relu6;m_1/m_1/conv_1/convolution", {"conv": "Conv2D"})
        'conv (Conv2D)'
    """
    part = tensor_name.split(";")[-1]
    comps = [c for c in part.split("/") if c]
    if len(comps) < 2:
        return None
    scopes = comps[:-1]
    if layers:
        for comp in scopes[1:] + scopes[:1]:
            for cand in (comp, _SUFFIX.sub("", comp)):
                if cand in layers:
                    return f"{cand} ({layers[cand]})"
        return None
    model_scope = scopes[0]
    rest = scopes[1:]
    while rest and rest[0] == model_scope:
        rest = rest[1:]
    return rest[0] if rest else None


def node_layer(op: OperatorInfo, tensors: tuple[TensorInfo, ...], layers: dict[str, str] | None = None) -> str | None:
    """The layer of a node: from its output tensor's name, else from its weights' names.

    A model's final node writes a tensor named after the signature (``StatefulPartitionedCall:0``);
    its weights still carry the layer's scope.
    """
    names = [tensors[i].name for i in op.outputs if 0 <= i < len(tensors)]
    names += [tensors[i].name for i in op.inputs[1:] if 0 <= i < len(tensors) and tensors[i].is_constant]
    for name in names:
        layer = guess_layer(name, layers)
        if layer:
            return layer
    return None


# ----------------------------------------------------------------------------------------------
# Partitioning (TFLite graph_info.cc, greedy mode)
# ----------------------------------------------------------------------------------------------


def partition_nodes(ops: list[OperatorInfo], supported: list[bool]) -> list[tuple[bool, list[int]]]:
    """Groups nodes into subsets of one kind (delegated or not) the way TFLite does.

    Port of ``PartitionGraphIntoIndependentNodeSubsetsImpl`` with ``greedily=true`` (the
    interpreter's default): each epoch takes every node whose inputs are ready and whose kind
    matches the epoch's first ready node, so independent branches can join one partition even
    when they are not contiguous in execution order.

    Returns:
        ``[(is_delegated_kind, [positions in ops])...]`` in epoch order.
    """
    # tensors no node produces (graph inputs, constants) are always ready
    ready = {o: False for op in ops for o in op.outputs if o >= 0}
    assigned = [False] * len(ops)
    subsets: list[tuple[bool, list[int]]] = []
    while True:
        kind: bool | None = None
        members: list[int] = []
        progress = True
        while progress:
            progress = False
            for pos, op in enumerate(ops):
                if assigned[pos]:
                    continue
                if any(i >= 0 and not ready.get(i, True) for i in op.inputs):
                    continue
                if kind is None:
                    kind = supported[pos]
                if supported[pos] != kind:
                    continue
                assigned[pos] = True
                members.append(pos)
                for o in op.outputs:
                    if o >= 0:
                        ready[o] = True
                progress = True
        if not members:
            break
        subsets.append((bool(kind), members))
    return subsets

