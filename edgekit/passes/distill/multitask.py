"""Distillation for any model: several inputs and outputs, each output matched to the teacher by its task.

The classifier path (:func:`edgekit.passes.distill.fit.fit_with_teacher`: hints, augmentation,
a packed-target loss) serves single-input, single-output classifiers. Every other model — a
detector with class logits and boxes, a segmenter, a regressor, a binary or multilabel model, a
model with an image and a metadata input — trains here: each student output gets two losses,

- its **label** loss (the loss its task calls for, or the teacher's compiled one), weighted
  ``(1 - alpha) * loss_weight``, and
- its **teacher** loss, weighted ``alpha * loss_weight``: softened KL for classification and
  segmentation (per pixel, temperature ``T``, scaled by ``T²``), binary cross-entropy against the
  teacher's probabilities for sigmoid outputs, mean squared error for regression and embeddings.

The teacher runs once over the training data (its outputs are the second set of targets).

Example:
    >>> fit = fit_any_task(student, teacher, train, val, tasks, epochs=3)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset
from edgekit.core.tasks import OutputTask, Task, keras_output_tasks
from edgekit.core.tfshim import keras
from edgekit.passes import distribute
from edgekit.passes.distill.fit import FitResult
from edgekit.passes.distill.outputs import OutputConvention, OutputKind


def is_classic(model: Any, tasks: list[OutputTask] | tuple[OutputTask, ...] | None = None) -> bool:
    """A single-input, single-output classifier ((batch, classes) or one sigmoid unit): the classifier path serves it."""
    if not (len(model.inputs) == 1 and len(model.outputs) == 1 and len(model.outputs[0].shape) == 2):
        return False
    if not tasks:
        tasks = keras_output_tasks(model)
    return tasks[0].task in (Task.CLASSIFICATION, Task.BINARY)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def teacher_targets(task: OutputTask, raw: np.ndarray, temperature: float) -> np.ndarray:
    """What the student's teacher loss compares with: softened probabilities, probabilities or values."""
    raw = np.asarray(raw, dtype=np.float32)
    if task.task in (Task.CLASSIFICATION, Task.SEGMENTATION):
        logits = np.log(np.clip(raw, 1e-7, 1.0)) if task.probabilities else raw
        return _softmax(logits / temperature).astype(np.float32)
    if task.task in (Task.BINARY, Task.MULTILABEL):
        return (raw if task.probabilities else 1.0 / (1.0 + np.exp(-raw))).astype(np.float32)
    return raw


def teacher_loss(task: OutputTask, temperature: float) -> Any:
    """The teacher term of one output (a Keras loss function of (teacher target, student output))."""
    k = keras()
    ops = k.ops
    t2 = float(temperature) ** 2

    if task.task in (Task.CLASSIFICATION, Task.SEGMENTATION):
        def soft_kl(target: Any, pred: Any) -> Any:
            logits = ops.log(ops.clip(pred, 1e-7, 1.0)) if task.probabilities else pred
            log_p = ops.log_softmax(logits / temperature, axis=-1)
            ce = -ops.sum(target * log_p, axis=-1)
            entropy = -ops.sum(target * ops.log(ops.clip(target, 1e-7, 1.0)), axis=-1)
            return t2 * (ce - entropy)

        soft_kl.__name__ = f"kd_kl_T{temperature:g}"
        return soft_kl
    if task.task in (Task.BINARY, Task.MULTILABEL):
        return k.losses.BinaryCrossentropy(from_logits=not task.probabilities)
    return k.losses.MeanSquaredError()


def label_loss(task: OutputTask) -> Any:
    """The label term of one output, from its task."""
    losses = keras().losses
    if task.task in (Task.CLASSIFICATION, Task.SEGMENTATION):
        return losses.SparseCategoricalCrossentropy(from_logits=not task.probabilities)
    if task.task in (Task.BINARY, Task.MULTILABEL):
        return losses.BinaryCrossentropy(from_logits=not task.probabilities)
    return losses.MeanSquaredError()


def fit_any_task(student: Any, teacher: Any, train: Dataset, val: Dataset | None, tasks: list[OutputTask], *, epochs: int,
                 temperature: float = 1.0, alpha: float = 0.3, batch_size: int = 64, learning_rate: float | None = 1e-3,
                 optimizer: Any = None, loss_weights: list[float] | None = None, seed: int = 0,
                 on_epoch: Callable[[int, int, dict[str, float]], None] | None = None) -> FitResult:
    """Trains ``student`` in place against the labels and the teacher, output by output (see the module docstring).

    ``alpha`` weighs the teacher terms (0: labels only, the baseline; 1: the teacher only, no labels needed).
    """
    k = keras()
    k.utils.set_random_seed(seed)
    started = time.perf_counter()
    n_out = len(student.outputs)
    weights = list(loss_weights) if loss_weights is not None else [1.0] * n_out
    raw = distribute.predict(teacher, train.feed)
    raw_list = [np.asarray(r) for r in (raw if isinstance(raw, (list, tuple)) else [raw])]
    soft = [teacher_targets(t, r, temperature) for t, r in zip(tasks, raw_list, strict=True)]
    use_labels = alpha < 1.0
    outputs, losses, loss_w, targets = [], [], [], []
    for i, (tensor, task) in enumerate(zip(student.outputs, tasks, strict=True)):
        if use_labels and train.targets[i] is not None:
            outputs.append(k.layers.Identity(name=f"label_{i}")(tensor))
            losses.append(label_loss(task))
            loss_w.append((1.0 - alpha) * weights[i])
            targets.append(train.targets[i])
        if alpha > 0.0:
            outputs.append(k.layers.Identity(name=f"teacher_{i}")(tensor))
            losses.append(teacher_loss(task, temperature))
            loss_w.append(alpha * weights[i])
            targets.append(soft[i])
    wrapper = k.Model(student.inputs, outputs)
    opt = optimizer if optimizer is not None else k.optimizers.Adam(learning_rate=learning_rate or 1e-3)
    wrapper.compile(optimizer=opt, loss=losses, loss_weights=loss_w)
    history: dict[str, list[float]] = {}

    def report(epoch: int, logs: dict[str, Any] | None) -> None:
        entry = {key: float(v) for key, v in (logs or {}).items()}
        for key, v in entry.items():
            history.setdefault(key, []).append(v)
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs, entry)

    distribute.train(wrapper, train.feed, targets, batch_size=batch_size, epochs=epochs, seed=seed,
                     callbacks=[k.callbacks.LambdaCallback(on_epoch_end=report)])
    kinds = ", ".join(f"{t.output}: {t.task.value}" for t in tasks)
    convention = OutputConvention(OutputKind.SOFTMAX if tasks[0].probabilities else OutputKind.LOGITS, f"per output task ({kinds})")
    return FitResult(history=history, teacher_outputs=convention, student_outputs=convention, teacher_cached=True,
                     teacher_forward_samples=len(train), cache_note="teacher outputs computed once for every output",
                     seconds=time.perf_counter() - started)
