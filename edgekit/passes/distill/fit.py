"""Training a student with a teacher: :func:`fit_with_teacher`, the reusable training step.

It fine-tunes any Keras ``student`` with ``teacher`` as the teacher, through the student's own
``compile``/``fit`` so the caller's callbacks (pruning masks...) see the student itself. Without
augmentation or hints the teacher runs once over the data and its outputs are reused every epoch.

Example:
    >>> result = fit_with_teacher(student, teacher, (x, y), epochs=3, batch_size=64)  # doctest: +SKIP
    >>> result.teacher_cached, result.history["loss"][-1]  # doctest: +SKIP
    (True, 0.41)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset
from edgekit.core.errors import DataError, InputError
from edgekit.core.tfshim import keras
from edgekit.passes import distribute
from edgekit.passes.distill.checks import Hint, check_distill_options, check_pair
from edgekit.passes.distill.keras_classes import distillation_loss, keras_classes, packed_accuracy_metric
from edgekit.passes.distill.outputs import (
    OutputConvention,
    activation_decides,
    compile_plain,
    detect_output_kind,
    run_teacher,
    teacher_targets,
    to_logits,
    uses_sigmoid,
)

DEFAULT_CACHE_LIMIT_MB = 1024


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit_with_teacher` did."""

    history: dict[str, list[float]]
    teacher_outputs: OutputConvention
    student_outputs: OutputConvention
    teacher_cached: bool
    teacher_forward_samples: int
    cache_note: str
    adapters: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "history": self.history,
            "teacher_outputs": self.teacher_outputs.to_dict(),
            "student_outputs": self.student_outputs.to_dict(),
            "teacher_cached": self.teacher_cached,
            "teacher_forward_samples": self.teacher_forward_samples,
            "cache_note": self.cache_note,
            "hint_adapters": self.adapters,
            "seconds": round(self.seconds, 1),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitResult:
        """The inverse of :meth:`to_dict` (seconds rounded)."""
        return cls(history=data["history"], teacher_outputs=OutputConvention.from_dict(data["teacher_outputs"]),
                   student_outputs=OutputConvention.from_dict(data["student_outputs"]), teacher_cached=data["teacher_cached"],
                   teacher_forward_samples=data["teacher_forward_samples"], cache_note=data["cache_note"],
                   adapters=list(data["hint_adapters"]), seconds=data["seconds"])


def _as_xy(data: Dataset | tuple[np.ndarray, np.ndarray | None]) -> tuple[np.ndarray, np.ndarray | None]:
    if isinstance(data, Dataset):
        return data.x, data.y
    x, y = data
    return np.asarray(x), None if y is None else np.asarray(y)


def _epoch_callback(on_epoch: Callable[[int, int, dict[str, float]], None] | None, epochs: int) -> list[Any]:
    if on_epoch is None:
        return []

    def report(epoch: int, logs: dict[str, Any] | None = None) -> None:
        on_epoch(epoch + 1, epochs, {key: float(v) for key, v in (logs or {}).items()})

    return [keras().callbacks.LambdaCallback(on_epoch_end=report)]


def make_augmentation(name: str | None, seed: int = 0) -> Any:
    """Keras augmentation layers for the ``augment`` setting (``flip``, ``shift``, ``flip+shift``), or None."""
    if name in (None, "", "none"):
        return None
    k = keras()
    parts = name.split("+")
    unknown = [p for p in parts if p not in ("flip", "shift")]
    if unknown:
        raise InputError(f"augment '{name}' is not one of none, flip, shift, flip+shift", hint="e.g. augment shift", settings=("augment",))
    layers = []
    if "flip" in parts:
        layers.append(k.layers.RandomFlip("horizontal", seed=seed))
    if "shift" in parts:
        layers.append(k.layers.RandomTranslation(0.1, 0.1, fill_mode="constant", seed=seed + 1))
    return k.Sequential(layers, name="augment")


def fit_with_teacher(
    student: Any,
    teacher: Any,
    train: Dataset | tuple[np.ndarray, np.ndarray | None],
    val: Dataset | tuple[np.ndarray, np.ndarray] | None = None,
    *,
    epochs: int,
    temperature: float = 1.0,
    alpha: float = 0.3,
    batch_size: int = 128,
    learning_rate: float | None = 1e-3,
    optimizer: Any = None,
    hints: Sequence[Hint | str] = (),
    hint_weight: float = 1.0,
    augment: Any = None,
    callbacks: Sequence[Any] = (),
    seed: int = 0,
    teacher_outputs: OutputConvention | None = None,
    student_outputs: OutputConvention | None = None,
    cache: bool = True,
    cache_limit_mb: float = DEFAULT_CACHE_LIMIT_MB,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
    recompile: bool = True,
) -> FitResult:
    """Trains ``student`` (in place) with ``teacher`` as the teacher; the teacher is never changed.

    This is the recovery hook for other passes: fine-tune a pruned or fake-quantized model with
    the original model as the teacher by calling this instead of ``model.fit``. Without hints or
    augmentation the student is compiled with :func:`distillation_loss` and fitted on packed
    targets, so ``callbacks`` (pruning masks, ...) receive the student itself as ``self.model``,
    and the teacher runs exactly once over ``train`` (its outputs are cached for every epoch).
    With hints or augmentation a :class:`DistillingModel` wraps the student.

    Args:
        student: a built Keras model; trained in place.
        teacher: a Keras model with the same input shape and number of outputs (classes).
        train: a :class:`~edgekit.core.datatypes.Dataset` or ``(x, y)``; ``y`` may be None when ``alpha`` is 1.
        val: optional labelled data for ``val_accuracy`` in the history.
        epochs, batch_size, seed: training settings (``keras.utils.set_random_seed(seed)`` first).
        temperature, alpha: softening temperature and weight of the soft term (``1 - alpha``: hard labels).
        learning_rate, optimizer: Adam with ``learning_rate`` unless an optimizer is given.
        hints: ``Hint("teacher_layer", "student_layer")`` or ``"teacher_layer:student_layer"``.
        hint_weight: weight of the (relative MSE) hint loss.
        augment: a callable/Keras layer applied to each training batch (the teacher then runs per batch).
        callbacks: Keras callbacks for ``fit``.
        teacher_outputs, student_outputs: override the detected output conventions.
        cache: reuse teacher outputs across epochs when nothing changes the inputs (default).
        cache_limit_mb: with hints, cache teacher features only if they fit in this many MB.
        on_epoch: ``on_epoch(epoch, epochs, logs)`` after each epoch (progress display).
        recompile: for the packed path, leave the student compiled with a standard loss afterwards
            (so it saves and reloads without edgekit's custom loss).

    Example (prune's fine-tuning with the original model as teacher):
        >>> fit_with_teacher(pruned, original, train, val, epochs=2, batch_size=64,
        ...                  callbacks=[mask_callback(pruned, masks)])  # doctest: +SKIP
    """
    k = keras()
    started = time.perf_counter()
    hint_list = [h if isinstance(h, Hint) else Hint.parse(h) for h in hints]
    check_pair(teacher, student, hints=hint_list)
    check_distill_options(epochs=epochs, temperature=temperature, alpha=alpha, batch_size=batch_size,
                          learning_rate=learning_rate if optimizer is None else 1.0, hint_weight=hint_weight)
    x, y = _as_xy(train)
    if y is None and alpha < 1.0:
        raise DataError("training data has no labels, but alpha < 1 needs them for the hard-label term",
                        hint="give labelled data (x and y) or use alpha 1.0 (teacher only)")
    val_xy = _as_xy(val) if val is not None else None
    if val_xy is not None and val_xy[1] is None:
        val_xy = None
    k.utils.set_random_seed(seed)
    s_conv = student_outputs or detect_output_kind(student, None if activation_decides(student) else run_teacher(student, x[:batch_size]))
    opt = optimizer if optimizer is not None else k.optimizers.Adam(1e-3 if learning_rate is None else learning_rate)
    cbs = [*callbacks, *_epoch_callback(on_epoch, epochs)]
    n = len(x)

    if not hint_list and augment is None and cache:
        if alpha == 0.0:  # labels only (a baseline): the teacher's term is off, so it need not run
            t_conv = teacher_outputs or detect_output_kind(teacher)
            classes = int(student.outputs[0].shape[-1])
            labels = np.asarray(y, np.float32).reshape(-1, 1)
            packed = np.concatenate([labels, np.zeros((n, classes), np.float32)], axis=1)
            forward, note = 0, "alpha 0: trained on the labels alone; the teacher did not run"
        else:
            packed, t_conv = teacher_targets(teacher, x, y, teacher_outputs=teacher_outputs)
            forward, note = n, f"teacher ran once over {n} samples; its outputs were reused for {epochs} epochs"
        uses_sigmoid(t_conv.kind, s_conv.kind, packed.shape[1] - 1)  # fail on softmax vs sigmoid now
        student.compile(optimizer=opt, loss=distillation_loss(temperature, alpha, student_kind=s_conv.kind),
                        metrics=[packed_accuracy_metric(s_conv.kind)])
        history = distribute.train(student, x, packed, batch_size=batch_size, epochs=epochs, validation_data=val_xy, callbacks=cbs,
                                   seed=seed)
        if recompile:
            compile_plain(student, s_conv.kind)
        return FitResult(_history(history), t_conv, s_conv, True, forward, note, seconds=time.perf_counter() - started)

    # the teacher's convention, from its layers or one batch
    t_conv = teacher_outputs or detect_output_kind(teacher)
    forward = 0
    if teacher_outputs is None and not activation_decides(teacher):
        probe = x[: min(n, batch_size)]
        t_conv = detect_output_kind(teacher, run_teacher(teacher, probe))
        forward += len(probe)
    feature_bytes = 4 * n * sum(int(np.prod(teacher.get_layer(h.teacher_layer).output.shape[1:])) for h in hint_list)
    cached = augment is None and cache and feature_bytes <= cache_limit_mb * 2**20
    model = keras_classes().DistillingModel(student, teacher, temperature=temperature, alpha=alpha, teacher_kind=t_conv.kind,
                                       student_kind=s_conv.kind, hints=hint_list, hint_weight=hint_weight, augment=augment,
                                       cached=cached)
    if cached:
        feature_model = model.teacher_features
        outs = distribute.predict(feature_model, x)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        targets: Any = {"labels": np.full(n, -1, np.float32) if y is None else y.astype(np.float32),
                   "teacher": to_logits(np.asarray(outs[0]).reshape(n, -1), t_conv.kind)}
        targets.update({f"hint{i}": np.asarray(o, np.float32) for i, o in enumerate(outs[1:])})
        forward += n
        note = (f"teacher ran once over {n} samples; its outputs and {len(hint_list)} hint feature(s) "
                f"({feature_bytes / 2**20:.0f} MB) were reused for {epochs} epochs")
    else:
        targets = np.full(n, -1, np.float32) if y is None else y.astype(np.float32)
        steps = int(np.ceil(n / batch_size))
        forward += epochs * n
        if augment is not None:
            note = f"augmentation changes every batch, so the teacher ran on each of {steps * epochs} training batches"
        elif not cache:
            note = "cache off: the teacher ran on every training batch"
        else:
            note = (f"hint features would need {feature_bytes / 2**20:.0f} MB (> {cache_limit_mb:.0f} MB cache limit), "
                    "so the teacher ran on every training batch")
    model.compile(optimizer=opt)
    history = distribute.train(model, x, targets, batch_size=batch_size, epochs=epochs, validation_data=val_xy, callbacks=cbs,
                               seed=seed)
    if recompile:
        compile_plain(student, s_conv.kind)
    return FitResult(_history(history), t_conv, s_conv, cached, forward, note, adapters=model.adapter_info,
                     seconds=time.perf_counter() - started)


def _history(history: Any) -> dict[str, list[float]]:
    return {key: [round(float(v), 6) for v in values] for key, values in history.history.items()}


