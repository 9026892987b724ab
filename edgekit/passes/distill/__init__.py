"""Knowledge distillation: train a small student Keras model from a large teacher.

Hinton-style distillation (Hinton, Vinyals, Dean 2015): the student learns from the teacher's
outputs softened at a temperature ``T`` mixed with the hard labels::

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross_entropy(labels, student)

The ``T^2`` factor keeps the soft term's gradients on the same scale whatever ``T`` is. Teachers
and students may output logits or probabilities (a final softmax or sigmoid): the convention is
detected and probabilities are turned back into logits with ``log`` before softening.

The package, by what each module owns:

- :mod:`~edgekit.passes.distill.outputs`: output conventions and the loss terms (:func:`kd_terms`);
- :mod:`~edgekit.passes.distill.checks`: settings, teacher/student pairs, hints, labels;
- :mod:`~edgekit.passes.distill.keras_classes`: the Keras loss, metric and ``DistillingModel``
  (defined on first use);
- :mod:`~edgekit.passes.distill.fit`: :func:`fit_with_teacher`, the reusable training step (other
  passes' recovery training is :mod:`edgekit.passes.recovery`);
- :mod:`~edgekit.passes.distill.students`: students derived from the teacher by width;
- :mod:`~edgekit.passes.distill.distill_pass`: :class:`DistillConfig` and :class:`DistillPass`.

The ``edgekit distill`` command (teacher, baseline and student measured side by side) is
:func:`edgekit.workflows.distill.distill`. Importing this package imports no TensorFlow.

Example:
    >>> result = run_passes([DistillPass(DistillConfig(width=0.5, epochs=5))], ModelState(keras=teacher), ctx)  # doctest: +SKIP
    >>> result.steps[0].details["fit"]["cache_note"]  # doctest: +SKIP
    'teacher ran once over 600 samples; its outputs were reused for 5 epochs'
"""

from __future__ import annotations

from edgekit.passes.distill.checks import Hint, check_distill_options, check_labels, check_pair, check_single_io
from edgekit.passes.distill.distill_pass import DistillConfig, DistillPass, check_distill_config
from edgekit.passes.distill.fit import FitResult, fit_with_teacher, make_augmentation
from edgekit.passes.distill.keras_classes import distillation_loss, keras_classes, make_adapter, packed_accuracy_metric
from edgekit.passes.distill.outputs import (
    OutputConvention,
    OutputKind,
    compile_plain,
    detect_output_kind,
    kd_terms,
    run_teacher,
    teacher_targets,
    to_logits,
    top1,
)
from edgekit.passes.distill.students import WidthChange, copy_with_weights, derive_student, fresh_copy, plan_width

__all__ = [
    "DistillConfig", "DistillPass", "FitResult", "Hint", "OutputConvention", "OutputKind", "WidthChange", "check_distill_config",
    "check_distill_options", "check_labels", "check_pair", "check_single_io", "compile_plain", "copy_with_weights", "derive_student",
    "detect_output_kind", "distillation_loss", "fit_with_teacher", "fresh_copy", "kd_terms", "keras_classes", "make_adapter",
    "make_augmentation", "packed_accuracy_metric", "plan_width", "run_teacher", "teacher_targets", "to_logits", "top1",
]
