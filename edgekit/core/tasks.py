"""What each model output is for: the task, detected with a reason, overridable.

A task per output decides which metrics are computed, which loss trains it and how a
distillation teacher is matched:

- ``classification``: one class per sample (softmax or logits over the last axis);
- ``binary``: one sigmoid unit (or one logit) per sample;
- ``multilabel``: several independent sigmoids;
- ``regression``: real values (MAE, RMSE, R²; lower error is better);
- ``segmentation``: one class per pixel (softmax/logits over the last axis of an (N, H, W, C) output);
- ``embedding`` / ``none``: no labels; only agreement with the reference is reported.

:func:`detect_task` looks, in order, at an explicit override, the model's compiled loss, the
output layer's activation and shape, and the labels; the reason says which decided.

Example:
    >>> detect_task("probs", (None, 10), activation="softmax").task
    <Task.CLASSIFICATION: 'classification'>
    >>> detect_task("price", (None, 1), activation="linear").task
    <Task.REGRESSION: 'regression'>
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgekit.core.datatypes import Serializable
from edgekit.core.errors import DataError, InputError


class Task(str, enum.Enum):
    CLASSIFICATION = "classification"
    BINARY = "binary"
    MULTILABEL = "multilabel"
    REGRESSION = "regression"
    SEGMENTATION = "segmentation"
    EMBEDDING = "embedding"
    NONE = "none"

    @property
    def labelled(self) -> bool:
        """Whether the task is scored against labels (embedding/none are compared with the reference only)."""
        return self not in (Task.EMBEDDING, Task.NONE)

    @property
    def categorical(self) -> bool:
        """Whether the output is a distribution over classes along its last axis."""
        return self in (Task.CLASSIFICATION, Task.SEGMENTATION)


TASK_NAMES = tuple(t.value for t in Task)
PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid")

_CATEGORICAL_LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "sparsecategoricalcrossentropy",
                       "categoricalcrossentropy", "categorical_focal_crossentropy", "kl_divergence", "kldivergence")
_BINARY_LOSSES = ("binary_crossentropy", "binarycrossentropy", "binary_focal_crossentropy", "binaryfocalcrossentropy", "hinge",
                  "squared_hinge")
_REGRESSION_LOSSES = ("mean_squared_error", "mse", "mean_absolute_error", "mae", "huber", "log_cosh", "logcosh",
                      "mean_squared_logarithmic_error", "msle", "mean_absolute_percentage_error", "mape", "meansquarederror",
                      "meanabsoluteerror")
_EMBEDDING_LOSSES = ("cosine_similarity", "cosinesimilarity")


@dataclass(frozen=True)
class OutputTask(Serializable):
    """One output's task, with what decided it."""

    output: str
    task: Task
    reason: str
    probabilities: bool = False  # softmax/sigmoid probabilities (else logits or raw values)
    classes: int | None = None  # classes along the last axis (classification/segmentation), units for multilabel

    @property
    def from_logits(self) -> bool:
        return not self.probabilities


def loss_name(loss: Any) -> str | None:
    """A Keras loss (a name, a function, a Loss object) as a lower-case name, or None."""
    if loss is None:
        return None
    if isinstance(loss, str):
        return loss.lower()
    name = getattr(loss, "name", None) or getattr(loss, "__name__", None) or type(loss).__name__
    return str(name).lower()


def _from_logits(loss: Any) -> bool | None:
    value = getattr(loss, "from_logits", None)
    if value is None and hasattr(loss, "get_config"):
        try:
            value = loss.get_config().get("from_logits")
        except Exception:  # noqa: BLE001 - any loss object; the config is a hint only
            value = None
    return value if isinstance(value, bool) else None


def _shape_tail(shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
    return tuple(shape[1:])


def detect_task(output: str, shape: tuple[int | None, ...], *, activation: str | None = None, loss: Any = None,
                labels: np.ndarray | None = None, override: str | Task | None = None) -> OutputTask:
    """The task of one output.

    Args:
        output: the output's name (reported).
        shape: the output's shape including the batch dimension.
        activation: the activation of the layer producing the output (``softmax``, ``sigmoid``, ``linear``...), if known.
        loss: the loss the model was compiled with for this output (a name or a Keras loss), if any.
        labels: the labels given for this output, if any (their dtype and shape are evidence).
        override: a task chosen by the user (``--task output=task``): it wins.
    """
    tail = _shape_tail(shape)
    last = tail[-1] if tail else None
    spatial = len(tail) >= 3  # (H, W, C)
    probs = activation in PROBABILITY_ACTIVATIONS
    classes = int(last) if isinstance(last, int) else None
    if override is not None:
        try:
            task = Task(override)
        except ValueError:
            raise InputError(f"unknown task '{override}' for output {output} (tasks: {', '.join(TASK_NAMES)})",
                             hint="e.g. --task output=regression", settings=("task",)) from None
        return OutputTask(output, task, "chosen with --task", probs, classes)
    name = loss_name(loss)
    if name is not None:
        logits_flag = _from_logits(loss)
        p = probs if logits_flag is None else not logits_flag
        if any(name.startswith(n) for n in _CATEGORICAL_LOSSES):
            task = Task.SEGMENTATION if spatial else Task.CLASSIFICATION
            return OutputTask(output, task, f"compiled with {name}" + (" over an (N, H, W, C) output" if spatial else ""), p, classes)
        if any(name.startswith(n) for n in _BINARY_LOSSES):
            task = Task.BINARY if last == 1 and not spatial else Task.MULTILABEL
            return OutputTask(output, task, f"compiled with {name} on {last} unit(s)", p, classes)
        if any(name.startswith(n) for n in _REGRESSION_LOSSES):
            return OutputTask(output, Task.REGRESSION, f"compiled with {name}", False, classes)
        if any(name.startswith(n) for n in _EMBEDDING_LOSSES):
            return OutputTask(output, Task.EMBEDDING, f"compiled with {name}", False, classes)
    if activation == "softmax":
        task = Task.SEGMENTATION if spatial else Task.CLASSIFICATION
        return OutputTask(output, task, f"softmax over {last} classes" + (" per pixel" if spatial else ""), True, classes)
    if activation == "sigmoid":
        task = Task.BINARY if last == 1 and not spatial else Task.MULTILABEL
        return OutputTask(output, task, f"sigmoid on {last} unit(s)", True, classes)
    label_task = _task_from_labels(labels, tail)
    if label_task is not None:
        task, why = label_task
        return OutputTask(output, task, why, False, classes)
    if last == 1 and not spatial:
        return OutputTask(output, Task.REGRESSION, f"one linear unit ({activation or 'no activation'})", False, classes)
    if classes is not None and classes > 1 and len(tail) == 1:
        return OutputTask(output, Task.CLASSIFICATION, f"{classes} linear units: assumed class logits (override with --task)",
                          False, classes)
    return OutputTask(output, Task.NONE, f"output shape {tail} with {activation or 'no'} activation and no labels: "
                                         "compared with the reference only", False, classes)


def _task_from_labels(labels: np.ndarray | None, tail: tuple[int | None, ...]) -> tuple[Task, str] | None:
    if labels is None:
        return None
    y = np.asarray(labels)
    integer = y.dtype.kind in "iub" or (y.dtype.kind == "f" and y.size and bool(np.all(y == np.round(y))) and y.ndim == 1)
    last = tail[-1] if tail else None
    if y.ndim == 1 and integer and isinstance(last, int) and last > 1:
        return Task.CLASSIFICATION, f"integer labels for {last} linear units (class logits)"
    if y.dtype.kind == "f" and y.shape[1:] == tuple(tail):
        return Task.REGRESSION, "real-valued labels shaped like the output"
    if len(tail) >= 3 and integer and y.ndim == len(tail):  # (N, H, W) class ids for (N, H, W, C) logits
        return Task.SEGMENTATION, f"per-pixel integer labels for {last} classes"
    return None


def parse_task_overrides(items: list[str] | tuple[str, ...] | None, outputs: list[str]) -> dict[str, Task]:
    """``["probs=classification", "box=regression"]`` (or ``task`` alone for a single-output model) -> {output: Task}.

    Raises:
        InputError: an unknown output or task name, with a suggestion.
    """
    import difflib

    found: dict[str, Task] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep:
            if len(outputs) != 1:
                raise InputError(f"task '{item}' names no output; the model has {len(outputs)} outputs ({', '.join(outputs)})",
                                 hint="write output=task, e.g. --task box=regression", settings=("task",))
            name, value = outputs[0], item
        name, value = name.strip(), value.strip()
        if name not in outputs:
            close = difflib.get_close_matches(name, outputs, n=1, cutoff=0.5)
            raise InputError(f"task for '{name}' names no output of the model (outputs: {', '.join(outputs)})"
                             + (f"; did you mean '{close[0]}'?" if close else ""), hint="use the output names edgekit inspect shows",
                             settings=("task",))
        if value not in TASK_NAMES:
            close = difflib.get_close_matches(value, TASK_NAMES, n=1, cutoff=0.5)
            raise InputError(f"unknown task '{value}' for output {name} (tasks: {', '.join(TASK_NAMES)})"
                             + (f"; did you mean '{close[0]}'?" if close else ""), hint="e.g. --task box=regression", settings=("task",))
        found[name] = Task(value)
    return found


_ACTIVATION_LAYERS = {"Softmax": "softmax"}


def keras_output_activations(keras_model: Any) -> list[str | None]:
    """The activation of the layer producing each output of a Keras model (``softmax``, ``sigmoid``, ``linear``...)."""
    found: list[str | None] = []
    for tensor in getattr(keras_model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        layer = getattr(history, "operation", None) or getattr(history, "layer", None)
        name: str | None = None
        if layer is not None:
            cls = type(layer).__name__
            if cls in _ACTIVATION_LAYERS:
                name = _ACTIVATION_LAYERS[cls]
            else:
                act = getattr(layer, "activation", None)
                name = getattr(act, "__name__", None) if act is not None else None
        found.append(name)
    return found


_TFLITE_ACTIVATIONS = {"SOFTMAX": "softmax", "LOGISTIC": "sigmoid", "LOG_SOFTMAX": "log_softmax"}
_PASS_THROUGH = {"DEQUANTIZE", "QUANTIZE", "RESHAPE", "SQUEEZE", "CAST"}


def tflite_output_activations(info: Any, order: list[int]) -> list[str | None]:
    """The activation ending each output of a .tflite file (its last op, through (de)quantize/reshape), model order."""
    producer = {t: op for op in info.operators if op.subgraph == 0 for t in op.outputs}
    by_name = {t.name: t.index for t in info.tensors}
    found: list[str | None] = []
    for i in order:
        index = by_name.get(info.outputs[i].name)
        name = None
        for _ in range(8):
            op = producer.get(index) if index is not None else None
            if op is None:
                break
            if op.op in _PASS_THROUGH and op.inputs:
                index = op.inputs[0]
                continue
            name = _TFLITE_ACTIVATIONS.get(op.op, op.fused_activation.lower() if op.fused_activation and op.fused_activation != "NONE" else "linear")
            break
        found.append(name)
    return found


def detect_tasks(outputs: list[tuple[str, tuple[int | None, ...]]], *, activations: list[str | None] | None = None,
                 losses: tuple[Any, ...] | list[Any] = (), targets: tuple[np.ndarray | None, ...] | list[Any] = (),
                 overrides: dict[str, Task] | None = None) -> list[OutputTask]:
    """The task of every output (``(name, shape)`` pairs in the model's order)."""
    found = []
    for k, (name, shape) in enumerate(outputs):
        found.append(detect_task(name, shape, activation=(activations or [None] * len(outputs))[k] if activations else None,
                                 loss=losses[k] if k < len(losses) else None, labels=targets[k] if k < len(targets) else None,
                                 override=(overrides or {}).get(name)))
    return found


def conform_targets(targets: tuple[np.ndarray | None, ...], tasks: list[OutputTask], shapes: list[tuple[int | None, ...]],
                    source: str) -> tuple[np.ndarray | None, ...]:
    """Each output's targets checked against its task and shape, in the form the metrics and losses take.

    Classification: class ids (one-hot rows become ids), within the output's classes. Binary and
    multilabel: 0/1 values shaped like the output. Regression: real values with the output's size
    per sample. Segmentation: per-pixel class ids (one-hot masks become ids). Embedding/none:
    targets are ignored.

    Raises:
        DataError: targets whose shape or values do not fit the output, naming both.
    """
    out: list[np.ndarray | None] = []
    for y, task, shape in zip(targets, tasks, shapes, strict=False):
        if y is None or not task.task.labelled:
            out.append(None)
            continue
        n = len(y)
        tail = tuple(shape[1:])
        where = f"targets of output '{task.output}' in {source}" if len(tasks) > 1 else f"labels in {source}"
        size = int(np.prod([d for d in tail if d is not None])) if tail and all(d is not None for d in tail) else None
        if task.task is Task.CLASSIFICATION:
            ids = y
            if ids.ndim == 2 and ids.shape[1] > 1:
                ids = ids.argmax(axis=1)
            ids = ids.reshape(n, -1)
            if ids.shape[1] != 1 or np.asarray(ids).dtype.kind == "f":
                raise DataError(f"{where} have shape {y.shape} ({y.dtype}); a classifier output {tail} takes one class id per sample",
                                hint="give integer class ids (N,) or one-hot rows (N, classes)")
            ids = ids.reshape(-1).astype(np.int64)
            classes = task.classes
            if ids.size and ids.min() < 0:
                raise DataError(f"{where} contain negative class ids ({int(ids.min())})", hint="class ids must be 0..classes-1")
            if classes and ids.size and int(ids.max()) >= classes:
                raise DataError(f"{where} go up to {int(ids.max())}, but the model has {classes} classes (ids 0..{classes - 1})",
                                hint="check the labels belong to this model's dataset")
            out.append(ids)
        elif task.task in (Task.BINARY, Task.MULTILABEL):
            flat = y.reshape(n, -1).astype(np.float32)
            if size is not None and flat.shape[1] != size:
                raise DataError(f"{where} have {flat.shape[1]} value(s) per sample, the output {tail} has {size}",
                                hint="give one 0/1 target per output unit")
            if flat.size and (flat.min() < 0 or flat.max() > 1):
                raise DataError(f"{where} go from {flat.min():g} to {flat.max():g}; {task.task.value} targets are 0 or 1",
                                hint="give 0/1 targets (or probabilities) for sigmoid outputs")
            out.append(flat.reshape((n, *[int(d) for d in tail if d is not None])) if size is not None else flat)
        elif task.task is Task.REGRESSION:
            flat = y.reshape(n, -1).astype(np.float32)
            if size is not None and flat.shape[1] != size:
                raise DataError(f"{where} have {flat.shape[1]} value(s) per sample, the output {tail} has {size}",
                                hint="give targets shaped like the output, one row per sample")
            out.append(flat.reshape((n, *[int(d) for d in tail if d is not None])) if size is not None else flat)
        else:  # segmentation
            classes = task.classes or 1
            pixels = (size // classes) if size else None
            ids = y
            if ids.ndim == len(tail) + 1 and ids.shape[-1] == classes and classes > 1 and ids.size == n * (size or -1):
                ids = ids.argmax(axis=-1)
            ids = ids.reshape(n, -1)
            if pixels is not None and ids.shape[1] != pixels:
                raise DataError(f"{where} have {ids.shape[1]} values per sample; the output {tail} has {pixels} pixels",
                                hint="give one class id per pixel (N, H, W) or one-hot masks (N, H, W, classes)")
            if ids.dtype.kind == "f" and not np.all(ids == np.round(ids)):
                raise DataError(f"{where} are not whole numbers", hint="give per-pixel integer class ids")
            ids = ids.astype(np.int64)
            if ids.size and (ids.min() < 0 or int(ids.max()) >= classes):
                raise DataError(f"{where} hold class ids {int(ids.min())}..{int(ids.max())}, the output has {classes} classes",
                                hint="class ids must be 0..classes-1")
            out.append(ids.reshape((n, *[int(d) for d in tail[:-1] if d is not None])) if pixels is not None else ids)
    return tuple(out)


def with_tasks(dataset: Any, tasks: list[OutputTask], shapes: list[tuple[int | None, ...]], what: str | None = None) -> Any:
    """``dataset`` with its targets conformed to ``tasks`` (:func:`conform_targets`); ``what`` names the
    setting the data came from in messages (``--data``)."""
    targets = conform_targets(dataset.targets, tasks, shapes, f"{what} {dataset.source}" if what else dataset.source)
    return replace(dataset, y=targets[0] if targets else None, more_y=tuple(targets[1:]))


def check_overrides(overrides: dict[str, Task] | None, outputs: list[str]) -> None:
    """A ``--task`` for an output the model does not have is an error (parse_task_overrides checks names)."""
    for name in overrides or {}:
        if name not in outputs:
            raise InputError(f"task for '{name}' names no output of the model (outputs: {', '.join(outputs)})",
                             hint="use the output names edgekit inspect shows", settings=("task",))


def compiled_losses_of(model: Any, names: list[str]) -> tuple[Any, ...]:
    """The loss a compiled Keras model has for each output (``model.loss``: one, a list or a dict by name)."""
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        return tuple(loss.get(n) for n in names)
    if isinstance(loss, (list, tuple)):
        return tuple(loss)
    return () if loss is None else tuple(loss for _ in names)


def keras_output_tasks(model: Any) -> list[OutputTask]:
    """Each output's task from a Keras model alone (its compiled loss if compiled, activation, shape)."""
    names = list(getattr(model, "output_names", None) or [f"output_{i}" for i in range(len(model.outputs))])
    losses = compiled_losses_of(model, names)
    return detect_tasks([(n, tuple(t.shape)) for n, t in zip(names, model.outputs, strict=True)],
                        activations=keras_output_activations(model), losses=losses)
