"""The QAT pass: its config, its checks, and quantization-aware fine-tuning behind the pass interface.

:class:`QatPass` takes a float Keras classifier; ``apply`` builds the QAT graph
(:func:`~edgekit.passes.qat.build.build_qat_model`), calibrates its ranges and fine-tunes it, and
returns the fake-quantized model (kind ``qat``); ``finalize`` writes preserved kernels back and
converts it to full-int8 TFLite (kind ``qat-int8``), keeping the fine-tuned float model (plain
Keras layers) as ``state.keras``.

Example:
    >>> p = QatPass(QatConfig(epochs=2))  # doctest: +SKIP
    >>> result = run_passes([p], ModelState(keras=model), PassContext(train=train))  # doctest: +SKIP
    >>> result.state.kind, len(result.state.tflite)  # doctest: +SKIP
    ('qat-int8', 61840)
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal

import numpy as np
from pydantic import Field

from edgekit.core.datatypes import Dataset
from edgekit.core.errors import DataError, InputError, ModelError
from edgekit.core.models import LoadedModel
from edgekit.core.tasks import Task, keras_output_tasks
from edgekit.core.tflite_file import parse_tflite_bytes
from edgekit.core.tfshim import keras
from edgekit.passes import distribute
from edgekit.passes.base import LrSchedule, ModelState, Pass, PassContext, PassOutput, TrainingConfig
from edgekit.passes.distill.fit import fit_with_teacher
from edgekit.passes.qat.build import QatModel, build_qat_model, calibrate, export_tflite, float_ops, loss_for, preserved_summary
from edgekit.passes.qat.graph import plan_qat
from edgekit.passes.qat.preserve import preserve_constraints
from edgekit.passes.recovery import RECOVERY_ALPHA, RECOVERY_TEMPERATURE
from edgekit.passes.training import loss_for_tasks, loss_weights_of

PreserveChoice = Literal["auto", "none", "sparsity", "clusters"]
QAT_MODEL = "qat_model"  # the key of the built QatModel in the state between apply and finalize
CALIBRATION_BATCHES = 8


class QatConfig(TrainingConfig):
    """Quantization-aware fine-tuning to full int8: the ``qat`` command's options and a recipe's qat step."""

    pass_: Literal["qat"] = Field("qat", alias="pass")
    epochs: int = Field(1, ge=0, le=1000, description="Fine-tuning epochs (at least 1).")
    learning_rate: float = Field(1e-4, description="Initial Adam learning rate.")
    lr_schedule: LrSchedule = Field("cosine", description="cosine decay to 0 over all fine-tuning steps (default), or constant.")
    loss: str | None = Field(None, description="A Keras loss name (default: sparse cross-entropy on the model's logits or probabilities).")
    io_type: Literal["float", "int8", "uint8"] = Field("float", description="Input/output dtype of the int8 model.")
    preserve: PreserveChoice = Field("auto", description="auto: keep the sparsity or clusters of an earlier prune/cluster pass.")
    distill: bool = Field(False, description="Fine-tune with the float model as teacher (its outputs, T=1, alpha=0.5).")


def check_qat_config(config: QatConfig) -> None:
    """Rejects settings QAT cannot train with, before anything loads or trains."""
    if config.epochs < 1:
        raise InputError(f"epochs must be at least 1, got {config.epochs}", hint="QAT fine-tunes the model; use e.g. epochs 2",
                         settings=("epochs",))
    if not (config.learning_rate > 0 and math.isfinite(config.learning_rate)):
        raise InputError(f"learning_rate must be a positive number, got {config.learning_rate}",
                         hint="use e.g. learning_rate 1e-4 (fine-tuning rates are small)", settings=("learning_rate",))


def resolve_preserve(preserve: str, passes_done: Sequence[str]) -> str | None:
    """``auto`` -> ``clusters`` after a cluster pass, ``sparsity`` after a prune pass, else None; ``none`` -> None."""
    if preserve == "auto":
        return "clusters" if "cluster" in passes_done else ("sparsity" if "prune" in passes_done else None)
    return None if preserve == "none" else preserve


def check_classifier(model: Any, source: str, tasks: Any = None) -> int | None:
    """The class count of a single (batch, classes) classification output, else None (any model trains with its own losses)."""
    out_shape = tuple(model.outputs[0].shape)
    if len(model.outputs) == 1 and len(out_shape) == 2 and (out_shape[1] or 0) >= 2:
        task = (list(tasks) if tasks else keras_output_tasks(model))[0].task
        return int(out_shape[1]) if task is Task.CLASSIFICATION else None
    return None


def check_labels(dataset: Dataset, classes: int | None, what: str) -> np.ndarray | None:
    """The dataset's labels; raises unless every output has targets (class ids below ``classes`` for a classifier)."""
    if dataset.y is None or any(t is None for t in dataset.more_y):
        raise DataError(f"{what} {dataset.source} has no labels for every output; QAT trains against labels",
                        hint="add an array y (or y_<output> per output) to the .npz (or use an image folder)")
    if classes is not None and dataset.y.ndim == 1 and int(dataset.y.max(initial=0)) >= classes:
        raise DataError(
            f"labels in {dataset.source} go up to {int(dataset.y.max())}, but the model has {classes} classes",
            hint="check the labels belong to this model's dataset",
        )
    return dataset.y


def _keras_model(state: ModelState) -> Any:
    if state.keras is None or state.converted or isinstance(state.keras, LoadedModel):
        what = "SavedModel" if isinstance(state.keras, LoadedModel) else f"{state.kind} model"
        raise ModelError(f"the qat pass needs a Keras model to rebuild and fine-tune, but it got a {what}",
                         hint="run qat on the Keras model, before any quantize or export step")
    return state.keras


def _rows(x: Any, n: int) -> Any:
    return [a[:n] for a in x] if isinstance(x, list) else x[:n]


class QatPass(Pass[QatConfig]):
    """Quantization-aware fine-tuning (see the module docstring)."""

    name = "qat"
    config_type = QatConfig
    trains = True

    def check(self, state: ModelState, ctx: PassContext) -> None:
        """Options, a classifier with a quantizable layer, something to preserve, labelled training data."""
        check_qat_config(self.config)
        model = _keras_model(state)
        classes = check_classifier(model, state.source or f"model '{model.name}'", ctx.tasks)
        plan = plan_qat(model)  # raises if no layer can be quantized
        if not ctx.ahead:  # ahead of an earlier prune/cluster pass, there is nothing to keep yet
            preserve_constraints(plan, resolve_preserve(self.config.preserve, ctx.passes_done))  # raises if nothing to keep
        if ctx.train is not None:
            check_labels(ctx.train, classes, "training data")

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """Builds the QAT graph of a copy of the model, calibrates it and fine-tunes it (kind ``qat``)."""
        cfg = self.config
        model = _keras_model(state)
        if ctx.train is None:
            raise DataError("the qat pass needs labelled training data", hint="give training data with labels")
        check_labels(ctx.train, check_classifier(model, state.source or "model", ctx.tasks), "training data")
        train = ctx.train
        x, y = train.feed, train.fit_targets
        k = keras()
        k.utils.set_random_seed(ctx.seed)
        preserve = resolve_preserve(cfg.preserve, ctx.passes_done)
        qm = build_qat_model(model, preserve=preserve)
        pick = np.random.default_rng(ctx.seed).permutation(len(train))[: CALIBRATION_BATCHES * cfg.batch_size]
        sample = train.take(np.sort(pick)).feed
        classifier = check_classifier(model, "model", ctx.tasks) is not None
        if classifier:
            detected, output_kind = loss_for(model.predict(_rows(sample, 256), batch_size=256, verbose=0))
        else:  # any other model trains with its own (compiled) losses, or the ones its tasks call for
            detected = getattr(model, "loss", None) or loss_for_tasks(list(ctx.tasks) if ctx.tasks else keras_output_tasks(model))
            output_kind = "the model's compiled loss" if getattr(model, "loss", None) is not None else "losses from the output tasks"
        if cfg.distill and not classifier:
            cfg = cfg.model_copy(update={"distill": False})
            notes_pre = ["distill recovery matches a single classifier output; this model fine-tunes on its labels"]
        else:
            notes_pre = []
        notes = list(notes_pre)
        if qm.plan.unsupported:
            notes.append("kept float (unsupported): " + ", ".join(f"{p.name} ({p.class_name}: {p.float_part or p.detail})"
                                                                  for p in qm.plan.unsupported))
        calibrate(qm, sample, batch_size=cfg.batch_size, batches=CALIBRATION_BATCHES)
        steps = cfg.epochs * math.ceil(len(train) / distribute.global_batch(cfg.batch_size))
        # cosine decay from the learning rate to 0 over the whole fine-tuning: the model ends where the rate is small
        rate = k.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, steps)) if cfg.lr_schedule == "cosine" \
            else cfg.learning_rate
        loss = k.losses.get(cfg.loss) if cfg.loss else detected
        weights = loss_weights_of(model) if len(model.outputs) > 1 else None
        qm.model.compile(optimizer=k.optimizers.Adam(learning_rate=rate), loss=loss, metrics=["accuracy"] if classifier else [],
                         **({"loss_weights": weights} if weights is not None else {}))
        history: list[dict[str, float]] = []

        def on_epoch_end(epoch: int, logs: dict[str, Any] | None) -> None:
            entry = {key: float(v) for key, v in (logs or {}).items()}
            history.append(entry)
            if ctx.on_epoch is not None:
                ctx.on_epoch(self.name, epoch + 1, cfg.epochs, entry)

        callbacks = [k.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)]
        started = time.perf_counter()
        if cfg.distill:  # the float model teaches the fake-quantized one; its outputs are computed once
            teacher = ctx.teacher if ctx.teacher is not None else model
            fit_with_teacher(qm.model, teacher, (x, y), epochs=cfg.epochs, batch_size=cfg.batch_size,
                             optimizer=k.optimizers.Adam(learning_rate=rate), seed=ctx.seed, temperature=RECOVERY_TEMPERATURE,
                             alpha=RECOVERY_ALPHA, callbacks=callbacks)
        else:
            distribute.train(qm.model, x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, callbacks=callbacks, seed=ctx.seed)
        details = {
            "preserve": preserve,
            "plan": [p.to_dict() for p in qm.plan.layers],
            "unsupported_layers": [p.to_dict() for p in qm.plan.unsupported],
            "history": history,
            "training_samples": len(train),
            "seconds_training": time.perf_counter() - started,
            "loss": cfg.loss or (f"sparse_categorical_crossentropy ({output_kind})" if classifier else output_kind),
        }
        new_state = replace(state, keras=qm.model, tflite=None, kind="qat", details={**state.details, QAT_MODEL: qm})
        return PassOutput(state=new_state, details=details, warnings=tuple(notes))

    def finalize(self, state: ModelState) -> ModelState:
        """Writes preserved kernels back and converts to full-int8 TFLite (kind ``qat-int8``).

        ``state.keras`` becomes the fine-tuned float model (plain Keras layers, as ``keep_keras``
        saves it); ``state.details["qat"]`` holds the float ops left in the file, the preserve
        summary (with the zeros of the exported int8 weights) and notes.
        """
        qm = state.details.get(QAT_MODEL)
        if not isinstance(qm, QatModel):
            return state
        qm.finalize()
        started = time.perf_counter()
        flatbuffer = export_tflite(qm, self.config.io_type)
        seconds = time.perf_counter() - started
        leftover = float_ops(parse_tflite_bytes(flatbuffer))
        notes = []
        if leftover and not qm.plan.unsupported:
            notes.append(f"{len(leftover)} op(s) stayed float although every layer was simulated: {', '.join(leftover[:8])}")
        details = {key: value for key, value in state.details.items() if key != QAT_MODEL}
        details["qat"] = {"float_ops": leftover, "preserved": preserved_summary(qm, flatbuffer), "conversion_seconds": seconds,
                          "notes": notes}
        return replace(state, keras=qm.float_model, tflite=flatbuffer, kind="qat-int8", details=details)
