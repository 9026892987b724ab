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

The groups come from :func:`edgekit.core.keras_graph.channel_groups` (the analysis width-derived
distillation students share); this module chooses channels and does the surgery.

Example:
    >>> plan = channel_groups(model)                                       # doctest: +SKIP
    >>> keep = choose_channels(plan, selected_paths, lambda g: (0.5, g.size))  # doctest: +SKIP
    >>> smaller = rebuild(model, plan, keep)                               # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.core.errors import ModelError
from edgekit.core.keras_graph import CONTAINERS, ChannelGroup, ChannelGroups, LayerUse, clone_model, layers_by_path


def channel_importance(plan: ChannelGroups, root: int) -> np.ndarray:
    """Channel importance in a group: per producer, |BN gamma|/sqrt(var) when a BatchNormalization
    follows it, else the L2 norm of its filters; normalized per producer and summed."""
    total = np.zeros(plan.groups[root].size, dtype=np.float64)
    for path in plan.groups[root].producers:
        layer = plan.layer_objects[path]
        bn_path = plan.bn_after.get(path)
        if bn_path is not None:
            bn = plan.layer_objects[bn_path]
            weights = {w.name: np.asarray(w.numpy(), dtype=np.float64) for w in bn.weights}
            gamma = np.abs(weights.get("gamma", np.ones_like(weights["moving_variance"])))
            score = gamma / np.sqrt(weights["moving_variance"] + bn.epsilon)
        else:
            kernel = np.asarray(_weight(layer, "pointwise_kernel" if "Separable" in type(layer).__name__ else "kernel"), dtype=np.float64)
            score = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
        total += score / max(float(score.mean()), 1e-12)
    return total


def choose_channels(plan: ChannelGroups, selected: set[str], sparsity_of: Callable[[ChannelGroup], tuple[float, int]]) -> dict[int, np.ndarray]:
    """Kept channel indices for every group that may lose channels.

    ``sparsity_of(group) -> (target sparsity, original channel count)``; a group keeps
    ``original - round(original * sparsity)`` channels (at least 1), the most important ones.
    """
    ok, _ = plan.free_groups(selected)
    keep: dict[int, np.ndarray] = {}
    for root, group in ok.items():
        sparsity, original = sparsity_of(group)
        kept = max(1, original - int(round(original * sparsity)))
        if kept >= group.size:
            continue
        order = np.argsort(-channel_importance(plan, root), kind="stable")
        keep[root] = np.sort(order[:kept])
    return keep


def _weight(layer: Any, name: str) -> np.ndarray:
    for w in layer.weights:
        if w.name == name:
            return w.numpy()
    raise KeyError(name)


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
        if entry.get("class_name") in CONTAINERS and "layers" in cfg:
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


def rebuild(model: Any, plan: ChannelGroups, keep: dict[int, np.ndarray]) -> Any:
    """A new, smaller model: groups in ``keep`` keep only those channels; weights are sliced in."""
    edits: dict[str, dict[str, Any]] = {}
    for path, use in plan.uses.items():
        if use.kind == "producer":
            kept = len(plan.indices(use.out_layout, keep))
            if kept != plan.size(use.out_layout):
                edits[path] = {"units": kept} if use.layer_class == "Dense" else {"filters": kept}
    input_edits: dict[str, dict[int, int]] = {}
    for path, index, lay in plan.nested_inputs:
        kept = len(plan.indices(lay, keep))
        if kept != plan.size(lay):
            input_edits.setdefault(path, {})[index] = kept
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
        layer_use = plan.uses.get(path)
        values = []
        for w_old, w_new in zip(old.weights, new.weights):
            arr = np.asarray(w_old.numpy())
            if layer_use is not None:
                arr = _slice_weight(plan, layer_use, w_old.name, arr, keep)
            if tuple(arr.shape) != tuple(w_new.shape):
                raise ModelError(
                    f"weight {path}/{w_old.name} has shape {arr.shape} after slicing but the rebuilt layer expects {tuple(w_new.shape)}",
                    hint="this layer arrangement is not supported by channel pruning; exclude it with skip", settings=("skip",),
                )
            values.append(arr)
        new.set_weights(values)
    return new_model


def _slice_weight(plan: ChannelGroups, use: LayerUse, name: str, arr: np.ndarray, keep: dict[int, np.ndarray]) -> np.ndarray:
    in_idx: Any = plan.indices(use.in_layout, keep) if use.in_layout is not None else None
    out_idx: Any = plan.indices(use.out_layout, keep) if use.out_layout is not None else None
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
