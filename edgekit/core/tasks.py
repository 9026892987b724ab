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
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.datatypes import Serializable
from edgekit.core.errors import InputError


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
