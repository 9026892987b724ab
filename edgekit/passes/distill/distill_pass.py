"""The distill pass: the incoming model is the teacher, the config says which student to train.

The student is a ``.keras`` file (``student``; its weights are the start unless ``reinit``) or
the teacher's architecture at ``width`` (fresh, seeded). ``apply`` trains it with
:func:`~edgekit.passes.distill.fit.fit_with_teacher` and returns it; the teacher is never changed.

Example:
    >>> p = DistillPass(DistillConfig(width=0.5, epochs=5))  # doctest: +SKIP
    >>> result = run_passes([p], ModelState(keras=teacher), PassContext(train=train, val=val))  # doctest: +SKIP
    >>> result.state.keras.count_params() < teacher.count_params()  # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgekit.core.datatypes import Dataset
from edgekit.core.errors import DataError, InputError, ModelError
from edgekit.core.models import LoadedModel, load_model
from edgekit.core.tasks import keras_output_tasks
from edgekit.core.tfshim import keras
from edgekit.passes.base import ModelState, Pass, PassContext, PassOutput, TrainingConfig
from edgekit.passes.distill.checks import (
    Hint,
    check_distill_options,
    check_labels,
    check_pair,
    check_student_choice,
)
from edgekit.passes.distill.fit import DEFAULT_CACHE_LIMIT_MB, fit_with_teacher, make_augmentation
from edgekit.passes.distill.multitask import fit_any_task, is_classic, label_loss
from edgekit.passes.distill.students import WidthChange, copy_with_weights, derive_student, fresh_copy
from edgekit.passes.training import loss_weights_of

AugmentChoice = Literal["none", "flip", "shift", "flip+shift"]
COSINE_FLOOR = 0.02  # lr_schedule cosine decays to this fraction of the learning rate


class DistillConfig(TrainingConfig):
    """Knowledge distillation into a smaller student: the ``distill`` command's options and a recipe's distill step."""

    pass_: Literal["distill"] = Field("distill", alias="pass")
    student: str | None = Field(None, description="A .keras student model (in a recipe: relative to the recipe file).")
    width: float | None = Field(None, description="Derive the student from the teacher: filters/units times this, in (0, 1].")
    # not Hinton's T=4, alpha=0.9: on short budgets those lost to the labels alone (bench_distill_defaults.py)
    temperature: float = Field(1.0, description="Softening temperature T of the teacher's outputs.")
    alpha: float = Field(0.3, description="Weight of the teacher term (1 - alpha: hard labels).")
    batch_size: int = Field(128, ge=1, le=65536, description="Training batch size.")
    learning_rate: float = Field(1e-3, description="Adam learning rate.")
    loss: None = Field(None, description="Distillation trains with its own loss (not settable).")
    hints: tuple[str, ...] = Field((), description="TEACHER_LAYER:STUDENT_LAYER pairs for feature distillation.")
    hint_weight: float = Field(1.0, description="Weight of the hint (relative MSE) loss.")
    augment: AugmentChoice = Field("none", description="Random augmentation of training batches (the teacher then runs on every batch).")
    reinit: bool = Field(False, description="Re-initialise the student's weights (seeded) instead of starting from them.")
    limit: int | None = Field(None, description="Use a seeded random subset of this many training samples.")
    cache_limit_mb: float = Field(DEFAULT_CACHE_LIMIT_MB, gt=0, description="Cache the teacher's hint features up to this size.")

    def parsed_hints(self) -> list[Hint]:
        """The hints as :class:`Hint` pairs (raises InputError on a malformed one)."""
        return [Hint.parse(h) for h in self.hints]


def check_distill_config(config: DistillConfig) -> None:
    """Rejects settings distillation cannot train with, before anything loads or trains."""
    check_student_choice(config.student, config.width)
    check_distill_options(epochs=config.epochs, temperature=config.temperature, alpha=config.alpha, batch_size=config.batch_size,
                          learning_rate=config.learning_rate, hint_weight=config.hint_weight, width=config.width)
    config.parsed_hints()
    if config.limit is not None and config.limit < 1:
        raise InputError(f"limit must be at least 1, got {config.limit}", hint="e.g. limit 10000", settings=("limit",))


def seeded_subset(data: Dataset, limit: int | None, seed: int) -> Dataset:
    """At most ``limit`` samples of ``data``, drawn with ``seed`` and kept in order (as :func:`edgekit.core.data.load_dataset` draws them)."""
    if limit is None or limit >= len(data):
        return data
    idx = np.sort(np.random.default_rng(seed).choice(len(data), size=limit, replace=False))
    return data.take(idx)


def check_any_pair(teacher: Any, student: Any, cfg: DistillConfig) -> None:
    """Teacher and student of the any-task path: the same inputs and outputs (shapes), and no classifier-only options."""
    if cfg.hints or cfg.augment != "none":
        raise InputError("hints and augment serve single-input, single-output classifiers; this model has "
                         f"{len(teacher.inputs)} input(s) and {len(teacher.outputs)} output(s) or a non-classifier output",
                         hint="drop hints/augment for this model", settings=("hints", "augment"))
    for what, a, b in (("inputs", teacher.inputs, student.inputs), ("outputs", teacher.outputs, student.outputs)):
        shapes_t = [tuple(t.shape[1:]) for t in a]
        shapes_s = [tuple(t.shape[1:]) for t in b]
        if shapes_t != shapes_s:
            raise ModelError(f"the student's {what} {shapes_s} differ from the teacher's {shapes_t}",
                             hint="give a student with the teacher's inputs and outputs (or derive one with width)",
                             settings=("student", "width"))


def loss_weights_list(model: Any) -> list[float] | None:
    """The model's compiled loss weights as a list in output order (None if none)."""
    weights = loss_weights_of(model)
    if isinstance(weights, dict):
        names = list(getattr(model, "output_names", []) or [])
        return [float(weights.get(n, 1.0)) for n in names]
    if isinstance(weights, (list, tuple)):
        return [float(w) for w in weights]
    return None


def label_losses(tasks: list[Any]) -> Any:
    found = [label_loss(t) for t in tasks]
    return found[0] if len(found) == 1 else found


def _teacher(state: ModelState) -> Any:
    if state.keras is None or state.converted or isinstance(state.keras, LoadedModel):
        what = "SavedModel" if isinstance(state.keras, LoadedModel) else f"{state.kind} model"
        raise ModelError(f"the distill pass needs a Keras teacher, but it got a {what}",
                         hint="run distill on the Keras model, before any quantize or export step")
    return state.keras


class DistillPass(Pass[DistillConfig]):
    """Knowledge distillation (see the module docstring)."""

    name = "distill"
    config_type = DistillConfig
    trains = True

    def student_for(self, teacher: Any, ctx: PassContext) -> tuple[Any, list[WidthChange], str]:
        """A new student for ``teacher``: (model, per-layer width changes, where it came from).

        The same config, teacher and seed always give the same initial weights.
        """
        cfg = self.config
        if cfg.width is not None:
            student, changes = derive_student(teacher, cfg.width, seed=ctx.seed)
            return student, changes, f"teacher at width {cfg.width:g}"
        assert cfg.student is not None
        path = Path(cfg.student)
        if ctx.base_dir is not None and not path.is_absolute():
            path = ctx.base_dir / path  # a recipe's student is relative to the recipe file
        loaded = load_model(path, unsafe=ctx.unsafe, custom_objects=ctx.custom_objects)
        if loaded.keras_model is None:
            raise ModelError(f"the student {loaded.path} is a SavedModel; distillation needs a Keras model (.keras or .h5)",
                             hint="give the .keras file your training code saved")
        model = loaded.keras_model
        # never train the loaded object itself: a seeded fresh copy, or a copy with its weights
        model = fresh_copy(model, seed=ctx.seed) if cfg.reinit else copy_with_weights(model, model.get_weights())
        return model, [], str(loaded.path)

    def check(self, state: ModelState, ctx: PassContext) -> None:
        """Settings, teacher and student (shapes, classes, hint layers), and the training labels."""
        cfg = self.config
        check_distill_config(cfg)
        teacher = _teacher(state)
        student, _, _ = self.student_for(teacher, ctx)
        if not is_classic(teacher, ctx.tasks) or not is_classic(student, ctx.tasks):
            check_any_pair(teacher, student, cfg)
            if ctx.train is not None and cfg.alpha < 1.0 and any(t is None for t in ctx.train.targets):
                raise DataError(f"data {ctx.train.source} has no targets for every output, needed for the hard-label term (alpha {cfg.alpha} < 1)",
                                hint="give y (or y_<output> per output), or distill from the teacher alone with alpha 1",
                                settings=("data", "alpha"))
            return
        check_pair(teacher, student, hints=cfg.parsed_hints())
        if ctx.train is not None:
            check_labels(ctx.train, int(teacher.outputs[0].shape[-1]), "data")
            if ctx.train.y is None and cfg.alpha < 1.0:
                raise DataError(f"data {ctx.train.source} has no labels, needed for the hard-label term (alpha {cfg.alpha} < 1)",
                                hint="give labels (y), or distill from the teacher alone with alpha 1", settings=("data", "alpha"))

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """Trains a new student with the incoming model as the teacher; returns the student (kind ``float``)."""
        cfg = self.config
        teacher = _teacher(state)
        if ctx.train is None:
            raise DataError("the distill pass needs training data", hint="give training data (labelled unless alpha is 1)")
        student, changes, source = self.student_for(teacher, ctx)
        train = seeded_subset(ctx.train, cfg.limit, ctx.seed)
        on_epoch = ctx.on_epoch
        learning_rate: float | None = cfg.learning_rate
        optimizer = None
        if cfg.lr_schedule == "cosine":
            k = keras()
            steps = cfg.epochs * int(np.ceil(len(train) / cfg.batch_size))
            optimizer = k.optimizers.Adam(k.optimizers.schedules.CosineDecay(cfg.learning_rate, max(1, steps), alpha=COSINE_FLOOR))
            learning_rate = None
        if not is_classic(teacher, ctx.tasks):
            tasks = list(ctx.tasks) if ctx.tasks else keras_output_tasks(teacher)
            fit = fit_any_task(student, teacher, train, ctx.val, tasks, epochs=cfg.epochs, temperature=cfg.temperature, alpha=cfg.alpha,
                               batch_size=cfg.batch_size, learning_rate=learning_rate, optimizer=optimizer,
                               loss_weights=loss_weights_list(teacher), seed=ctx.seed,
                               on_epoch=None if on_epoch is None else lambda epoch, total, logs: on_epoch(self.name, epoch, total, logs))
            student.compile(optimizer="adam", loss=getattr(teacher, "loss", None) or label_losses(tasks))
        else:
            fit = fit_with_teacher(
            student, teacher, train, ctx.val, epochs=cfg.epochs, temperature=cfg.temperature, alpha=cfg.alpha,
            batch_size=cfg.batch_size, learning_rate=learning_rate, optimizer=optimizer, hints=cfg.parsed_hints(),
            hint_weight=cfg.hint_weight, augment=make_augmentation(cfg.augment, ctx.seed), seed=ctx.seed,
            cache_limit_mb=cfg.cache_limit_mb,
            on_epoch=None if on_epoch is None else lambda epoch, total, logs: on_epoch(self.name, epoch, total, logs),
            )
        details = {
            "student": source,
            "teacher_parameters": int(teacher.count_params()),
            "student_parameters": int(student.count_params()),
            "train_samples": len(train),
            "width_changes": [asdict(c) for c in changes],
            "fit": fit.to_dict(),
        }
        return PassOutput(state=state.with_keras(student), details=details)
