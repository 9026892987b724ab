"""Deriving a student from the teacher by width (``width``): the teacher's architecture, thinner.

Owned by the compress helper (issue #13: width planning moves onto the shared channel analysis of
:mod:`edgekit.core.keras_graph`); moved here verbatim from ``passes/distill.py`` until then.

Example:
    >>> student, changes = derive_student(teacher, 0.5)  # doctest: +SKIP
    >>> [(c.layer, c.teacher, c.student) for c in changes]  # doctest: +SKIP
    [('conv1', 16, 8), ('conv2', 32, 16), ('fc1', 256, 128), ('fc2', 128, 64), ('probs', 10, 10)]
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.errors import ModelError
from edgekit.core.tfshim import keras
from edgekit.passes.distill.checks import check_distill_options, check_pair

# Layers whose output channel count is set by one config field (what width scales).
# TODO(keras_graph): the layer families come from edgekit.core.keras_graph once it lands.
WIDTH_FIELDS: dict[str, str] = {
    "Dense": "units",
    "Conv1D": "filters",
    "Conv2D": "filters",
    "Conv3D": "filters",
    "Conv1DTranspose": "filters",
    "Conv2DTranspose": "filters",
    "Conv3DTranspose": "filters",
    "SeparableConv1D": "filters",
    "SeparableConv2D": "filters",
}
# Single-input layers whose output has the input's channels (or a fixed multiple of them).
CHANNEL_PRESERVING = {
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "Identity", "Rescaling",
    "BatchNormalization", "LayerNormalization", "GroupNormalization", "UnitNormalization",
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise", "GaussianDropout", "AlphaDropout",
    "ActivityRegularization", "Masking",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
    "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Flatten",
    "DepthwiseConv1D", "DepthwiseConv2D",  # out = in * depth_multiplier: the multiplier is kept
    "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom", "RandomContrast", "RandomBrightness", "RandomCrop",
}
# Layers that combine inputs element-wise: every input must have the same channel count.
MERGE_LAYERS = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_CONTAINERS = {"Functional", "Sequential", "Model"}


@dataclass(frozen=True)
class WidthChange:
    """One layer of a ``width`` student: its size in the teacher and in the student."""

    layer: str
    layer_class: str
    field: str
    teacher: int
    student: int
    note: str = ""



def _keras_tensors(obj: Any) -> list[dict[str, Any]]:
    """The serialized Keras tensors inside a config fragment (inbound nodes, output layers)."""
    found: list[dict[str, Any]] = []

    def visit(value: Any) -> None:
        if isinstance(value, dict):
            if value.get("class_name") == "__keras_tensor__":
                found.append(value)
                return
            for v in value.values():
                visit(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                visit(v)

    visit(obj)
    return found


def _history_refs(obj: Any) -> list[str]:
    """Names of the layers whose outputs a serialized inbound node refers to."""
    return [t["config"]["keras_history"][0] for t in _keras_tensors(obj)]


def _graph_from_config(config: dict[str, Any], class_name: str) -> tuple[list[dict[str, Any]], dict[str, list[str]], list[str]]:
    """(layers, inputs by layer name, output layer names) of a Functional or Sequential config."""
    layers = config["layers"]
    inbound: dict[str, list[str]] = {}
    if class_name == "Sequential":
        previous: str | None = None
        for layer in layers:
            name = layer["config"]["name"]
            inbound[name] = [previous] if previous is not None else []
            previous = name
        return layers, inbound, [previous] if previous else []
    for layer in layers:
        name = layer.get("name") or layer["config"]["name"]
        inbound[name] = list(dict.fromkeys(_history_refs(layer.get("inbound_nodes", []))))
    outputs = _history_refs(config.get("output_layers", []))
    if not outputs:  # older format: [[name, node, tensor], ...]
        raw = config.get("output_layers", [])
        raw = [raw] if raw and isinstance(raw[0], str) else raw
        outputs = [entry[0] for entry in raw]
    return layers, inbound, outputs


def _channels_kept(reshape: dict[str, Any]) -> bool:
    """Whether a Reshape keeps its input's last (channel) axis, e.g. (C,) -> (1, 1, C)."""
    shapes = [v["config"]["shape"] for v in _keras_tensors(reshape.get("inbound_nodes", []))]
    target = reshape["config"].get("target_shape")
    if len(shapes) != 1 or not target or not shapes[0] or shapes[0][-1] is None:
        return False
    in_rest = [d for d in shapes[0][1:-1]]
    out_rest = [int(d) for d in target[:-1]]
    return int(target[-1]) == int(shapes[0][-1]) and None not in in_rest and int(np.prod(in_rest or [1])) == int(np.prod(out_rest or [1]))


def _strip_build_configs(obj: Any) -> None:
    if isinstance(obj, dict):
        obj.pop("build_config", None)
        obj.pop("compile_config", None)
        for value in obj.values():
            _strip_build_configs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _strip_build_configs(value)


def plan_width(model: Any, width: float) -> tuple[dict[str, Any], list[WidthChange]]:
    """The serialized student (fresh: no weights) and the per-layer changes for ``width``.

    Every Conv/Dense layer's ``filters``/``units`` is multiplied by ``width`` (rounded, at least
    1) except where channel counts are pinned: the final classifier (any layer feeding a model
    output without another Conv/Dense in between), layers feeding Reshape/Permute or a layer
    type edgekit does not know, and the model inputs. Layers joined by Add/Multiply/... share a
    group: the group is scaled only if no member is pinned, so residual sums stay consistent.
    Depthwise layers keep their ``depth_multiplier`` (their channels follow their input).
    """
    k = keras()
    serialized = k.saving.serialize_keras_object(model)
    class_name = serialized.get("class_name")
    if class_name not in ("Functional", "Sequential"):
        raise ModelError(f"width rebuilds Sequential and Functional models; the teacher is a {class_name} (subclassed) model",
                         hint="build the student yourself and give it as student S.keras", settings=("width", "student"))
    config = serialized["config"]
    layers, inbound, outputs = _graph_from_config(config, class_name)
    by_name = {(lay.get("name") or lay["config"]["name"]): lay for lay in layers}
    for name, layer in by_name.items():
        if layer["class_name"] in _CONTAINERS:
            raise ModelError(f"width does not scale nested models (layer '{name}' is a {layer['class_name']} model)",
                             hint="give student S.keras with the student architecture you want", settings=("width", "student"))

    # union-find over "channel groups": each tensor's channels are set by one group
    parent: dict[str, str] = {}

    def find(a: str) -> str:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[rb] = ra

    group_of: dict[str, str] = {}  # layer name -> group of its output channels
    concat_inputs: dict[str, list[str]] = {}
    reshapes: dict[str, str] = {}
    pinned_groups: set[str] = set()
    pin_reasons: dict[str, str] = {}

    def pin(group: str, reason: str) -> None:
        pinned_groups.add(group)
        pin_reasons.setdefault(group, reason)

    for name, layer in by_name.items():  # configs list layers in topological order
        cls = layer["class_name"]
        ins = inbound.get(name, [])
        in_groups = [group_of[i] for i in ins if i in group_of]
        if cls == "InputLayer" or not ins:
            group_of[name] = f"input:{name}"
            pin(f"input:{name}", "model input")
        elif cls in WIDTH_FIELDS:
            group_of[name] = f"layer:{name}"
        elif cls in CHANNEL_PRESERVING and len(in_groups) == 1:
            group_of[name] = in_groups[0]
        elif cls in MERGE_LAYERS:
            for g in in_groups[1:]:
                union(in_groups[0], g)
            group_of[name] = in_groups[0]
        elif cls == "Concatenate":
            group_of[name] = f"concat:{name}"  # its channels follow its inputs
            concat_inputs[group_of[name]] = in_groups
        elif cls == "Reshape" and len(in_groups) == 1 and _channels_kept(layer):
            group_of[name] = in_groups[0]  # e.g. (C,) -> (1, 1, C) in a squeeze-excite block
            reshapes[name] = in_groups[0]
        else:
            for g in in_groups:  # Permute, RNNs, unknown layers: keep their input as is
                pin(g, f"feeds {cls} layer '{name}'")
            group_of[name] = f"other:{name}"
            pin(group_of[name], f"follows {cls} layer '{name}'")
    for out in outputs:
        pin(group_of[out], "final classifier")
    # a pinned concatenation pins its inputs (their sum must not change), until nothing changes
    changed = True
    while changed:
        changed = False
        roots = {find(g) for g in pinned_groups}
        for cat, ins in concat_inputs.items():
            if find(cat) in roots:
                for g in ins:
                    if find(g) not in roots:
                        pin(g, f"feeds pinned {cat.split(':', 1)[1]}")
                        changed = True
    pinned_roots = {find(g) for g in pinned_groups}
    root_reason: dict[str, str] = {}
    for g in pinned_groups:
        root_reason.setdefault(find(g), pin_reasons[g])

    student = copy.deepcopy(serialized)
    s_layers, _, _ = _graph_from_config(student["config"], class_name)
    changes: list[WidthChange] = []
    for layer in s_layers:
        cls = layer["class_name"]
        name = layer.get("name") or layer["config"]["name"]
        if name in reshapes and find(reshapes[name]) not in pinned_roots:
            target = list(layer["config"]["target_shape"])
            target[-1] = max(1, int(round(int(target[-1]) * width)))
            layer["config"]["target_shape"] = target
            continue
        if cls not in WIDTH_FIELDS:
            continue
        fld = WIDTH_FIELDS[cls]
        before = int(layer["config"][fld])
        root = find(group_of[name])
        if root in pinned_roots:
            changes.append(WidthChange(name, cls, fld, before, before, f"kept: {root_reason[root]}"))
            continue
        after = max(1, int(round(before * width)))
        layer["config"][fld] = after
        changes.append(WidthChange(name, cls, fld, before, after))
    _strip_build_configs(student)
    return student, changes


def derive_student(teacher: Any, width: float, *, seed: int = 0) -> tuple[Any, list[WidthChange]]:
    """A fresh (randomly initialised, seeded) student: the teacher's architecture at ``width``.

    Example:
        >>> student, changes = derive_student(teacher, 0.5)  # doctest: +SKIP
        >>> [(c.layer, c.teacher, c.student) for c in changes]  # doctest: +SKIP
        [('conv1', 16, 8), ('conv2', 32, 16), ('fc1', 256, 128), ('fc2', 128, 64), ('probs', 10, 10)]
    """
    k = keras()
    check_distill_options(epochs=1, temperature=1, alpha=0, batch_size=1, learning_rate=None, width=width)
    serialized, changes = plan_width(teacher, width)
    k.utils.set_random_seed(seed)
    try:
        student = k.saving.deserialize_keras_object(serialized, custom_objects=_layer_classes(teacher))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:250]
        raise ModelError(f"cannot rebuild the teacher at width {width}: {first}",
                         hint="some layer depends on exact channel counts; give student S.keras instead", settings=("width", "student")) from None
    student.name = f"{teacher.name}_w{width:g}".replace(".", "_")
    check_pair(teacher, student)
    return student, changes


def _layer_classes(model: Any) -> dict[str, type]:
    """The classes of a model's layers by name, so custom layers deserialize without a registry."""
    return {type(layer).__name__: type(layer) for layer in getattr(model, "layers", [])}


def fresh_copy(model: Any, *, seed: int = 0) -> Any:
    """The same architecture (same layer names) with freshly initialised, seeded weights."""
    k = keras()
    k.utils.set_random_seed(seed)
    try:
        return k.models.clone_model(model)
    except Exception:  # e.g. a subclassed model: go through its serialized form
        serialized = k.saving.serialize_keras_object(model)
        _strip_build_configs(serialized)
        return k.saving.deserialize_keras_object(serialized, custom_objects=_layer_classes(model))


def copy_with_weights(model: Any, weights: list[np.ndarray]) -> Any:
    """The same architecture with the given weights (a clone that shares nothing with ``model``)."""
    clone = fresh_copy(model)
    clone.set_weights(weights)
    return clone


