"""Distillation students derived from the teacher: the same architecture at a smaller width, or a fresh copy.

:func:`plan_width` reads the teacher's channel groups from the one union-find analysis
(:func:`edgekit.core.keras_graph.channel_groups` with ``WIDTH_RULES``, the analysis channel
pruning also uses): every Conv/Dense layer's ``filters``/``units`` is multiplied by the width
unless its channels are fixed by the group it belongs to (the model input, the final classifier,
a layer whose channels cannot be followed). Layers joined by Add/Multiply/... share a group, so
residual sums stay consistent; a Reshape that keeps the channel axis (squeeze-excite) follows its
group; depthwise layers keep their ``depth_multiplier`` (their channels follow their input).

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

from edgekit.core.errors import InputError, ModelError
from edgekit.core.keras_graph import WIDTH_FIELDS, WIDTH_RULES, channel_groups, is_container
from edgekit.core.tfshim import keras


@dataclass(frozen=True)
class WidthChange:
    """One layer of a width-derived student: its size in the teacher and in the student."""

    layer: str
    layer_class: str
    field: str
    teacher: int
    student: int
    note: str = ""


def strip_build_configs(obj: Any) -> None:
    """Removes build and compile configs from a serialized model, in place (layers rebuild from their new shapes)."""
    if isinstance(obj, dict):
        obj.pop("build_config", None)
        obj.pop("compile_config", None)
        for value in obj.values():
            strip_build_configs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            strip_build_configs(value)


def layer_classes(model: Any) -> dict[str, type]:
    """The classes of a model's layers by name, so custom layers deserialize without a registry."""
    return {type(layer).__name__: type(layer) for layer in getattr(model, "layers", [])}


def plan_width(model: Any, width: float) -> tuple[dict[str, Any], list[WidthChange]]:
    """The serialized student (fresh: no weights) and the per-layer changes for ``width``.

    Raises:
        ModelError: a subclassed or nested model (its config cannot be rescaled layer by layer).
    """
    serialized = keras().saving.serialize_keras_object(model)
    class_name = serialized.get("class_name")
    if class_name not in ("Functional", "Sequential"):
        raise ModelError(f"width rebuilds Sequential and Functional models; the teacher is a {class_name} (subclassed) model",
                         hint="build the student yourself and pass student S.keras", settings=("width", "student"))
    for layer in model.layers:
        if is_container(layer):
            raise ModelError(f"width does not scale nested models (layer '{layer.name}' is a {type(layer).__name__} model)",
                             hint="pass student S.keras with the student architecture you want", settings=("width", "student"))
    groups = channel_groups(model, WIDTH_RULES)
    student = copy.deepcopy(serialized)
    changes: list[WidthChange] = []
    for layer in student["config"]["layers"]:
        cls = layer["class_name"]
        name = layer.get("name") or layer["config"]["name"]
        if name in groups.reshapes:
            if groups.blocked_reason(groups.reshapes[name]) is None:
                target = list(layer["config"]["target_shape"])
                target[-1] = max(1, int(round(int(target[-1]) * width)))
                layer["config"]["target_shape"] = target
            continue
        if cls not in WIDTH_FIELDS:
            continue
        fld = WIDTH_FIELDS[cls]
        before = int(layer["config"][fld])
        use = groups.uses.get(name)
        reason = (groups.blocked_reason(use.out_layout) if use is not None and use.kind == "producer" and use.out_layout is not None
                  else "its channels cannot be followed through the graph")
        if reason is not None:
            changes.append(WidthChange(name, cls, fld, before, before, f"kept: {reason}"))
            continue
        after = max(1, int(round(before * width)))
        layer["config"][fld] = after
        changes.append(WidthChange(name, cls, fld, before, after))
    strip_build_configs(student)
    return student, changes


def derive_student(teacher: Any, width: float, *, seed: int = 0) -> tuple[Any, list[WidthChange]]:
    """A fresh (randomly initialised, seeded) student: the teacher's architecture at ``width``.

    Example:
        >>> student, changes = derive_student(teacher, 0.5)  # doctest: +SKIP
        >>> [(c.layer, c.teacher, c.student) for c in changes]  # doctest: +SKIP
        [('conv1', 16, 8), ('conv2', 32, 16), ('fc1', 256, 128), ('fc2', 128, 64), ('probs', 10, 10)]
    """
    if not 0.0 < width <= 1.0:
        raise InputError(f"width must be in (0, 1], got {width}", hint="e.g. width 0.5", settings=("width",))
    k = keras()
    serialized, changes = plan_width(teacher, width)
    k.utils.set_random_seed(seed)
    try:
        student = k.saving.deserialize_keras_object(serialized, custom_objects=layer_classes(teacher))
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:250]
        raise ModelError(f"cannot rebuild the teacher at width {width}: {first}",
                         hint="some layer depends on exact channel counts; pass student S.keras instead", settings=("width", "student")) from None
    student.name = f"{teacher.name}_w{width:g}".replace(".", "_")
    return student, changes


def fresh_copy(model: Any, *, seed: int = 0) -> Any:
    """The same architecture (same layer names) with freshly initialised, seeded weights."""
    k = keras()
    k.utils.set_random_seed(seed)
    try:
        return k.models.clone_model(model)
    except Exception:  # e.g. a subclassed model: go through its serialized form
        serialized = k.saving.serialize_keras_object(model)
        strip_build_configs(serialized)
        return k.saving.deserialize_keras_object(serialized, custom_objects=layer_classes(model))


def copy_with_weights(model: Any, weights: list[np.ndarray]) -> Any:
    """The same architecture with the given weights (a clone that shares nothing with ``model``)."""
    clone = fresh_copy(model)
    clone.set_weights(weights)
    return clone
