"""Recovery training for other passes: fine-tuning with the original model as the teacher.

``edgekit prune --distill`` fine-tunes through :func:`fit_for_pass`, ``edgekit qat --distill``
through :func:`~edgekit.passes.distill.fit_with_teacher` with :data:`RECOVERY_TEMPERATURE` and
:data:`RECOVERY_ALPHA`.

Example:
    >>> history = fit_for_pass(pruned, original, train, val, settings, [masks], title="prune")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgekit.core.datatypes import Dataset
from edgekit.core.keras_graph import DEPTHWISE, WIDTH_FIELDS
from edgekit.passes.distill.checks import Hint
from edgekit.passes.distill.fit import fit_with_teacher
from edgekit.passes.distill.outputs import output_layer
from edgekit.passes.training import lr_schedule_callback, make_optimizer, progress_callback

# Recovery defaults (prune/qat --distill), measured on Fashion-MNIST pruning (bench/RESULTS.md): a
# soft term at T=4, alpha=0.9 recovered less than the labels alone; matching the original's hidden
# features plus a mild T=1 output term recovered more.
RECOVERY_TEMPERATURE = 1.0
RECOVERY_ALPHA = 0.5
HINTABLE = frozenset(WIDTH_FIELDS) | DEPTHWISE


def matching_hints(teacher: Any, student: Any) -> list[Hint]:
    """Hints for every hidden Conv/Dense layer that both models have, by name, with the same output shape.

    For a pruned or fake-quantized copy of the teacher that is every hidden weighted layer (the
    classifier is left to the output term). Layers whose shape changed (channels removed) are skipped.
    """
    out_layer = output_layer(student)
    student_layers = {layer.name: layer for layer in getattr(student, "layers", [])}
    hints = []
    for layer in getattr(teacher, "layers", []):
        other = student_layers.get(layer.name)
        if other is None or other is out_layer or type(layer).__name__ not in HINTABLE:
            continue
        try:
            same = tuple(layer.output.shape) == tuple(other.output.shape)
        except (AttributeError, ValueError):  # a layer called more than once has no single output
            continue
        if same and other is not output_layer(teacher):
            hints.append(Hint(layer.name, layer.name))
    return hints


def fit_for_pass(model: Any, source_model: Any, train: Dataset, val: Dataset | None, settings: Any, callbacks: list[Any], *,
                 title: str, epochs: int | None = None, initial_epoch: int = 0, temperature: float = RECOVERY_TEMPERATURE,
                 alpha: float = RECOVERY_ALPHA, hints: Sequence[Hint | str] | None = None) -> dict[str, list[float]]:
    """A drop-in for :func:`edgekit.passes.training.fit` that fine-tunes with ``source_model`` as the teacher.

    Same arguments (a ``TrainSettings``: epochs, batch_size, learning_rate, seed, progress) and
    the same optimizer (:func:`edgekit.passes.training.make_optimizer`); the loss is the distillation
    loss (``temperature``, ``alpha``) plus hint losses on every hidden layer the two models share
    (:func:`matching_hints`, unless ``hints`` is given). ``initial_epoch`` only places a
    ``--lr-schedule cosine`` on its curve (the history restarts at 0). Used by ``edgekit prune --distill``.
    """
    total = settings.epochs if epochs is None else epochs
    cbs = list(callbacks)
    schedule = lr_schedule_callback(settings, int(np.ceil(len(train) / settings.batch_size)), initial_epoch)
    if schedule is not None:
        cbs.append(schedule)
    if getattr(settings, "progress", False):
        cbs.append(progress_callback(title, int(np.ceil(len(train) / settings.batch_size)), settings.epochs))
    result = fit_with_teacher(model, source_model, train, val, epochs=total, temperature=temperature, alpha=alpha,
                              batch_size=settings.batch_size, optimizer=make_optimizer(source_model, settings.learning_rate),
                              callbacks=cbs, seed=settings.seed,
                              hints=matching_hints(source_model, model) if hints is None else hints)
    return {key: [float(v) for v in values] for key, values in result.history.items()}
