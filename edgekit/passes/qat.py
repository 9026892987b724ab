"""Quantization-aware training (QAT) of Keras 3 models, exported to full-int8 TFLite.

edgekit rebuilds the model's graph (Sequential or Functional, nested models flattened) with
native Keras 3 fake-quantization layers placed where the TFLite converter quantizes a full-int8
model, fine-tunes it, and converts the result; no tf-keras or tfmot is involved.

What the rebuilt graph simulates (see :mod:`edgekit.passes.qat_layers`):

- the model input and every tensor the converter gives its own int8 scale: the outputs of
  Conv/Depthwise/Separable/Dense layers (after their fused ReLU/ReLU6, not between), of Add,
  Subtract, Multiply, Concatenate and the other merges, of activations (softmax, sigmoid and tanh
  with the fixed ranges of the int8 kernels), of Rescaling/Normalization, global average pooling
  and of unsupported layers;
- BatchNormalization folded into the preceding Conv/Depthwise/Separable/Dense (moving statistics,
  frozen during QAT; gamma and beta train), the folded kernel fake-quantized per output channel
  (convolutions) or per tensor (Dense);
- pass-through layers (Reshape, Flatten, pooling, padding, cropping, Dropout...) keep their input's
  scale, as the int8 kernels require.

A layer edgekit cannot simulate stays float (its output is still quantized so the rest of the
graph stays int8), is listed in the plan and the report, and training goes on. The model must
contain at least one layer that can be quantized.

Example:
    >>> result = qat("model.keras", "model_qat.tflite", data="train.npz", val="val.npz",
    ...              epochs=2, preprocessing=Preprocessing(scale=1 / 255))  # doctest: +SKIP
    >>> [(row.variant, row.top1) for row in result.comparison]  # doctest: +SKIP
    [('float', 88.9), ('ptq-int8', 88.7), ('qat-int8', 89.5)]
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import calibration_sample, load_dataset
from edgekit.core.errors import ConversionError, DataError, InputError, ModelError
from edgekit.core.fsutil import atomic_path, check_output_path, sha256_file, size_info, write_bytes_atomic, write_json_atomic
from edgekit.core.manifest import Manifest, manifest_path_for
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tflite_file import TfliteInfo, parse_tflite_bytes
from edgekit.core.tfshim import functional_graph, graph_nodes
from edgekit.core.datatypes import Artifact, Dataset, IOType, Preprocessing

PRESERVE_CHOICES = ("sparsity", "clusters")
QAT_IO_TYPES = (IOType.FLOAT, IOType.INT8, IOType.UINT8)
MAX_CLUSTERS = 256  # a kernel with more distinct values than this is not treated as clustered
MIN_SPARSITY = 0.01  # --preserve sparsity needs at least this fraction of zero kernel weights

# How each layer is treated. Keys are Keras layer class names; checked with isinstance below.
_PASSTHROUGH = (
    "Reshape", "Flatten", "MaxPooling1D", "MaxPooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "AveragePooling1D", "AveragePooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Permute", "RepeatVector", "UpSampling1D", "UpSampling2D", "Identity", "InputLayer",
)
_MEAN = ("GlobalAveragePooling1D", "GlobalAveragePooling2D")
_AFFINE = ("Rescaling", "Normalization")
_MERGE = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate")
_FUSING_MERGES = ("Add", "Subtract", "Multiply")
_ACTIVATION_LAYERS = ("ReLU", "Activation", "Softmax", "LeakyReLU", "ELU", "PReLU")
# Activation functions whose int8 TFLite form the QAT graph reproduces (converted to a fused
# activation or a single int8 builtin op). Others keep the layer float.
QUANTIZABLE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "sigmoid", "tanh", "softmax", "silu", "hard_silu", "gelu", "prelu",
})


# ---------------------------------------------------------------------------------------------
# Results


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


@dataclass(frozen=True)
class VariantResult:
    """Accuracy of one variant (float, PTQ int8, QAT int8) on the validation data."""

    variant: str
    top1: float | None
    top5: float | None
    size_bytes: int | None
    agreement_with_float: float | None  # % of samples with the same top-1 class as the float model
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "top1": self.top1, "top5": self.top5, "size_bytes": self.size_bytes,
            "agreement_with_float": self.agreement_with_float, "note": self.note,
        }


@dataclass(frozen=True)
class QatResult:
    """What :func:`qat` produced."""

    artifact: Artifact
    info: TfliteInfo
    io_type: IOType
    plan: list[LayerPlan]
    unsupported: list[LayerPlan]
    float_ops: list[str]
    comparison: list[VariantResult]
    history: list[dict[str, float]]
    train_samples: int
    val_samples: int
    val_source: str
    epochs: int
    seconds_training: float
    seconds_conversion: float
    preserve: str | None
    preserved: dict[str, Any]
    keras_path: str | None
    report_path: str
    warnings: list[str] = field(default_factory=list)

    def row(self, variant: str) -> VariantResult | None:
        """The comparison row of ``variant`` ("float", "ptq-int8", "qat-int8", "qat-keras")."""
        return next((r for r in self.comparison if r.variant == variant), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "artifact": self.artifact.to_dict(),
            "io_type": self.io_type.value,
            "comparison": [r.to_dict() for r in self.comparison],
            "validation": {"source": self.val_source, "samples": self.val_samples},
            "training": {"samples": self.train_samples, "epochs": self.epochs, "seconds": round(self.seconds_training, 1),
                         "history": self.history},
            "conversion_seconds": round(self.seconds_conversion, 2),
            "unsupported_layers": [p.to_dict() for p in self.unsupported],
            "float_ops": self.float_ops,
            "preserve": self.preserve,
            "preserved": self.preserved,
            "keras_model": self.keras_path,
            "plan": [p.to_dict() for p in self.plan],
            "ops": self.info.op_histogram(),
            "inputs": [t.to_dict() for t in self.info.inputs],
            "outputs": [t.to_dict() for t in self.info.outputs],
            "warnings": self.warnings,
            "report": self.report_path,
        }


def report_path_for_qat(artifact: str | os.PathLike[str]) -> Path:
    """``dir/model.tflite`` -> ``dir/model.qat.json`` (the comparison report)."""
    p = Path(artifact)
    return p.with_name(p.stem + ".qat.json")


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
    from edgekit.core.tfshim import keras

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


def _is(layer: Any, names: tuple[str, ...]) -> bool:
    from edgekit.core.tfshim import keras

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
    from edgekit.passes.qat_layers import FIXED_OUTPUT_RANGES, FUSABLE_ACTIVATIONS

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
        elif _is(layer, _ACTIVATION_LAYERS):
            act = activation_name(layer) or "linear"
            if act in QUANTIZABLE_ACTIVATIONS:
                steps[id(node)] = _Step(node, "activation", kind=act, fixed_range=FIXED_OUTPUT_RANGES.get(act))
            else:
                steps[id(node)] = _Step(node, "unsupported", reason=f"activation '{act}' has no int8 form edgekit simulates")
        elif _is(layer, _MERGE):
            steps[id(node)] = _Step(node, "merge", kind=type(layer).__name__)
        elif _is(layer, _MEAN):
            steps[id(node)] = _Step(node, "mean")
        elif _is(layer, _AFFINE):
            if _is(layer, ("Rescaling",)) or _last_axis(layer.axis, node):
                steps[id(node)] = _Step(node, "affine")
            else:
                steps[id(node)] = _Step(node, "unsupported", reason=f"normalizes over axis {layer.axis}, not the channel axis")
        elif _is(layer, _PASSTHROUGH):
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
    def effective_end(step: _Step) -> _Node:
        if step.bn is not None:
            return single_consumer(step.node)  # the folded BN node
        return step.node

    for step in steps.values():
        if step.role in ("passthrough", "folded"):
            step.quantize_output = False
            continue
        step.quantize_output = True
        fusing = step.role == "weighted" or (step.role == "merge" and step.kind in _FUSING_MERGES)
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


# ---------------------------------------------------------------------------------------------
# Preserving sparsity and clusters


@dataclass(frozen=True)
class _KernelRef:
    layer: Any
    attr: str


def _kernels(plan: QatPlan) -> list[_KernelRef]:
    refs = []
    for step in plan.steps:
        if step.role != "weighted":
            continue
        attrs = ("depthwise_kernel", "pointwise_kernel") if step.kind == "separable" else ("kernel",)
        refs.extend(_KernelRef(step.node.layer, a) for a in attrs)
    return refs


def sparsity_masks(plan: QatPlan) -> dict[tuple[int, str], np.ndarray]:
    """(id(layer), kernel attribute) -> mask (1 where the weight is non-zero) for every simulated kernel."""
    return {(id(r.layer), r.attr): (np.asarray(getattr(r.layer, r.attr)) != 0).astype(np.float32) for r in _kernels(plan)}


def _channel_view(kind: str, attr: str, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (weights per channel, channels), row-major; depthwise kernels merge their last two axes."""
    if kind == "depthwise" or attr == "depthwise_kernel":
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
    return kernel.reshape(-1, kernel.shape[-1])


@dataclass(frozen=True)
class Clusters:
    """A clustered kernel: ``centroids[indices]`` rebuilds it; ``values`` per kernel or per channel."""

    centroids: np.ndarray
    indices: np.ndarray
    per_channel: bool
    values: int


def cluster_centroids(plan: QatPlan) -> dict[tuple[int, str], Clusters]:
    """(id(layer), kernel attribute) -> :class:`Clusters` for every clustered kernel.

    A kernel is clustered when it has at most MAX_CLUSTERS distinct values and at most half as
    many as it has weights (one shared codebook), or when each output channel does (a codebook
    per channel, as ``edgekit cluster --per-channel`` makes). ``centroids`` is flat; ``indices``
    has the kernel's shape and points into it, so ``centroids[indices]`` rebuilds the kernel.
    """
    found = {}
    for step in plan.steps:
        if step.role != "weighted":
            continue
        attrs = ("depthwise_kernel", "pointwise_kernel") if step.kind == "separable" else ("kernel",)
        for attr in attrs:
            values = np.asarray(getattr(step.node.layer, attr))
            centroids, indices = np.unique(values, return_inverse=True)
            if len(centroids) <= MAX_CLUSTERS and 2 * len(centroids) <= values.size:
                found[(id(step.node.layer), attr)] = Clusters(centroids.astype(np.float32), indices.reshape(values.shape), False,
                                                              len(centroids))
                continue
            view = _channel_view(step.kind, attr, values)
            columns = [np.unique(view[:, c], return_inverse=True) for c in range(view.shape[1])]
            width = max(len(u) for u, _ in columns)
            if width > MAX_CLUSTERS or 2 * width > view.shape[0]:
                continue
            table = np.zeros((view.shape[1], width), np.float32)
            flat_index = np.zeros(view.shape, np.int64)
            for c, (uniq, inverse) in enumerate(columns):
                table[c, : len(uniq)] = uniq
                flat_index[:, c] = c * width + inverse.reshape(-1)
            found[(id(step.node.layer), attr)] = Clusters(table.reshape(-1), flat_index.reshape(values.shape), True, width)
    return found


def _constraints(plan: QatPlan, preserve: str | None) -> tuple[dict[tuple[int, str], Any], dict[str, Any]]:
    """The kernel constraints for ``preserve`` and a summary; raises if there is nothing to preserve."""
    if preserve is None:
        return {}, {}
    from edgekit.passes.qat_layers import KernelConstraint

    kernels = _kernels(plan)
    total = sum(int(np.prod(getattr(r.layer, r.attr).shape)) for r in kernels)
    if preserve == "sparsity":
        masks = sparsity_masks(plan)
        zeros = sum(int(m.size - m.sum()) for m in masks.values())
        fraction = zeros / max(total, 1)
        if fraction < MIN_SPARSITY:
            raise ModelError(
                f"--preserve sparsity: only {fraction:.1%} of the model's kernel weights are zero, so there is no sparsity to keep",
                hint="prune the model first (edgekit prune) or drop --preserve",
            )
        constraints = {key: KernelConstraint("sparsity", mask=mask) for key, mask in masks.items() if mask.min() == 0}
        return constraints, {"kernel_weights": total, "zero_weights": zeros, "sparsity": round(fraction, 4),
                             "layers": len(constraints)}
    clusters = cluster_centroids(plan)
    if not clusters:
        raise ModelError(
            f"--preserve clusters: no kernel of the model has {MAX_CLUSTERS} or fewer distinct values, so it is not clustered",
            hint="cluster the model first (edgekit cluster) or drop --preserve",
        )
    constraints = {key: KernelConstraint("clusters", centroids=c.centroids, indices=c.indices) for key, c in clusters.items()}
    counts = {
        f"{r.layer.name}.{r.attr}": f"{c.values} values" + (" per channel" if c.per_channel else "")
        for r in kernels if (c := clusters.get((id(r.layer), r.attr))) is not None
    }
    unclustered = [f"{r.layer.name}.{r.attr}" for r in kernels if (id(r.layer), r.attr) not in clusters]
    return constraints, {"clustered_kernels": counts, "unclustered_kernels": unclustered}


# ---------------------------------------------------------------------------------------------
# Building, training, exporting


@dataclass
class QatModel:
    """A QAT Keras model (``model``) and the plain float model whose variables it trains (``float_model``)."""

    model: Any
    float_model: Any
    plan: QatPlan
    quantizers: list[Any]
    weighted: list[Any]
    preserved: dict[str, Any]

    def set_mode(self, mode: str) -> None:
        for q in self.quantizers:
            q.mode = mode

    def finalize(self) -> None:
        """Writes preserved (masked/clustered) kernels back into the float model."""
        for layer in self.weighted:
            layer.finalize()


def _float_copy(keras_model: Any) -> Any:
    """A deep copy of the model (new variables), so QAT never changes the caller's model."""
    from edgekit.core.tfshim import keras

    k = keras()
    copy = k.models.clone_model(keras_model)
    copy.set_weights(keras_model.get_weights())
    return copy


def build_qat_model(keras_model: Any, preserve: str | None = None, momentum: float = 0.99) -> QatModel:
    """Rebuilds ``keras_model`` with fake-quantization; the caller's model is never modified.

    The returned :class:`QatModel` holds the QAT graph and a float copy of the model sharing its
    variables: training the QAT graph fine-tunes the copy, which ``--keep-keras`` saves.
    """
    from edgekit.passes.qat_layers import FakeQuant, QuantAffine, QuantWeighted
    from edgekit.core.tfshim import keras

    k = keras()
    float_model = _float_copy(keras_model)
    plan = plan_qat(float_model)
    constraints, preserved = _constraints(plan, preserve)
    quantizers: list[Any] = []
    weighted: list[Any] = []
    names: set[str] = set()

    def unique(name: str) -> str:
        base, i = name, 1
        while name in names:
            i += 1
            name = f"{base}_{i}"
        names.add(name)
        return name

    def fake_quant(tensor: Any, name: str, fixed_range=None) -> Any:
        if "float" not in str(tensor.dtype):
            return tensor
        fq = FakeQuant(fixed_range=fixed_range, momentum=momentum, name=unique(f"{name}_fq"))
        quantizers.append(fq)
        return fq(tensor)

    values: dict[tuple, Any] = {}
    new_inputs = []
    for key, source in plan.graph.inputs:
        tensor = k.Input(batch_shape=tuple(source.shape), dtype=source.dtype, name=unique(source.name.split(":")[0]))
        new_inputs.append(tensor)
        values[key] = fake_quant(tensor, tensor.name)

    for step in plan.steps:
        node, layer = step.node, step.node.layer
        local = {id(t): values[key] for t, key in zip(node.arg_tensors, node.inputs)}
        if step.role == "folded":
            out = [local[id(node.arg_tensors[0])]]
        elif step.role == "weighted":
            attrs = ("depthwise_kernel", "pointwise_kernel") if step.kind == "separable" else ("kernel",)
            mine = {a: constraints[(id(layer), a)] for a in attrs if (id(layer), a) in constraints}
            qlayer = QuantWeighted(step.kind, layer, bn=step.bn, constraints=mine, momentum=momentum, name=unique(f"{layer.name}_qat"))
            weighted.append(qlayer)
            out = [qlayer(local[id(node.arg_tensors[0])])]
            quantizers.extend(q for q in (qlayer.pre_activation, qlayer.mid) if q is not None)
        elif step.role in ("bn", "affine"):
            out = [QuantAffine(layer, name=unique(f"{layer.name}_qat"))(local[id(node.arg_tensors[0])])]
        else:
            args, kwargs = node.arguments.fill_in(local)
            result = layer(*args, **kwargs)
            out = list(result) if isinstance(result, (list, tuple)) else [result]
        if step.quantize_output:
            out = [fake_quant(t, layer.name, step.fixed_range) for t in out]
        for key, tensor in zip(node.outputs, out):
            values[key] = tensor

    new_outputs = [values[key] for key in plan.graph.outputs]
    model = k.Model(new_inputs if len(new_inputs) > 1 else new_inputs[0],
                    new_outputs if len(new_outputs) > 1 else new_outputs[0], name=f"{keras_model.name}_qat")
    return QatModel(model=model, float_model=float_model, plan=plan, quantizers=quantizers, weighted=weighted,
                    preserved=preserved)


def calibrate(qat_model: QatModel, x: np.ndarray, batch_size: int = 64, batches: int = 8) -> None:
    """Sets every activation range from float inference on up to ``batches`` batches of ``x``."""
    qat_model.set_mode("calibrate")
    try:
        for start in range(0, min(len(x), batch_size * batches), batch_size):
            qat_model.model(x[start: start + batch_size], training=False)
    finally:
        qat_model.set_mode("train")


def export_tflite(qat_model: QatModel, io_type: IOType | str = IOType.FLOAT) -> bytes:
    """Converts the trained QAT model to full-int8 TFLite bytes (ranges from the fake-quant ops).

    Ops that only unsupported (float) layers produce stay float; everything else is int8.

    Raises:
        ConversionError: with the converter's first error line.
    """
    from edgekit.core.tfshim import native_stderr_captured, tensorflow
    from edgekit.export.convert import _conversion_hint, _conversion_message, with_static_batch

    io_type = IOType(io_type)
    if io_type not in QAT_IO_TYPES:
        raise InputError(f"--io-type {io_type.value} is not available for full-int8 QAT", hint="use float, int8 or uint8")
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_keras_model(with_static_batch(qat_model.model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    io_dtype = {IOType.FLOAT: tf.float32, IOType.INT8: tf.int8, IOType.UINT8: tf.uint8}[io_type]
    converter.inference_input_type = io_dtype
    converter.inference_output_type = io_dtype
    log: list[str] = []
    try:
        with native_stderr_captured(log), contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # "Statistics for quantized inputs were expected": the fake-quant ops provide them
            warnings.simplefilter("ignore", UserWarning)
            flatbuffer = converter.convert()
    except Exception as exc:
        raise ConversionError(_conversion_message(exc, log, False), hint=_conversion_hint(exc, log, False)) from exc
    return bytes(flatbuffer)


def float_ops(info: TfliteInfo) -> list[str]:
    """Operators that compute in float (a non-constant float32 input or output), excluding I/O QUANTIZE/DEQUANTIZE."""
    found = []
    model_in = {t.name for t in info.inputs}
    model_out = {t.name for t in info.outputs}
    for op in info.operators:
        if op.subgraph != 0:
            continue
        ins = [info.tensors[i] for i in op.inputs if i >= 0]
        outs = [info.tensors[i] for i in op.outputs if i >= 0]
        if op.op == "QUANTIZE" and all(t.name in model_in for t in ins):
            continue
        if op.op == "DEQUANTIZE" and all(t.name in model_out for t in outs):
            continue
        if any(t.dtype == "FLOAT32" and not t.is_constant for t in ins + outs):
            found.append(f"{op.op}#{op.index}")
    return found


def _loss_for(outputs: np.ndarray) -> tuple[Any, str]:
    """Sparse cross-entropy on probabilities or logits, chosen from the model's outputs."""
    from edgekit.core.tfshim import keras

    k = keras()
    flat = outputs.reshape(outputs.shape[0], -1)
    probabilities = bool(np.all(flat >= 0) and np.allclose(flat.sum(axis=1), 1.0, atol=1e-3))
    return k.losses.SparseCategoricalCrossentropy(from_logits=not probabilities), "probabilities" if probabilities else "logits"


def _check_options(epochs: int, lr: float, batch_size: int, preserve: str | None, io_type: IOType, data: Any) -> None:
    if data is None:
        raise InputError("QAT needs training data (inputs and labels)", hint="pass --data TRAIN.npz (arrays x and y) or a class-per-folder image directory")
    if epochs is None or epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {epochs}", hint="QAT fine-tunes the model; use e.g. --epochs 2")
    if not (lr > 0 and math.isfinite(lr)):
        raise InputError(f"--lr must be a positive number, got {lr}", hint="use e.g. --lr 1e-4 (fine-tuning rates are small)")
    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}", hint="use e.g. --batch-size 64")
    if preserve is not None and preserve not in PRESERVE_CHOICES:
        raise InputError(f"--preserve must be one of {', '.join(PRESERVE_CHOICES)}, got '{preserve}'", hint="use --preserve sparsity or --preserve clusters")
    if io_type not in QAT_IO_TYPES:
        raise InputError(f"--io-type {io_type.value} is not available for full-int8 QAT", hint="use float, int8 or uint8")


def _check_model(loaded: LoadedModel) -> None:
    if loaded.keras_model is None:
        raise ModelError(
            f"{loaded.path} is a SavedModel; QAT needs the Keras model to rebuild and fine-tune",
            hint="pass the .keras or .h5 file the SavedModel was exported from",
        )
    model = loaded.keras_model
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelError(
            f"{loaded.path} has {len(model.inputs)} input(s) and {len(model.outputs)} output(s); QAT handles single-input, single-output classifiers",
            hint="fine-tune multi-input/output models from Python with edgekit.passes.qat.build_qat_model",
        )
    out_shape = tuple(model.outputs[0].shape)
    if len(out_shape) != 2 or (out_shape[1] or 0) < 2:
        raise ModelError(
            f"{loaded.path} outputs shape {out_shape}; QAT trains classifiers with a (batch, classes) output",
            hint="fine-tune other models from Python with edgekit.passes.qat.build_qat_model and your own loss",
        )


def _check_labels(dataset: Dataset, classes: int, what: str) -> np.ndarray:
    if dataset.y is None:
        raise DataError(f"{what} {dataset.source} has no labels; QAT trains against labels", hint="add an array y of class ids to the .npz (or use an image folder)")
    if int(dataset.y.max(initial=0)) >= classes:
        raise DataError(
            f"labels in {dataset.source} go up to {int(dataset.y.max())}, but the model has {classes} classes",
            hint="check the labels belong to this model's dataset",
        )
    return dataset.y


def _predict_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from edgekit.runtime.local import run_local

    run = run_local(path, x, runs=1, warmup=0)
    return run.outputs[0].reshape(len(x), -1)


def _variant(name: str, pred: np.ndarray, y: np.ndarray, float_pred: np.ndarray | None, size: int | None, note: str = "") -> VariantResult:
    from edgekit.measure.metrics import accuracy

    acc = accuracy(pred, y)
    agreement = float((pred.argmax(1) == float_pred.argmax(1)).mean() * 100.0) if float_pred is not None else None
    return VariantResult(name, round(acc.top1, 2), round(acc.top5, 2) if acc.top5 is not None else None, size,
                         round(agreement, 2) if agreement is not None else None, note)


def qat(
    model: str | os.PathLike[str] | LoadedModel,
    output: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | Dataset | None,
    epochs: int,
    val: str | os.PathLike[str] | Dataset | None = None,
    keep_keras: str | os.PathLike[str] | None = None,
    io_type: IOType | str = IOType.FLOAT,
    preserve: str | None = None,
    preprocessing: Preprocessing | None = None,
    lr: float | None = 1e-4,
    batch_size: int | None = 64,
    seed: int = 0,
    val_fraction: float = 0.1,
    compare_ptq: bool = True,
    ptq_samples: int = 200,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    progress: Callable[[int, dict[str, float]], None] | None = None,
    distill: bool = False,
) -> QatResult:
    """Fine-tunes ``model`` with simulated int8 quantization and writes a full-int8 ``output`` (.tflite).

    Beside ``output`` it writes the manifest (``.json``, as ``edgekit quantize`` does) and the
    report (``.qat.json``) comparing float, PTQ int8 and QAT int8 top-1 on the validation data
    (``val``, or a seeded ``val_fraction`` of ``data`` held out from training).

    Args:
        model: a Keras 3 ``.keras`` or ``.h5`` file (or a loaded model) with a classifier output.
        output: the ``.tflite`` file to write.
        data: training inputs with labels (``.npz`` with ``x``/``y``, or an image folder).
        epochs: fine-tuning epochs (at least 1).
        val: validation data; by default ``val_fraction`` of ``data`` is held out.
        keep_keras: also save the fine-tuned float model (plain Keras layers, no fake-quant) here.
        io_type: ``float``, ``int8`` or ``uint8`` model inputs and outputs.
        preserve: ``"sparsity"`` keeps zero weights zero; ``"clusters"`` keeps each kernel's
            weights on its clusters (only the centroid values train).
        preprocessing: scale/mean/std applied to raw inputs (recorded in the manifest).
        lr, batch_size, seed: the initial Adam learning rate (decayed to 0 by a cosine schedule over
            all epochs), the batch size, and the seed for everything random.
        compare_ptq: also convert with post-training int8 for the comparison table.
        progress: called after each epoch with (epoch, logs).
        distill: fine-tune with the float model as teacher (:func:`edgekit.passes.distill.fit_with_teacher`,
            T=1, alpha=0.5) instead of the labels alone.

    Raises:
        InputError, DataError, ModelError: before any training, for bad options, data or models.
        ConversionError: the converter failed on the trained model.
    """
    io_type = IOType(io_type)
    lr = 1e-4 if lr is None else lr
    batch_size = 64 if batch_size is None else batch_size
    _check_options(epochs, lr, batch_size, preserve, io_type, data)
    if not 0 < val_fraction < 1:
        raise InputError(f"val_fraction must be between 0 and 1, got {val_fraction}", hint="use e.g. 0.1")
    src_path = model.path if isinstance(model, LoadedModel) else model
    data_path = data.source if isinstance(data, Dataset) else data
    val_path = val.source if isinstance(val, Dataset) else val
    out = check_output_path(output, inputs=[src_path, data_path, val_path], force=force, suffixes=(".tflite",),
                            sidecars=[manifest_path_for(output), report_path_for_qat(output)])
    keras_out = None
    if keep_keras is not None:
        keras_out = check_output_path(keep_keras, inputs=[src_path, data_path, val_path, output], force=force, suffixes=(".keras",))
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects)
    _check_model(loaded)
    keras_model = loaded.keras_model
    classes = int(keras_model.outputs[0].shape[1])
    pre = preprocessing or Preprocessing()

    def load(source, what):
        ds = source if isinstance(source, Dataset) else load_dataset(source, input_shape=loaded.input_shape, preprocessing=pre,
                                                                   x_key=x_key, y_key=y_key)
        _check_labels(ds, classes, what)
        return ds

    train = load(data, "training data")
    pre = train.preprocessing
    x_train, y_train = train.x, train.y
    if val is not None:
        validation = load(val, "validation data")
        x_val, y_val, val_source = validation.x, validation.y, validation.source
    else:
        if len(train) < 10:
            raise DataError(f"training data {train.source} has {len(train)} samples; holding out validation data needs at least 10",
                            hint="pass --val VAL.npz or more training data")
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(train))
        n_val = max(1, int(round(len(train) * val_fraction)))
        x_val, y_val = x_train[np.sort(order[:n_val])], y_train[np.sort(order[:n_val])]
        x_train, y_train = x_train[np.sort(order[n_val:])], y_train[np.sort(order[n_val:])]
        val_source = f"{train.source} (held-out {n_val} samples, seed {seed})"

    from edgekit.core.tfshim import keras

    k = keras()
    k.utils.set_random_seed(seed)
    qm = build_qat_model(keras_model, preserve=preserve)  # raises before training if nothing can be quantized
    float_val = keras_model.predict(x_val, batch_size=256, verbose=0)
    loss, output_kind = _loss_for(float_val)
    notes: list[str] = []
    if qm.plan.unsupported:
        notes.append("kept float (unsupported): " + ", ".join(f"{p.name} ({p.class_name}: {p.float_part or p.detail})" for p in qm.plan.unsupported))

    calibrate(qm, x_train[np.random.default_rng(seed).permutation(len(x_train))[: 8 * batch_size]], batch_size=batch_size)
    # cosine decay from lr to 0 over the whole fine-tuning: the model ends where the rate is small
    steps = epochs * math.ceil(len(x_train) / batch_size)
    schedule = k.optimizers.schedules.CosineDecay(lr, decay_steps=max(1, steps))
    qm.model.compile(optimizer=k.optimizers.Adam(learning_rate=schedule), loss=loss, metrics=["accuracy"])
    history: list[dict[str, float]] = []

    def on_epoch_end(epoch, logs):
        entry = {key: float(v) for key, v in (logs or {}).items()}
        history.append(entry)
        if progress is not None:
            progress(epoch + 1, entry)

    started = time.perf_counter()
    if distill:  # the float model teaches the fake-quantized one; its outputs are computed once
        from edgekit.passes.distill import RECOVERY_ALPHA, RECOVERY_TEMPERATURE, fit_with_teacher

        fit_with_teacher(qm.model, keras_model, (x_train, y_train), epochs=epochs, batch_size=batch_size,
                         optimizer=k.optimizers.Adam(learning_rate=schedule), seed=seed, temperature=RECOVERY_TEMPERATURE,
                         alpha=RECOVERY_ALPHA, callbacks=[k.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
    else:
        qm.model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                     callbacks=[k.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
    seconds_training = time.perf_counter() - started
    qm.finalize()

    started = time.perf_counter()
    flatbuffer = export_tflite(qm, io_type)
    seconds_conversion = time.perf_counter() - started
    info = parse_tflite_bytes(flatbuffer, str(out))
    leftover = float_ops(info)
    if leftover and not qm.plan.unsupported:
        notes.append(f"{len(leftover)} op(s) stayed float although every layer was simulated: {', '.join(leftover[:8])}")

    with tempfile.TemporaryDirectory(prefix="edgekit-qat-") as tmp:  # evaluate before writing any output
        staged = Path(tmp) / out.name
        staged.write_bytes(flatbuffer)
        comparison = _compare(loaded, qm, staged, len(flatbuffer), x_val, y_val, float_val, x_train, io_type, compare_ptq,
                              ptq_samples, seed, notes)
    written: list[Path] = []
    try:
        write_bytes_atomic(out, flatbuffer)
        written.append(out)
        artifact = Artifact(path=str(out), sha256=sha256_file(out), size=size_info(out), manifest_path=str(manifest_path_for(out)))
        if keras_out is not None:
            with native_quiet(), atomic_path(keras_out) as tmp_keras:
                qm.float_model.save(tmp_keras)
            written.append(keras_out)
        options = {"mode": "qat-int8", "io_type": io_type.value, "epochs": epochs, "lr": lr, "batch_size": batch_size,
                   "seed": seed, "preserve": preserve, "loss": f"sparse_categorical_crossentropy ({output_kind})", "distill": distill}
        manifest = Manifest(
            artifact={"file": out.name, "sha256": artifact.sha256, "bytes": artifact.size.bytes, "gzip_bytes": artifact.size.gzip_bytes},
            inputs=[t.to_dict() for t in info.inputs],
            outputs=[t.to_dict() for t in info.outputs],
            preprocessing=pre.to_dict(),
            labels=list(train.labels) if train.labels else None,
            source={"path": str(src_path), "format": loaded.format, "sha256": loaded.sha256, "parameters": loaded.parameter_count},
            data={"path": str(train.source), "sha256": train.sha256, "samples": len(train), "training_samples": int(len(x_train)),
                  "validation": val_source},
            options=options,
            extra={"qat": {"unsupported_layers": [p.to_dict() for p in qm.plan.unsupported], "float_ops": leftover,
                           "preserved": qm.preserved, "report": report_path_for_qat(out).name,
                           "keras_model": str(keras_out) if keras_out else None}},
        )
        write_json_atomic(manifest_path_for(out), manifest.to_dict())
        written.append(manifest_path_for(out))
        result = QatResult(
            artifact=artifact, info=info, io_type=io_type, plan=qm.plan.layers, unsupported=qm.plan.unsupported,
            float_ops=leftover, comparison=comparison, history=history, train_samples=int(len(x_train)),
            val_samples=int(len(x_val)), val_source=val_source, epochs=epochs, seconds_training=seconds_training,
            seconds_conversion=seconds_conversion, preserve=preserve, preserved=_preserved_summary(qm, info, flatbuffer),
            keras_path=str(keras_out) if keras_out else None, report_path=str(report_path_for_qat(out)), warnings=notes,
        )
        write_json_atomic(report_path_for_qat(out), result.to_dict())
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)  # never leave a model without its manifest and report
        raise
    return result


@contextlib.contextmanager
def native_quiet():
    """Silences Keras' stdout chatter and native logs around a call (edgekit's one silencer, core/tfshim)."""
    from edgekit.core.tfshim import native_output_captured

    with native_output_captured():
        yield


def _compare(loaded, qm, staged, size_bytes, x_val, y_val, float_val, x_train, io_type, compare_ptq, ptq_samples, seed, notes) -> list[VariantResult]:
    """Float, PTQ int8, QAT int8 (TFLite) and QAT simulated in Keras, on the validation data."""
    from edgekit.export.convert import convert
    from edgekit.core.datatypes import QuantMode

    float_pred = float_val.reshape(len(x_val), -1)
    float_bytes = None
    rows = [_variant("float", float_pred, y_val, None, float_bytes, "Keras float32")]
    if compare_ptq:
        calib = calibration_sample(Dataset(x=x_train, y=None, source="train", sha256=""), ptq_samples, seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                ptq_bytes = convert(loaded, QuantMode.INT8, calibration=calib, io_type=io_type)
        except ConversionError as exc:
            notes.append(f"PTQ int8 comparison skipped: {exc.one_line()}")
        else:
            with tempfile.TemporaryDirectory(prefix="edgekit-qat-") as tmp:
                ptq_path = Path(tmp) / "ptq_int8.tflite"
                ptq_path.write_bytes(ptq_bytes)
                rows.append(_variant("ptq-int8", _predict_tflite(ptq_path, x_val), y_val, float_pred, len(ptq_bytes),
                                     f"post-training, {len(calib)} calibration samples"))
    qat_pred = _predict_tflite(staged, x_val)
    rows.append(_variant("qat-int8", qat_pred, y_val, float_pred, size_bytes, "this file"))
    sim = qm.model.predict(x_val, batch_size=256, verbose=0).reshape(len(x_val), -1)
    agreement = float((sim.argmax(1) == qat_pred.argmax(1)).mean() * 100.0)
    rows.append(_variant("qat-keras", sim, y_val, float_pred, None, f"simulated in Keras; {agreement:.1f}% same top-1 as the file"))
    return rows


def _preserved_summary(qm: QatModel, info: TfliteInfo, flatbuffer: bytes) -> dict[str, Any]:
    """The preserve summary plus the zeros measured in the exported int8 weights."""
    summary = dict(qm.preserved)
    zeros, total = int8_weight_zeros(flatbuffer)
    summary["exported_int8_weights"] = total
    summary["exported_int8_zero_fraction"] = round(zeros / total, 4) if total else None
    return summary


def int8_weight_zeros(flatbuffer: bytes) -> tuple[int, int]:
    """(zeros, elements) over the constant int8 tensors (the weights) of a TFLite flatbuffer.

    Call it on bytes already checked by :func:`edgekit.core.tflite_file.parse_tflite_bytes`.
    """
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAs(flatbuffer, 0)
    sub = model.Subgraphs(0)
    zeros = total = 0
    for i in range(sub.TensorsLength()):
        tensor = sub.Tensors(i)
        if tensor.Type() != schema.TensorType.INT8:
            continue
        buf = model.Buffers(tensor.Buffer())
        if buf.DataLength():
            values = buf.DataAsNumpy()
        elif buf.Offset() > 1:
            values = np.frombuffer(flatbuffer, dtype=np.uint8, count=buf.Size(), offset=buf.Offset())
        else:
            continue
        total += int(values.size)
        zeros += int((values == 0).sum())
    return zeros, total
