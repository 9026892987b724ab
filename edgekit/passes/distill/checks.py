"""Checks that fail before any training: settings, teacher/student pairs, hint layers, labels.

Example:
    >>> check_pair(teacher, student, hints=[Hint.parse("conv2:conv2")])  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset
from edgekit.core.errors import DataError, InputError, ModelError


@dataclass(frozen=True)
class Hint:
    """Feature distillation between a teacher layer and a student layer (``TEACHER:STUDENT``)."""

    teacher_layer: str
    student_layer: str

    @classmethod
    def parse(cls, text: str) -> Hint:
        """A hint from ``"TEACHER_LAYER:STUDENT_LAYER"``; raises InputError (setting ``hints``) otherwise."""
        parts = text.split(":")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise InputError(f"hints '{text}' is not TEACHER_LAYER:STUDENT_LAYER",
                             hint="e.g. hints conv2:conv2 (layer names from `edgekit inspect`)", settings=("hints",))
        return cls(parts[0].strip(), parts[1].strip())


def check_student_choice(student: Any, width: float | None) -> None:
    """Raises unless exactly one of a student model and a width is given."""
    if (student is None) == (width is None):
        raise InputError("give exactly one of student S.keras or width W", hint="e.g. width 0.5 derives a half-width student from the teacher",
                         settings=("student", "width"))


def check_distill_options(*, epochs: int, temperature: float, alpha: float, batch_size: int, learning_rate: float | None,
                          hint_weight: float = 1.0, width: float | None = None) -> None:
    """Rejects impossible settings before anything loads or trains (errors name the settings)."""
    if epochs < 1:
        raise InputError(f"epochs must be at least 1, got {epochs}", hint="e.g. epochs 5", settings=("epochs",))
    if not temperature > 0 or not np.isfinite(temperature):
        raise InputError(f"temperature must be positive, got {temperature}", hint="Hinton et al. use 2-20; try temperature 4",
                         settings=("temperature",))
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}", hint="it weighs the teacher term, the labels get the rest (e.g. 0.9)",
                         settings=("alpha",))
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}", hint="e.g. batch_size 128", settings=("batch_size",))
    if learning_rate is not None and (not learning_rate > 0 or not np.isfinite(learning_rate)):
        raise InputError(f"learning_rate must be positive, got {learning_rate}", hint="e.g. learning_rate 0.001", settings=("learning_rate",))
    if not hint_weight >= 0 or not np.isfinite(hint_weight):
        raise InputError(f"hint_weight must be >= 0, got {hint_weight}", hint="e.g. hint_weight 1", settings=("hint_weight",))
    if width is not None and not (0.0 < width <= 1.0):
        raise InputError(f"width must be in (0, 1], got {width}", hint="e.g. width 0.5 halves every layer's filters/units",
                         settings=("width",))


def check_single_io(model: Any, role: str) -> None:
    """Raises unless ``model`` (the ``role``: teacher or student) has one input and one output."""
    inputs, outputs = getattr(model, "inputs", None) or [], getattr(model, "outputs", None) or []
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(
            f"the {role} has {len(inputs)} input(s) and {len(outputs)} output(s); distillation handles single-input, single-output classifiers",
            hint="give a model with one input and one (classes) output",
        )


def check_pair(teacher: Any, student: Any, *, hints: Sequence[Hint] = ()) -> None:
    """Fails before training when teacher and student do not fit together.

    Checks: one input and one output each, the same input shape, the same number of classes,
    and that hint layers exist with compatible feature shapes.
    """
    check_single_io(teacher, "teacher")
    check_single_io(student, "student")
    t_in, s_in = tuple(teacher.inputs[0].shape[1:]), tuple(student.inputs[0].shape[1:])
    if t_in != s_in:
        raise ModelError(
            f"teacher and student take different inputs: teacher {format_shape((None, *t_in))}, student {format_shape((None, *s_in))}",
            hint="the student must take the same input shape as the teacher (same preprocessing and resolution)",
        )
    t_out, s_out = tuple(teacher.outputs[0].shape[1:]), tuple(student.outputs[0].shape[1:])
    if t_out != s_out:
        t_classes, s_classes = int(np.prod([d or 1 for d in t_out])), int(np.prod([d or 1 for d in s_out]))
        raise ModelError(
            f"teacher and student disagree on the output: teacher has {t_classes} classes ({format_shape((None, *t_out))}), "
            f"student {s_classes} ({format_shape((None, *s_out))})",
            hint="the student's final layer must have as many units as the teacher's (the same classes)",
        )
    if len(t_out) != 1:
        raise ModelError(f"the teacher's output has shape {format_shape((None, *t_out))}; distillation expects (N, classes)",
                         hint="distill classifiers whose output is one vector of classes per sample")
    for h in hints:
        for model, name, role in ((teacher, h.teacher_layer, "teacher"), (student, h.student_layer, "student")):
            names = [layer.name for layer in model.layers]
            if name not in names:
                raise ModelError(f"hints names layer '{name}', which the {role} does not have",
                                 hint=f"{role} layers: {', '.join(names[:12])}{' ...' if len(names) > 12 else ''}", settings=("hints",))
        check_hint_shapes(tuple(student.get_layer(h.student_layer).output.shape), tuple(teacher.get_layer(h.teacher_layer).output.shape))


def check_labels(data: Dataset, classes: int, what: str) -> None:
    """Raises unless the labels of ``data`` (if any) are class ids of a ``classes``-class teacher.

    ``what`` names the data as a setting (``data``, ``val``), shown with its flag by the CLI.
    """
    if data.y is None:
        return
    limit = max(classes, 2)
    if data.y.size and int(data.y.max()) >= limit:
        raise DataError(f"labels in {what} go up to {int(data.y.max())}, but the teacher has {classes} classes (ids 0..{limit - 1})",
                        hint="check the labels belong to the teacher's dataset", settings=(what,))


def check_hint_shapes(student_shape: tuple[Any, ...], teacher_shape: tuple[Any, ...]) -> None:
    """Raises ModelError unless the two feature shapes differ at most in their channel count."""
    if len(student_shape) != len(teacher_shape) or tuple(student_shape[1:-1]) != tuple(teacher_shape[1:-1]):
        raise ModelError(
            f"hint features have shapes {format_shape(student_shape)} (student) and {format_shape(teacher_shape)} (teacher); "
            "only the channel count may differ",
            hint="pair layers with the same spatial size (e.g. the same block of both models)",
        )


def format_shape(shape: Sequence[Any]) -> str:
    """``(None, 8, 8, 3)`` -> ``8x8x3`` (the batch axis dropped, unknown sizes as ``?``)."""
    return "x".join("?" if d is None else str(d) for d in tuple(shape)[1:])

