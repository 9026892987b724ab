"""The QAT graph: a model's layer calls flattened (nested models inlined) and the plan for each.

:func:`plan_qat` decides, without training, how every layer is simulated in the QAT graph
(see :mod:`edgekit.passes.qat` for what the rebuilt graph simulates):

- ``weights-per-channel`` / ``weights-per-tensor``: Conv/Depthwise/Separable (per output
  channel) and Dense (per tensor) with int8 kernels, a following BatchNormalization folded in;
- ``folded``, ``batchnorm``, ``affine``, ``activation``, ``merge``, ``mean``: int8 ops;
- ``passthrough``: keeps its input's int8 scale;
- ``float``: stays float (listed; its output is still quantized so the rest stays int8).

Example:
    >>> plan = plan_qat(model)  # doctest: +SKIP
    >>> [(p.name, p.treatment) for p in plan.layers]  # doctest: +SKIP
    [('conv', 'weights-per-channel'), ('bn', 'folded'), ('relu', 'activation'), ...]
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgekit.core.errors import ModelError
from edgekit.core.keras_graph import (
    ACTIVATION_LAYERS,
    AFFINE_PREPROCESSING,
    FUSING_MERGES,
    GLOBAL_MEAN_POOLING,
    MERGES,
    SCALE_PRESERVING,
)
from edgekit.core.tfshim import functional_graph, graph_nodes, keras
from edgekit.passes.qat.layers import FIXED_OUTPUT_RANGES, FUSABLE_ACTIVATIONS

# How each layer is treated. Keys are Keras layer class names; checked with isinstance below.
# Activation functions whose int8 TFLite form the QAT graph reproduces (converted to a fused
# activation or a single int8 builtin op). Others keep the layer float.
QUANTIZABLE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "softmax", "silu", "hard_silu", "gelu", "prelu",
})


@dataclass(frozen=True)
class LayerPlan:
    """How one layer of the model is treated in the QAT graph."""

    name: str
    class_name: str
    treatment: str  # weights-per-channel, weights-per-tensor, folded, batchnorm, affine, activation, merge, mean, passthrough, float
    detail: str = ""
    float_part: str = ""  # what of a quantized layer still runs in float (e.g. its activation)

    @property
    def runs_float(self) -> bool:
        """Whether the layer (or part of it) stays float in the exported model."""
        return self.treatment == "float" or bool(self.float_part)

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "class": self.class_name, "treatment": self.treatment, "detail": self.detail}
        if self.float_part:
            out["float_part"] = self.float_part
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerPlan:
        """The inverse of :meth:`to_dict`."""
        return cls(data["name"], data["class"], data["treatment"], data.get("detail", ""), data.get("float_part", ""))


# ---------------------------------------------------------------------------------------------
# The graph: a flat list of layer calls, nested models inlined


@dataclass
class _Node:
    layer: Any
    arguments: Any  # keras SymbolicArguments, for fill_in
    arg_tensors: list[Any]  # the KerasTensors in arguments, in order
    inputs: list[tuple]  # resolved tensor keys of arg_tensors
    outputs: list[tuple]


@dataclass
class _Graph:
    inputs: list[tuple[tuple, Any]]  # (key, KerasTensor of the source model)
    outputs: list[tuple]
    nodes: list[_Node]

    def consumers(self) -> dict[tuple, list[_Node]]:
        found: dict[tuple, list[_Node]] = {}
        for node in self.nodes:
            for key in node.inputs:
                found.setdefault(key, []).append(node)
        return found

    def producer(self) -> dict[tuple, _Node]:
        return {key: node for node in self.nodes for key in node.outputs}


def _functional_of(model: Any) -> Any:
    return functional_graph(model)


def _flatten_graph(model: Any) -> _Graph:
    """The model's layer calls in topological order, with nested Functional/Sequential models inlined."""
    k = keras()
    alias: dict[tuple, tuple] = {}

    def resolve(key: tuple) -> tuple:
        while key in alias:
            key = alias[key]
        return key

    nodes: list[_Node] = []

    def walk(graph: Any, scope: tuple) -> None:
        for node in graph_nodes(graph):
            op = node.operation
            if op is None or node.is_input:
                continue
            tensors = list(node.arguments.keras_tensors)
            in_keys = [resolve((scope, id(t))) for t in tensors]
            inner = _functional_of(op) if isinstance(op, k.Model) else None
            if inner is not None and len(inner.inputs) == len(tensors):
                sub = (*scope, len(nodes), id(node))
                for inner_in, key in zip(inner.inputs, in_keys):
                    alias[(sub, id(inner_in))] = key
                walk(inner, sub)
                for out, inner_out in zip(node.outputs, inner.outputs):
                    alias[(scope, id(out))] = resolve((sub, id(inner_out)))
                continue
            nodes.append(_Node(op, node.arguments, tensors, in_keys, [(scope, id(t)) for t in node.outputs]))

    top = _functional_of(model)
    if top is None:
        raise ModelError(
            f"model '{model.name}' is a subclassed Keras model; QAT rebuilds the layer graph, which only "
            "Functional and Sequential models expose",
            hint="rebuild the model with the Functional API (keras.Model(inputs, outputs)) and save it again",
        )
    walk(top, ())
    return _Graph(
        inputs=[(((), id(t)), t) for t in top.inputs],
        outputs=[resolve(((), id(t))) for t in top.outputs],
        nodes=nodes,
    )


# ---------------------------------------------------------------------------------------------
# The plan: what each node becomes


def _is(layer: Any, names: Iterable[str]) -> bool:
    layers = keras().layers
    classes = tuple(getattr(layers, n) for n in names if hasattr(layers, n))
    return isinstance(layer, classes)


def activation_name(layer: Any) -> str | None:
    """The activation a layer applies as a name (``relu``, ``relu6``, ``softmax``...), or None."""
    cls = type(layer).__name__
    if _is(layer, ("ReLU",)):
        if float(layer.negative_slope or 0) == 0 and float(layer.threshold or 0) == 0:
            if layer.max_value is None:
                return "relu"
            if float(layer.max_value) == 6.0:
                return "relu6"
        return "relu_custom"
    if _is(layer, ("Softmax",)):
        return "softmax" if layer.axis in (-1, [-1]) else "softmax_axis"
    if _is(layer, ("LeakyReLU",)):
        return "leaky_relu"
    if _is(layer, ("ELU",)):
        return "elu" if float(getattr(layer, "alpha", 1.0)) == 1.0 else "elu_custom"
    if _is(layer, ("PReLU",)):
        return "prelu"
    if _is(layer, ("Activation",)) or hasattr(layer, "activation"):
        fn = getattr(layer, "activation", None)
        return getattr(fn, "__name__", cls) if fn is not None else "linear"
    return None


def _weighted_kind(layer: Any) -> tuple[str | None, str]:
    """("conv"|"depthwise"|"separable"|"dense", "") or (None, reason it is not supported)."""
    if _is(layer, ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose", "Conv3D")):
        return None, "transposed and 3D convolutions are not simulated"
    kind = None
    if _is(layer, ("SeparableConv1D", "SeparableConv2D")):
        kind = "separable"
    elif _is(layer, ("DepthwiseConv1D", "DepthwiseConv2D")):
        kind = "depthwise"
    elif _is(layer, ("Conv1D", "Conv2D")):
        kind = "conv"
        if int(getattr(layer, "groups", 1) or 1) != 1:
            return None, "grouped convolutions are not simulated"
    elif _is(layer, ("Dense",)):
        kind = "dense"
    else:
        return None, ""
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None, "channels_first convolutions are not simulated"
    return kind, ""


@dataclass
class _Step:
    """What one graph node becomes: ``role`` and whether its (float) outputs get a fake-quant."""

    node: _Node
    role: str  # weighted, folded, bn, activation, merge, mean, affine, passthrough, unsupported
    kind: str = ""
    bn: Any = None
    quantize_output: bool = True
    fixed_range: tuple[float, float] | None = None
    reason: str = ""


@dataclass
class QatPlan:
    """The layer-by-layer plan for a model, computed without training (see :func:`plan_qat`)."""

    graph: _Graph
    steps: list[_Step]
    layers: list[LayerPlan]

    @property
    def unsupported(self) -> list[LayerPlan]:
        """Layers that stay float in whole or in part."""
        return [p for p in self.layers if p.runs_float]

    @property
    def quantized_count(self) -> int:
        return sum(1 for p in self.layers if p.treatment not in ("float", "passthrough"))


def _last_axis(axis: Any, node: _Node) -> bool:
    """Whether a normalization ``axis`` is exactly the last (channel) axis of the node's input."""
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    rank = len(node.arg_tensors[0].shape) if node.arg_tensors else 0
    return len(node.inputs) == 1 and axis in (-1, rank - 1)


def _bn_foldable(node: _Node) -> bool:
    """A BatchNormalization over the last (channel) axis can fold into the layer before it."""
    return _last_axis(node.layer.axis, node)


def plan_qat(keras_model: Any) -> QatPlan:
    """Decides how every layer of ``keras_model`` is simulated; raises if nothing can be quantized.

    Raises:
        ModelError: the model is subclassed, or has no layer QAT can quantize.
    """
    graph = _flatten_graph(keras_model)
    consumers = graph.consumers()
    outputs = set(graph.outputs)
    steps: dict[int, _Step] = {}
    for node in graph.nodes:
        layer = node.layer
        kind, reason = _weighted_kind(layer)
        if kind:
            steps[id(node)] = _Step(node, "weighted", kind=kind)
        elif reason:
            steps[id(node)] = _Step(node, "unsupported", reason=reason)
        elif _is(layer, ("BatchNormalization",)):
            if _last_axis(layer.axis, node):
                steps[id(node)] = _Step(node, "bn")
            else:
                steps[id(node)] = _Step(node, "unsupported", reason=f"normalizes over axis {layer.axis}, not the channel axis")
        elif _is(layer, ACTIVATION_LAYERS):
            act = activation_name(layer) or "linear"
            if act in QUANTIZABLE_ACTIVATIONS:
                steps[id(node)] = _Step(node, "activation", kind=act, fixed_range=FIXED_OUTPUT_RANGES.get(act))
            else:
                steps[id(node)] = _Step(node, "unsupported", reason=f"activation '{act}' has no int8 form edgekit simulates")
        elif _is(layer, MERGES):
            steps[id(node)] = _Step(node, "merge", kind=type(layer).__name__)
        elif _is(layer, GLOBAL_MEAN_POOLING):
            steps[id(node)] = _Step(node, "mean")
        elif _is(layer, AFFINE_PREPROCESSING):
            if _is(layer, ("Rescaling",)) or _last_axis(layer.axis, node):
                steps[id(node)] = _Step(node, "affine")
            else:
                steps[id(node)] = _Step(node, "unsupported", reason=f"normalizes over axis {layer.axis}, not the channel axis")
        elif _is(layer, SCALE_PRESERVING):
            steps[id(node)] = _Step(node, "passthrough", quantize_output=False)
        else:
            steps[id(node)] = _Step(node, "unsupported", reason="no int8 simulation for this layer type")

    def single_consumer(node: _Node) -> _Node | None:
        if len(node.outputs) != 1 or node.outputs[0] in outputs:
            return None
        users = consumers.get(node.outputs[0], [])
        return users[0] if len(users) == 1 else None

    # Fold BatchNormalization into the conv/dense before it (linear activation, sole consumer).
    for node in graph.nodes:
        step = steps[id(node)]
        if step.role != "weighted" or (activation_name(node.layer) or "linear") != "linear":
            continue
        user = single_consumer(node)
        if user is not None and steps[id(user)].role == "bn" and _bn_foldable(user):
            step.bn = user.layer  # the conv's output tensor now carries the BN's output
            steps[id(user)] = _Step(user, "folded", quantize_output=False, reason=node.layer.name)

    # Fixed output ranges of weighted layers ending in softmax/sigmoid/tanh.
    for step in steps.values():
        if step.role == "weighted":
            step.fixed_range = FIXED_OUTPUT_RANGES.get(activation_name(step.node.layer) or "linear")

    # Where each weighted/folded output ends: the node whose output tensor carries the value.
    def effective_end(step: _Step) -> _Node | None:
        if step.bn is not None:
            return single_consumer(step.node)  # the folded BN node
        return step.node

    for step in steps.values():
        if step.role in ("passthrough", "folded"):
            step.quantize_output = False
            continue
        step.quantize_output = True
        fusing = step.role == "weighted" or (step.role == "merge" and step.kind in FUSING_MERGES)
        own_act = activation_name(step.node.layer) if step.role == "weighted" else "linear"
        if fusing and own_act in ("linear", None):
            end = effective_end(step)
            user = single_consumer(end) if end is not None else None
            if user is not None and steps[id(user)].role == "activation" and steps[id(user)].kind in FUSABLE_ACTIVATIONS:
                step.quantize_output = False  # the converter fuses the ReLU/ReLU6: quantize after it

    ordered = [steps[id(n)] for n in graph.nodes]
    layers: list[LayerPlan] = []
    for step in ordered:
        layer = step.node.layer
        name, cls = layer.name, type(layer).__name__
        if step.role == "weighted":
            per = "per-tensor" if step.kind == "dense" else "per-channel"
            detail = f"int8 weights {per}"
            if step.bn is not None:
                detail += f", BatchNormalization '{step.bn.name}' folded"
            act = activation_name(layer) or "linear"
            if act != "linear":
                detail += f", activation {act}"
            float_part = f"activation '{act}' runs in float (no int8 form simulated)" if act not in QUANTIZABLE_ACTIVATIONS else ""
            layers.append(LayerPlan(name, cls, f"weights-{per}", detail, float_part))
        elif step.role == "folded":
            layers.append(LayerPlan(name, cls, "folded", f"folded into '{step.reason}' (moving statistics frozen)"))
        elif step.role == "bn":
            layers.append(LayerPlan(name, cls, "batchnorm", "not after a conv/dense: int8 1x1 depthwise multiply-add, statistics frozen"))
        elif step.role == "affine":
            layers.append(LayerPlan(name, cls, "affine", "int8 1x1 depthwise multiply-add"))
        elif step.role == "unsupported":
            layers.append(LayerPlan(name, cls, "float", step.reason))
        elif step.role == "passthrough":
            layers.append(LayerPlan(name, cls, "passthrough", "keeps its input's int8 scale"))
        else:
            layers.append(LayerPlan(name, cls, step.role, step.kind if step.role in ("activation", "merge") else ""))
        # a layer called more than once appears once per call; keep the first
    seen: set[str] = set()
    unique = []
    for p in layers:
        if p.name not in seen:
            seen.add(p.name)
            unique.append(p)
    plan = QatPlan(graph=graph, steps=ordered, layers=unique)
    if not any(s.role in ("weighted", "activation", "merge", "mean", "affine", "bn") for s in ordered):
        names = ", ".join(f"{p.name} ({p.class_name})" for p in plan.unsupported[:5]) or "none"
        raise ModelError(
            f"model '{keras_model.name}' has no layer QAT can quantize (unsupported: {names})",
            hint="QAT simulates Conv/Depthwise/Separable/Dense, BatchNormalization, activations, merges and pooling; "
                 "use `edgekit quantize` for this model",
        )
    return plan


