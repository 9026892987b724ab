"""What edgekit knows about Keras graphs, in one place.

- **Layer families** (class names): which layers have a kernel a pass compresses, carry channels
  through, merge tensors...; **layer access** by *path* (``conv1``, ``backbone/conv1`` in a nested
  model): :func:`iter_layers`, :func:`kernel_variable`, :func:`clone_model`.
- **The clustered-kernel rule**: a kernel is clustered when it holds at most
  :data:`MAX_SHARED_VALUES` distinct values and at most a quarter as many as it has weights
  (:func:`is_clustered`); export's weight choice, QAT's ``preserve=clusters`` and cluster
  reports all use it.
- **Channel groups** (:func:`channel_groups`): one union-find walk over the graph that finds the
  sets of tensors whose channels must change together. Channel pruning (``PRUNING_RULES``) and
  width-derived distillation students (``WIDTH_RULES``) both read it.

Keras is imported inside functions only: importing this module costs nothing.

Example:
    >>> groups = channel_groups(model)                       # doctest: +SKIP
    >>> free, why = groups.free_groups({"conv1", "conv2"})   # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.core.errors import InputError, ModelError
from edgekit.core.tfshim import functional_graph, graph_nodes, keras

# ----------------------------------------------------------------------------------------------
# Layer families (Keras class names)
# ----------------------------------------------------------------------------------------------

#: Layers whose main kernel is pruned or clustered, and which weight that is (tfmot's choice too:
#: SeparableConv keeps its small depthwise kernel dense and compresses the pointwise one).
KERNEL_OF: dict[str, str] = {"Dense": "kernel", "Conv1D": "kernel", "Conv2D": "kernel", "Conv3D": "kernel", "DepthwiseConv1D": "kernel",
                             "DepthwiseConv2D": "kernel", "SeparableConv1D": "pointwise_kernel", "SeparableConv2D": "pointwise_kernel"}
#: Layers with weights that are understood but not compressed (they are not "unsupported").
NORMALIZATION = frozenset({"BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization", "PReLU"})
#: Keras classes that are models (containers of layers) rather than layers.
CONTAINERS = frozenset({"Functional", "Sequential", "Model"})
#: Layers whose output channel count is set by one config field (what a width multiplier scales).
WIDTH_FIELDS: dict[str, str] = {
    "Dense": "units", "Conv1D": "filters", "Conv2D": "filters", "Conv3D": "filters",
    "Conv1DTranspose": "filters", "Conv2DTranspose": "filters", "Conv3DTranspose": "filters",
    "SeparableConv1D": "filters", "SeparableConv2D": "filters",
}
#: Producers whose output channels channel pruning can slice (kernel (..., in, out)).
CHANNEL_PRODUCERS = frozenset({"Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D"})
DEPTHWISE = frozenset({"DepthwiseConv1D", "DepthwiseConv2D"})
#: Merges that combine same-shaped inputs element-wise (their inputs share channels).
ELEMENTWISE_MERGES = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})
MERGES = ELEMENTWISE_MERGES | {"Concatenate"}
#: Merges TFLite fuses an activation into.
FUSING_MERGES = frozenset({"Add", "Subtract", "Multiply"})
ACTIVATION_LAYERS = frozenset({"ReLU", "Activation", "Softmax", "LeakyReLU", "ELU", "PReLU"})
#: Activations that mix the channel axis (a channel removed changes every other channel).
CHANNEL_MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})
GLOBAL_MEAN_POOLING = frozenset({"GlobalAveragePooling1D", "GlobalAveragePooling2D"})
AFFINE_PREPROCESSING = frozenset({"Rescaling", "Normalization"})

_DIMS = ("1D", "2D", "3D")
_POOLING = {f"{kind}Pooling{d}" for kind in ("Max", "Average") for d in _DIMS}
_GLOBAL_POOLING = {f"Global{kind}Pooling{d}" for kind in ("Max", "Average") for d in _DIMS}
_PADDING = {f"{kind}{d}" for kind in ("ZeroPadding", "Cropping", "UpSampling") for d in _DIMS}
_NOISE = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout",
          "AlphaDropout", "ActivityRegularization"}
_AUGMENTATION = {"RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast", "RandomBrightness", "RandomCrop"}

#: Weight-less single-input layers whose output keeps the input's channels, in the same order.
CHANNEL_PASS_THROUGH = frozenset({"ReLU", "LeakyReLU", "ELU", "Identity", "Resizing"} | _NOISE | _POOLING | _GLOBAL_POOLING | _PADDING)
#: Single-input layers whose output has the input's channels (or a fixed multiple): a layer of a
#: freshly initialised, narrower model built from the config follows its input's width.
CHANNEL_PRESERVING = frozenset(
    {"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Identity", "Rescaling", "Masking", "Flatten",
     "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization"}
    | _NOISE | _POOLING | _GLOBAL_POOLING | _PADDING | DEPTHWISE | _AUGMENTATION
)
#: Layers whose int8 TFLite kernels keep their input's quantization scale (QAT passes them through).
SCALE_PRESERVING = frozenset({
    "Reshape", "Flatten", "MaxPooling1D", "MaxPooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
    "AveragePooling1D", "AveragePooling2D", "ZeroPadding1D", "ZeroPadding2D", "Cropping1D", "Cropping2D",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Permute", "RepeatVector", "UpSampling1D", "UpSampling2D", "Identity", "InputLayer",
})

# ----------------------------------------------------------------------------------------------
# Layer access
# ----------------------------------------------------------------------------------------------


def is_container(layer: Any) -> bool:
    """Whether ``layer`` is a model nested in another (a container of layers)."""
    return isinstance(layer, keras().Model)


def iter_layers(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """All layers of ``model`` (descending into nested models) as ``(path, layer)``, in order.

    Input layers and the nested models themselves are left out.
    """
    found: list[tuple[str, Any]] = []
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        path = f"{prefix}{layer.name}"
        if is_container(layer):
            found.extend(iter_layers(layer, prefix=path + "/"))
        else:
            found.append((path, layer))
    return found


def layers_by_path(model: Any) -> dict[str, Any]:
    """``{path: layer}`` for every layer of ``model`` (see :func:`iter_layers`)."""
    return dict(iter_layers(model))


def kernel_variable(layer: Any) -> Any:
    """The variable a pass compresses in ``layer`` (None if the layer has none)."""
    name = KERNEL_OF.get(type(layer).__name__)
    if name is None:
        return None
    if name == "kernel" and type(layer).__name__ == "DepthwiseConv2D" and not hasattr(layer, "kernel"):
        name = "depthwise_kernel"  # older Keras 3 releases
    var = getattr(layer, name, None)
    if var is None:
        for w in layer.weights:
            if w.name == name:
                return w
    return var


def kernels(model: Any) -> dict[str, np.ndarray]:
    """The compressible kernel of every supported layer, by layer path (numpy copies)."""
    out: dict[str, np.ndarray] = {}
    for path, layer in iter_layers(model):
        var = kernel_variable(layer)
        if var is not None:
            out[path] = np.array(var.numpy())
    return out


def unsupported_layers(model: Any) -> list[tuple[str, str]]:
    """Layers with weights that no pass compresses: ``(path, class name)``."""
    return [
        (path, type(layer).__name__) for path, layer in iter_layers(model)
        if layer.weights and type(layer).__name__ not in KERNEL_OF and type(layer).__name__ not in NORMALIZATION
    ]


def clone_model(model: Any, config: dict[str, Any] | None = None) -> Any:
    """A new model built from ``model``'s config (or ``config``) with copies of its weights.

    Nothing is shared with ``model``: layers and variables are new objects. When ``config`` is
    given the weights are not copied (the caller copies sliced weights itself).
    """
    k = keras()
    cls = k.Sequential if isinstance(model, k.Sequential) else k.Model
    new = cls.from_config(config if config is not None else model.get_config())
    if config is None:
        new.set_weights([np.array(w) for w in model.get_weights()])
    return new


def compile_regex(pattern: str | None, setting: str, *, settings: tuple[str, ...] | None = None) -> re.Pattern[str] | None:
    """``pattern`` compiled; InputError naming ``setting`` if it is not a regular expression."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(f"{setting} '{pattern}' is not a valid regular expression ({exc})", hint="e.g. layers 'conv|fc1'",
                         settings=(setting,) if settings is None else settings) from None


def _some(candidates: list[str]) -> str:
    return ", ".join(candidates[:12]) + (", ..." if len(candidates) > 12 else "")


def select_paths(candidates: list[str], layers: str | None, skip: str | None) -> list[str]:
    """Candidates whose path matches ``layers`` (all if None) and not ``skip``; errors if a regex selects nothing."""
    include = compile_regex(layers, "layers")
    exclude = compile_regex(skip, "skip")
    if not candidates:
        raise ModelError("the model has no layer this pass can compress (Dense, Conv1D/2D, DepthwiseConv2D, SeparableConv2D)",
                         hint="check the model; other layer types are left as they are")
    chosen = [p for p in candidates if include is None or include.search(p)]
    if include is not None and not chosen:
        raise InputError(f"layers '{layers}' selects no layer (candidates: {_some(candidates)})",
                         hint="regexes are searched in layer paths such as 'conv1' or 'backbone/conv1'", settings=("layers",))
    if exclude is not None:
        if not any(exclude.search(p) for p in candidates):
            raise InputError(f"skip '{skip}' matches no layer (candidates: {_some(candidates)})",
                             hint="fix the regex or drop skip", settings=("skip",))
        chosen = [p for p in chosen if not exclude.search(p)]
    if not chosen:
        raise InputError("layers/skip leave no layer to compress", hint="loosen skip or widen layers", settings=("layers", "skip"))
    return chosen


# ----------------------------------------------------------------------------------------------
# The clustered-kernel rule
# ----------------------------------------------------------------------------------------------

MAX_SHARED_VALUES = 256  # at most this many distinct values...
SHARED_VALUE_RATIO = 4  # ...and at most one per SHARED_VALUE_RATIO weights
MIN_CODEBOOK_KERNEL = 256  # the model-level rule looks only at kernels with at least this many weights


def shares_values(distinct: int, size: int) -> bool:
    """The rule: ``distinct`` values over ``size`` weights make a clustered kernel."""
    return distinct <= MAX_SHARED_VALUES and distinct * SHARED_VALUE_RATIO <= size


def distinct_values(kernel: np.ndarray) -> int:
    """How many different values ``kernel`` holds."""
    return int(np.unique(np.asarray(kernel)).size)


def channel_view(layer: Any, kernel: np.ndarray) -> np.ndarray:
    """The kernel as (weights per channel, output channels); depthwise kernels merge their last two axes.

    ``layer`` is the layer or its class name. The view keeps the kernel's row-major order, so
    ``view.reshape(-1)`` is ``kernel.reshape(-1)``.
    """
    if (layer if isinstance(layer, str) else type(layer).__name__).startswith("Depthwise"):
        return kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])
    return kernel.reshape(-1, kernel.shape[-1])


def channel_distinct_values(layer: Any, kernel: np.ndarray) -> int:
    """The most distinct values any output channel of ``kernel`` holds (``layer``: the layer or its class name)."""
    return max(int(np.unique(col).size) for col in channel_view(layer, np.asarray(kernel)).T)


def is_clustered(kernel: np.ndarray) -> bool:
    """Whether ``kernel`` shares a few values (one codebook for the whole kernel)."""
    kernel = np.asarray(kernel)
    return shares_values(distinct_values(kernel), kernel.size)


def is_clustered_per_channel(layer: Any, kernel: np.ndarray) -> bool:
    """Whether every output channel of ``kernel`` shares a few values (a codebook per channel)."""
    view = channel_view(layer, np.asarray(kernel))
    return shares_values(channel_distinct_values(layer, kernel), view.shape[0])


@dataclass(frozen=True)
class ClusteredKernel:
    """A clustered kernel: its layer path, its distinct values (per channel with ``per_channel``)."""

    path: str
    values: int
    per_channel: bool


def clustered_kernels(model: Any, *, per_channel: bool = True, min_size: int = 0) -> dict[str, ClusteredKernel]:
    """Every compressible kernel of ``model`` that is clustered, by layer path.

    A kernel counts per layer (:func:`is_clustered`), else, with ``per_channel``, per output
    channel (:func:`is_clustered_per_channel`). Kernels with fewer than ``min_size`` weights are
    not looked at.
    """
    found: dict[str, ClusteredKernel] = {}
    for path, layer in iter_layers(model):
        var = kernel_variable(layer)
        if var is None:
            continue
        w = np.asarray(var.numpy())
        if w.size < min_size:
            continue
        if is_clustered(w):
            found[path] = ClusteredKernel(path, distinct_values(w), False)
        elif per_channel and is_clustered_per_channel(layer, w):
            found[path] = ClusteredKernel(path, channel_distinct_values(layer, w), True)
    return found


def codebook_per_layer(model: Any) -> dict[str, int] | None:
    """``{path: distinct values}`` when *every* large kernel is clustered with one codebook, else None.

    That is the signature of a model clustered per layer (``edgekit cluster`` without
    ``per_channel``), whose int8 export keeps its shared values only with per-tensor scales. None
    for a normal model, one clustered per channel, or one without kernels of
    :data:`MIN_CODEBOOK_KERNEL` weights.
    """
    large = [p for p, w in kernels(model).items() if w.size >= MIN_CODEBOOK_KERNEL]
    found = clustered_kernels(model, per_channel=False, min_size=MIN_CODEBOOK_KERNEL)
    if not large or set(found) != set(large):
        return None
    return {p: found[p].values for p in large}


# ----------------------------------------------------------------------------------------------
# Channel groups: one union-find analysis for channel pruning and width-derived students
# ----------------------------------------------------------------------------------------------

# A layout says which channel of which group sits at each position of a tensor's last axis:
# ("g", gid) plain group; ("cat", (layouts...)) concatenation; ("rep", S, layout) flattened
# spatial positions, index s*C + c; ("exp", m, layout) depth multiplier, index c*m + j.
Layout = tuple


@dataclass(frozen=True)
class ChannelRules:
    """What a use of the analysis can follow.

    Channel pruning slices trained weights, so only layers whose weights it knows how to slice
    pass channels on; a width-derived student is initialised fresh, so any layer that keeps its
    input's channels does, and a Reshape that keeps the channel axis (a squeeze-excite block) too.
    """

    producers: frozenset[str]  # layers whose output channels are set by their config
    pass_through: frozenset[str]  # single-input layers whose output keeps the input's channels
    weighted_pass_through: bool  # pass-through layers may have weights (they are re-created)
    follow_reshape: bool  # a Reshape keeping the channel axis carries its input's channels
    mixing_blocks: bool  # a softmax over the channels fixes them
    input_reason: str
    output_reason: str


PRUNING_RULES = ChannelRules(CHANNEL_PRODUCERS, CHANNEL_PASS_THROUGH, False, False, True, "is the model input", "is a model output")
WIDTH_RULES = ChannelRules(frozenset(WIDTH_FIELDS), CHANNEL_PRESERVING - DEPTHWISE - {"Flatten"}, True, True, False,
                           "model input", "final classifier")


@dataclass
class ChannelGroup:
    """Tensors that share one channel set: its size, the layers producing it, why it is fixed."""

    size: int
    producers: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@dataclass
class LayerUse:
    """How one layer's weights depend on channel layouts."""

    path: str
    kind: str  # producer, depthwise, batchnorm, prelu, other
    layer_class: str
    in_layout: Any  # a Layout, None where the layer's channels are not followed
    out_layout: Any
    depth_multiplier: int = 1


@dataclass
class ChannelGroups:
    """The channel groups of a model and how each layer uses them (from :func:`channel_groups`)."""

    groups: dict[int, ChannelGroup]
    parent: dict[int, int]
    uses: dict[str, LayerUse]
    bn_after: dict[str, str]  # producer path -> the BatchNormalization right after it
    nested_inputs: list[tuple[str, int, Layout]]
    layer_objects: dict[str, Any]
    reshapes: dict[str, Layout] = field(default_factory=dict)  # Reshapes that carry channels (WIDTH_RULES)

    def find(self, gid: int) -> int:
        """The root of a group (union-find)."""
        while self.parent[gid] != gid:
            self.parent[gid] = self.parent[self.parent[gid]]
            gid = self.parent[gid]
        return gid

    def roots(self) -> list[int]:
        return sorted({self.find(g) for g in self.groups})

    def size(self, layout: Layout) -> int:
        kind = layout[0]
        if kind == "g":
            return self.groups[self.find(layout[1])].size
        if kind == "cat":
            return sum(self.size(part) for part in layout[1])
        return layout[1] * self.size(layout[2])  # rep, exp

    def indices(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Positions along a tensor's last axis that survive when groups keep ``keep``."""
        kind = layout[0]
        if kind == "g":
            root = self.find(layout[1])
            return keep.get(root, np.arange(self.groups[root].size))
        if kind == "cat":
            parts, offset = [], 0
            for part in layout[1]:
                parts.append(offset + self.indices(part, keep))
                offset += self.size(part)
            return np.concatenate(parts)
        inner = self.indices(layout[2], keep)
        if kind == "rep":
            n = self.size(layout[2])
            return (np.arange(layout[1])[:, None] * n + inner[None, :]).reshape(-1)
        m = layout[1]  # exp
        return (inner[:, None] * m + np.arange(m)[None, :]).reshape(-1)

    def blocked_reason(self, layout: Layout) -> str | None:
        """Why the channels of a tensor with this layout are fixed (the first reason), None if they are free."""
        if layout[0] == "cat":
            return next((r for part in layout[1] if (r := self.blocked_reason(part)) is not None), None)
        if layout[0] != "g":
            return self.blocked_reason(layout[2])
        blocked = self.groups[self.find(layout[1])].blocked
        return blocked[0] if blocked else None

    def free_groups(self, selected: set[str]) -> tuple[dict[int, ChannelGroup], dict[int, str]]:
        """Groups whose channels may change, and for every other produced group the reason it cannot."""
        ok: dict[int, ChannelGroup] = {}
        why: dict[int, str] = {}
        for root in self.roots():
            group = self.groups[root]
            if not group.producers:
                continue
            if group.blocked:
                why[root] = group.blocked[0]
            elif any(p not in selected for p in group.producers):
                skipped = [p for p in group.producers if p not in selected]
                why[root] = f"shares channels with unselected layer '{skipped[0]}'"
            elif group.size < 2:
                why[root] = "has a single channel"
            else:
                ok[root] = group
        return ok, why


def _last_axis_channels(layer: Any, rank: int) -> bool:
    """Whether ``layer`` works on the last (channel) axis of a rank-``rank`` input."""
    axis = getattr(layer, "axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis == -1 or axis == rank - 1


def _activation_of(op: Any) -> str:
    return getattr(getattr(op, "activation", None), "__name__", "")


def _keeps_channel_axis(op: Any, tensor: Any) -> bool:
    """Whether a Reshape keeps its input's last axis, e.g. (C,) -> (1, 1, C)."""
    target = getattr(op, "target_shape", None)
    shape = tuple(tensor.shape[1:])
    if not target or not shape or shape[-1] is None or None in shape[:-1]:
        return False
    return int(target[-1]) == int(shape[-1]) and int(np.prod(shape[:-1] or (1,))) == int(np.prod(tuple(target[:-1]) or (1,)))


def channel_groups(model: Any, rules: ChannelRules = PRUNING_RULES) -> ChannelGroups:
    """Walks ``model`` (and nested models) once and returns its channel groups.

    A producer's output starts a group; pass-through layers carry it; element-wise merges tie
    their inputs' groups together (union-find), so a residual stream changes as one; Concatenate
    and Flatten map their inputs' channels into their output's positions. A group is *blocked*
    (its channels fixed) by a model input or output, a shared layer, or a layer the rules cannot
    follow; the first reason is kept for reports.
    """
    k = keras()
    groups: dict[int, ChannelGroup] = {}
    parent: dict[int, int] = {}
    result = ChannelGroups(groups, parent, {}, {}, [], {})
    produced_by: dict[int, str] = {}  # tensor id -> producer path (direct output)
    calls: dict[str, int] = {}

    def new_group(size: int, producer: str | None = None, blocked: str | None = None) -> Layout:
        gid = len(groups)
        groups[gid] = ChannelGroup(size=int(size), producers=[producer] if producer else [], blocked=[blocked] if blocked else [])
        parent[gid] = gid
        return ("g", gid)

    def group_ids(layout: Layout) -> list[int]:
        if layout[0] == "g":
            return [result.find(layout[1])]
        if layout[0] == "cat":
            return [g for part in layout[1] for g in group_ids(part)]
        return group_ids(layout[2])

    def block(layout: Layout, reason: str) -> None:
        for gid in group_ids(layout):
            groups[gid].blocked.append(reason)

    def union(a: int, b: int) -> int:
        ra, rb = result.find(a), result.find(b)
        if ra == rb:
            return ra
        if groups[ra].size != groups[rb].size:
            raise ModelError(f"channel groups of different sizes ({groups[ra].size}, {groups[rb].size}) meet in an element-wise layer")
        parent[rb] = ra
        groups[ra].producers += groups[rb].producers
        groups[ra].blocked += groups[rb].blocked
        return ra

    def channels(tensor: Any) -> int:
        return int(tensor.shape[-1]) if tensor.shape[-1] is not None else 0

    def walk(fn_model: Any, prefix: str, in_layouts: list[Layout]) -> list[Layout]:
        graph = functional_graph(fn_model)
        if graph is None:
            raise ModelError(f"model '{fn_model.name}' is not built", hint="build it (call it on an input) before changing its channels")
        layout: dict[int, Layout] = {id(t): lay for t, lay in zip(graph.inputs, in_layouts)}
        for node in graph_nodes(graph):
            op = node.operation
            if op is None or node.is_input:
                continue
            ins, outs = list(node.input_tensors), list(node.outputs)
            for tensor, lay in zip(outs, visit(op, prefix + op.name, ins, outs, [layout[id(t)] for t in ins])):
                layout[id(tensor)] = lay
        return [layout[id(t)] for t in graph.outputs]

    def visit(op: Any, path: str, ins: list[Any], outs: list[Any], in_lays: list[Layout]) -> list[Layout]:
        cls = type(op).__name__
        if isinstance(op, k.Model):
            result.nested_inputs.extend((path, i, lay) for i, lay in enumerate(in_lays))
            return walk(op, path + "/", in_lays)
        result.layer_objects[path] = op
        calls[path] = calls.get(path, 0) + 1
        if calls[path] > 1:  # a shared layer: its weights serve several tensors
            for lay in in_lays:
                block(lay, f"feeds shared layer '{path}'")
            if path in result.uses and result.uses[path].out_layout is not None:
                block(result.uses[path].out_layout, f"comes from shared layer '{path}'")
            return [new_group(channels(t), blocked=f"comes from shared layer '{path}'") for t in outs]
        lay_in: Any = in_lays[0] if in_lays else None
        single = len(ins) == 1
        mixing = rules.mixing_blocks and _activation_of(op) in CHANNEL_MIXING_ACTIVATIONS
        if cls in rules.producers and getattr(op, "groups", 1) == 1 and single:
            out = new_group(channels(outs[0]), producer=path, blocked=f"'{path}' applies {_activation_of(op)} over its channels" if mixing else None)
            result.uses[path] = LayerUse(path, "producer", cls, lay_in, out, int(getattr(op, "depth_multiplier", 1) or 1))
            produced_by[id(outs[0])] = path
            return [out]
        if cls in DEPTHWISE and single:
            m = int(getattr(op, "depth_multiplier", 1) or 1)
            out = lay_in if m == 1 else ("exp", m, lay_in)
            result.uses[path] = LayerUse(path, "depthwise", cls, lay_in, out, m)
            return [out]
        if cls == "BatchNormalization" and single and _last_axis_channels(op, len(ins[0].shape)):
            result.uses[path] = LayerUse(path, "batchnorm", cls, lay_in, lay_in)
            if id(ins[0]) in produced_by:
                result.bn_after[produced_by[id(ins[0])]] = path
            return [lay_in]
        if cls == "PReLU" and single:
            result.uses[path] = LayerUse(path, "prelu", cls, lay_in, lay_in)
            return [lay_in]
        passes = (cls in rules.pass_through or (cls == "Activation" and not mixing)
                  or (cls == "Softmax" and not (rules.mixing_blocks and _last_axis_channels(op, len(ins[0].shape)))))
        if passes and single and (rules.weighted_pass_through or not op.weights):
            if getattr(op, "data_format", "channels_last") == "channels_first":
                block(lay_in, f"feeds channels_first layer '{path}'")
                return [new_group(channels(t), blocked=f"comes from channels_first layer '{path}'") for t in outs]
            result.uses[path] = LayerUse(path, "other", cls, lay_in, lay_in)
            return [lay_in]
        if cls in ELEMENTWISE_MERGES and len(outs) == 1:
            full = [lay for t, lay in zip(ins, in_lays) if channels(t) == channels(outs[0])]
            plain = [lay for lay in full if lay[0] == "g"]
            if len(plain) == len(full) and plain:
                root = plain[0][1]
                for lay in plain[1:]:
                    root = union(root, lay[1])
                for t, lay in zip(ins, in_lays):
                    if channels(t) != channels(outs[0]):
                        block(lay, f"is broadcast in '{path}'")
                return [("g", result.find(root))]
            if all(lay == full[0] for lay in full):
                return [full[0]]
            for lay in in_lays:
                block(lay, f"meets a different channel layout in '{path}'")
            return [new_group(channels(outs[0]), blocked=f"comes from '{path}'")]
        if cls == "Concatenate" and len(outs) == 1:
            rank = len(outs[0].shape)
            axis = op.axis if op.axis >= 0 else rank + op.axis
            if axis == rank - 1:
                return [("cat", tuple(in_lays))]
            if all(lay == in_lays[0] for lay in in_lays):
                return [in_lays[0]]
            for lay in in_lays:
                block(lay, f"is concatenated on a non-channel axis in '{path}'")
            return [new_group(channels(outs[0]), blocked=f"comes from '{path}'")]
        if cls == "Flatten" and single and getattr(op, "data_format", "channels_last") != "channels_first":
            spatial = ins[0].shape[1:-1]
            if all(d is not None for d in spatial):
                return [("rep", int(np.prod(spatial)) if len(spatial) else 1, lay_in)]
        if cls == "Reshape" and rules.follow_reshape and single and lay_in is not None and _keeps_channel_axis(op, ins[0]):
            result.reshapes[path] = lay_in
            return [lay_in]
        # anything else: channels cannot be followed through this layer
        for lay in in_lays:
            block(lay, f"feeds {cls} '{path}'")
        if op.weights:
            result.uses[path] = LayerUse(path, "other", cls, None, None)
        return [new_group(channels(t), blocked=f"comes from {cls} '{path}'") for t in outs]

    in_lays = [new_group(channels(t), blocked=rules.input_reason) for t in model.inputs]
    for lay in walk(model, "", in_lays):
        block(lay, rules.output_reason)
    return result
