"""Channel (filter) pruning by model surgery: remove filters and rebuild a smaller Keras model.

The model graph is walked once (through nested models) to find *channel groups*: sets of
tensors whose last axis must keep the same channels. A Conv/Dense/SeparableConv output starts a
group; BatchNormalization, activations, pooling, padding, dropout and DepthwiseConv2D carry it
through; element-wise merges (Add, Multiply, ...) tie their inputs' groups together, so a residual
stream is pruned with one channel set; Concatenate and Flatten map their inputs' channels into
their output's positions. A group is prunable when every layer that produces it was selected and
nothing *blocks* it: a model input or output, a layer that mixes the channel axis in a way
slicing cannot follow (Reshape, Softmax over channels, LayerNormalization, unknown layers...).

The smaller model is rebuilt from the Keras config with fewer ``filters``/``units`` (and nested
models' input shapes adjusted), then every layer's weights are copied with the removed channels
sliced out of both the producing layer and every consumer. The result is a plain Keras model.

Example:
    >>> plan = analyze(model)                              # doctest: +SKIP
    >>> keep = plan.choose(selected_paths, sparsity=0.5)   # doctest: +SKIP
    >>> smaller = rebuild(model, plan, keep)               # doctest: +SKIP
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.core.errors import ModelError
from edgekit.core.tfshim import functional_graph, graph_nodes

PRODUCERS = {"Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D"}
DEPTHWISE = {"DepthwiseConv1D", "DepthwiseConv2D"}
PASS_THROUGH = {
    "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing",
}
ELEMENTWISE = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
CHANNEL_MIXING_ACTIVATIONS = {"softmax", "log_softmax"}

# A layout says which channel of which group sits at each position of a tensor's last axis:
# ("g", gid) plain group; ("cat", (layouts...)) concatenation; ("rep", S, layout) flattened
# spatial positions, index s*C + c; ("exp", m, layout) depth multiplier, index c*m + j.
Layout = tuple


@dataclass
class Group:
    size: int
    producers: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@dataclass
class LayerUse:
    """How one layer's weights depend on channel layouts."""

    path: str
    kind: str  # producer, depthwise, batchnorm, prelu, other
    layer_class: str
    in_layout: Layout | None
    out_layout: Layout | None
    depth_multiplier: int = 1


@dataclass
class ChannelPlan:
    """The channel groups of a model and how each layer uses them."""

    groups: dict[int, Group]
    parent: dict[int, int]
    uses: dict[str, LayerUse]
    bn_after: dict[str, str]
    nested_inputs: list[tuple[str, int, Layout]]
    layer_objects: dict[str, Any]

    def find(self, gid: int) -> int:
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
        if kind == "rep":
            return layout[1] * self.size(layout[2])
        return layout[1] * self.size(layout[2])  # exp

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

    def prunable(self, selected: set[str]) -> tuple[dict[int, Group], dict[int, str]]:
        """Groups that can lose channels, and for every other produced group the reason it cannot."""
        ok: dict[int, Group] = {}
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

    def importance(self, root: int) -> np.ndarray:
        """Channel importance in a group: per producer, |BN gamma|/sqrt(var) when a BatchNormalization
        follows it, else the L2 norm of its filters; normalized per producer and summed."""
        total = np.zeros(self.groups[root].size, dtype=np.float64)
        for path in self.groups[root].producers:
            layer = self.layer_objects[path]
            bn_path = self.bn_after.get(path)
            if bn_path is not None:
                bn = self.layer_objects[bn_path]
                weights = {w.name: np.asarray(w.numpy(), dtype=np.float64) for w in bn.weights}
                gamma = np.abs(weights.get("gamma", np.ones_like(weights["moving_variance"])))
                score = gamma / np.sqrt(weights["moving_variance"] + bn.epsilon)
            else:
                kernel = np.asarray(_weight(layer, "pointwise_kernel" if "Separable" in type(layer).__name__ else "kernel"), dtype=np.float64)
                score = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
            total += score / max(float(score.mean()), 1e-12)
        return total

    def choose(self, selected: set[str], sparsity_of: Any) -> dict[int, np.ndarray]:
        """Kept channel indices for every prunable group.

        ``sparsity_of(group) -> (target sparsity, original channel count)``; a group keeps
        ``original - round(original * sparsity)`` channels (at least 1), the most important ones.
        """
        ok, _ = self.prunable(selected)
        keep: dict[int, np.ndarray] = {}
        for root, group in ok.items():
            sparsity, original = sparsity_of(group)
            kept = max(1, original - int(round(original * sparsity)))
            if kept >= group.size:
                continue
            order = np.argsort(-self.importance(root), kind="stable")
            keep[root] = np.sort(order[:kept])
        return keep


def _weight(layer: Any, name: str) -> np.ndarray:
    for w in layer.weights:
        if w.name == name:
            return w.numpy()
    raise KeyError(name)


def _last_axis_channels(layer: Any, rank: int) -> bool:
    """Whether ``layer`` works on the last (channel) axis of a rank-``rank`` input."""
    axis = getattr(layer, "axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            return False
        axis = axis[0]
    return axis == -1 or axis == rank - 1


def analyze(model: Any) -> ChannelPlan:
    """Walks ``model`` (and nested models) and returns its channel groups."""
    from edgekit.core.tfshim import keras

    k = keras()
    groups: dict[int, Group] = {}
    parent: dict[int, int] = {}
    uses: dict[str, LayerUse] = {}
    bn_after: dict[str, str] = {}
    nested_inputs: list[tuple[str, int, Layout]] = []
    layer_objects: dict[str, Any] = {}
    produced_by: dict[int, str] = {}  # tensor id -> producer path (direct output)
    calls: dict[str, int] = {}

    def new_group(size: int, producer: str | None = None, blocked: str | None = None) -> Layout:
        gid = len(groups)
        groups[gid] = Group(size=int(size), producers=[producer] if producer else [], blocked=[blocked] if blocked else [])
        parent[gid] = gid
        return ("g", gid)

    def find(gid: int) -> int:
        while parent[gid] != gid:
            gid = parent[gid]
        return gid

    def group_ids(layout: Layout) -> list[int]:
        if layout[0] == "g":
            return [find(layout[1])]
        if layout[0] == "cat":
            return [g for part in layout[1] for g in group_ids(part)]
        return group_ids(layout[2])

    def block(layout: Layout, reason: str) -> None:
        for gid in group_ids(layout):
            groups[gid].blocked.append(reason)

    def union(a: int, b: int) -> int:
        ra, rb = find(a), find(b)
        if ra == rb:
            return ra
        if groups[ra].size != groups[rb].size:
            raise ModelError(f"channel groups of different sizes ({groups[ra].size}, {groups[rb].size}) meet in an element-wise layer")
        parent[rb] = ra
        groups[ra].producers += groups[rb].producers
        groups[ra].blocked += groups[rb].blocked
        return ra

    def channels(tensor: Any) -> int:
        dim = tensor.shape[-1]
        return int(dim) if dim is not None else 0

    def walk(fn_model: Any, prefix: str, in_layouts: list[Layout]) -> list[Layout]:
        graph = functional_graph(fn_model)
        if graph is None:
            raise ModelError(f"model '{fn_model.name}' is not built", hint="build it (call it on an input) before pruning channels")
        layout: dict[int, Layout] = {}
        for tensor, lay in zip(graph.inputs, in_layouts):
            layout[id(tensor)] = lay
        for node in graph_nodes(graph):
            op = node.operation
            if op is None or node.is_input:
                continue
            ins = [t for t in node.input_tensors]
            outs = list(node.outputs)
            in_lays = [layout[id(t)] for t in ins]
            path = prefix + op.name
            cls = type(op).__name__
            results = visit(op, cls, path, ins, outs, in_lays)
            for tensor, lay in zip(outs, results):
                layout[id(tensor)] = lay
        return [layout[id(t)] for t in graph.outputs]

    def visit(op: Any, cls: str, path: str, ins: list[Any], outs: list[Any], in_lays: list[Layout]) -> list[Layout]:
        if isinstance(op, k.Model):
            for i, lay in enumerate(in_lays):
                nested_inputs.append((path, i, lay))
            return walk(op, path + "/", in_lays)
        layer_objects[path] = op
        calls[path] = calls.get(path, 0) + 1
        if calls[path] > 1:  # a shared layer: its weights serve several tensors
            for lay in in_lays:
                block(lay, f"feeds shared layer '{path}'")
            if path in uses and uses[path].out_layout is not None:
                block(uses[path].out_layout, f"comes from shared layer '{path}'")
            return [new_group(channels(t), blocked=f"comes from shared layer '{path}'") for t in outs]
        lay_in = in_lays[0] if in_lays else None
        if cls in PRODUCERS and getattr(op, "groups", 1) == 1 and len(ins) == 1:
            activation = getattr(getattr(op, "activation", None), "__name__", "")
            out = new_group(channels(outs[0]), producer=path,
                            blocked=f"'{path}' applies {activation} over its channels" if activation in CHANNEL_MIXING_ACTIVATIONS else None)
            uses[path] = LayerUse(path, "producer", cls, lay_in, out, int(getattr(op, "depth_multiplier", 1) or 1))
            produced_by[id(outs[0])] = path
            return [out]
        if cls in DEPTHWISE and len(ins) == 1:
            m = int(getattr(op, "depth_multiplier", 1) or 1)
            out = lay_in if m == 1 else ("exp", m, lay_in)
            uses[path] = LayerUse(path, "depthwise", cls, lay_in, out, m)
            return [out]
        if cls == "BatchNormalization" and len(ins) == 1 and _last_axis_channels(op, len(ins[0].shape)):
            uses[path] = LayerUse(path, "batchnorm", cls, lay_in, lay_in)
            if id(ins[0]) in produced_by:
                bn_after[produced_by[id(ins[0])]] = path
            return [lay_in]
        if cls == "PReLU" and len(ins) == 1:
            uses[path] = LayerUse(path, "prelu", cls, lay_in, lay_in)
            return [lay_in]
        activation_name = getattr(getattr(op, "activation", None), "__name__", "") if cls == "Activation" else ""
        if (cls in PASS_THROUGH or (cls == "Activation" and activation_name not in CHANNEL_MIXING_ACTIVATIONS)
                or (cls == "Softmax" and not _last_axis_channels(op, len(ins[0].shape)))) and len(ins) == 1 and not op.weights:
            if getattr(op, "data_format", "channels_last") == "channels_first":
                block(lay_in, f"feeds channels_first layer '{path}'")
                return [new_group(channels(t), blocked=f"comes from channels_first layer '{path}'") for t in outs]
            uses[path] = LayerUse(path, "other", cls, lay_in, lay_in)
            return [lay_in]
        if cls in ELEMENTWISE and len(outs) == 1:
            full = [lay for t, lay in zip(ins, in_lays) if channels(t) == channels(outs[0])]
            plain = [lay for lay in full if lay[0] == "g"]
            if len(plain) == len(full) and plain:
                root = plain[0][1]
                for lay in plain[1:]:
                    root = union(root, lay[1])
                for t, lay in zip(ins, in_lays):
                    if channels(t) != channels(outs[0]):
                        block(lay, f"is broadcast in '{path}'")
                return [("g", find(root))]
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
        if cls == "Flatten" and len(ins) == 1 and getattr(op, "data_format", "channels_last") != "channels_first":
            spatial = ins[0].shape[1:-1]
            if all(d is not None for d in spatial):
                return [("rep", int(np.prod(spatial)) if len(spatial) else 1, lay_in)]
        # anything else: channels cannot be followed through this layer
        for lay in in_lays:
            block(lay, f"feeds {cls} '{path}'")
        if op.weights:
            uses[path] = LayerUse(path, "other", cls, None, None)
        return [new_group(channels(t), blocked=f"comes from {cls} '{path}'") for t in outs]

    in_lays = [new_group(channels(t), blocked="is the model input") for t in model.inputs]
    for lay in walk(model, "", in_lays):
        block(lay, "is a model output")
    return ChannelPlan(groups, parent, uses, bn_after, nested_inputs, layer_objects)


def _edit_configs(config: dict[str, Any], prefix: str, edits: dict[str, dict[str, Any]], input_edits: dict[str, dict[int, int]]) -> None:
    """Applies ``edits`` (layer path -> config fields) to a (nested) model config in place."""
    layers = config.get("layers", [])
    model_path = prefix[:-1] if prefix else ""
    if model_path in input_edits:
        for index, size in input_edits[model_path].items():
            if "input_layers" in config:  # Functional
                spec = config["input_layers"]
                names = [spec[0]] if spec and isinstance(spec[0], str) else [s[0] for s in spec]
                target = names[index]
                for entry in layers:
                    if entry["config"].get("name") == target and entry["class_name"] == "InputLayer":
                        entry["config"]["batch_shape"] = [*entry["config"]["batch_shape"][:-1], size]
            else:  # Sequential
                for entry in layers:
                    if entry["class_name"] == "InputLayer":
                        entry["config"]["batch_shape"] = [*entry["config"]["batch_shape"][:-1], size]
                if config.get("build_input_shape"):
                    config["build_input_shape"] = [*config["build_input_shape"][:-1], size]
    for entry in layers:
        cfg = entry.get("config", {})
        name = cfg.get("name")
        if entry.get("class_name") in ("Functional", "Sequential", "Model") and "layers" in cfg:
            _edit_configs(cfg, f"{prefix}{name}/", edits, input_edits)
            continue
        path = f"{prefix}{name}"
        if path in edits:
            cfg.update(edits[path])


def _drop_build_configs(obj: Any) -> None:
    if isinstance(obj, dict):
        obj.pop("build_config", None)
        for value in obj.values():
            _drop_build_configs(value)
    elif isinstance(obj, list):
        for value in obj:
            _drop_build_configs(value)


def rebuild(model: Any, plan: ChannelPlan, keep: dict[int, np.ndarray]) -> Any:
    """A new, smaller model: groups in ``keep`` keep only those channels; weights are sliced in."""
    from edgekit.passes.compress import clone_model, layers_by_path

    edits: dict[str, dict[str, Any]] = {}
    for path, use in plan.uses.items():
        if use.kind == "producer":
            new = len(plan.indices(use.out_layout, keep))
            if new != plan.size(use.out_layout):
                edits[path] = {"units": new} if use.layer_class == "Dense" else {"filters": new}
    input_edits: dict[str, dict[int, int]] = {}
    for path, index, lay in plan.nested_inputs:
        new = len(plan.indices(lay, keep))
        if new != plan.size(lay):
            input_edits.setdefault(path, {})[index] = new
    config = copy.deepcopy(model.get_config())
    _edit_configs(config, "", edits, input_edits)
    _drop_build_configs(config)  # layers rebuild from the new shapes when called
    new_model = clone_model(model, config=config)

    old_layers = layers_by_path(model)
    new_layers = layers_by_path(new_model)
    for path, old in old_layers.items():
        new = new_layers.get(path)
        if new is None:
            raise ModelError(f"layer '{path}' is missing after rebuilding the model", hint="report this model to edgekit")
        if not old.weights:
            continue
        use = plan.uses.get(path)
        values = []
        for w_old, w_new in zip(old.weights, new.weights):
            arr = np.asarray(w_old.numpy())
            if use is not None:
                arr = _slice_weight(plan, use, w_old.name, arr, keep)
            if tuple(arr.shape) != tuple(w_new.shape):
                raise ModelError(
                    f"weight {path}/{w_old.name} has shape {arr.shape} after slicing but the rebuilt layer expects {tuple(w_new.shape)}",
                    hint="this layer arrangement is not supported by channel pruning; exclude it with --skip",
                )
            values.append(arr)
        new.set_weights(values)
    return new_model


def _slice_weight(plan: ChannelPlan, use: LayerUse, name: str, arr: np.ndarray, keep: dict[int, np.ndarray]) -> np.ndarray:
    in_idx = plan.indices(use.in_layout, keep) if use.in_layout is not None else None
    out_idx = plan.indices(use.out_layout, keep) if use.out_layout is not None else None
    if use.kind == "producer":
        if name in ("kernel", "pointwise_kernel"):
            if name == "pointwise_kernel":
                in_idx = plan.indices(("exp", use.depth_multiplier, use.in_layout), keep)
            in_axis = 0 if use.layer_class == "Dense" else arr.ndim - 2
            return np.take(np.take(arr, in_idx, axis=in_axis), out_idx, axis=arr.ndim - 1)
        if name == "depthwise_kernel":
            return np.take(arr, in_idx, axis=arr.ndim - 2)
        if name == "bias":
            return np.take(arr, out_idx, axis=0)
    if use.kind == "depthwise":
        if name in ("kernel", "depthwise_kernel"):
            return np.take(arr, in_idx, axis=arr.ndim - 2)
        if name == "bias":
            return np.take(arr, out_idx, axis=0)
    if use.kind == "batchnorm":
        return np.take(arr, in_idx, axis=0)
    if use.kind == "prelu" and arr.shape[-1] == plan.size(use.in_layout) and arr.shape[-1] > 1:
        return np.take(arr, in_idx, axis=arr.ndim - 1)
    return arr
