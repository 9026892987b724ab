"""Fine-tuning shared by the training passes (prune, cluster): data checks, loss, optimizer, fit.

Passes fine-tune with the model's own loss and optimizer (from its compile config), a rich
progress bar per epoch on stderr when the pass context asks for it (``show_training``), the
context's ``on_epoch`` callback, and an optional cosine learning-rate schedule. Constraints
(pruning masks, shared cluster values) are re-applied after every batch by the callbacks the
pass adds. Settings come from the pass's :class:`~edgekit.passes.base.TrainingConfig` and the
context's seed (:meth:`TrainSettings.of`).

Example:
    >>> settings = TrainSettings.of(config, ctx)                                  # doctest: +SKIP
    >>> history = fit(new, source, ctx.train, ctx.val, settings, [], title="prune")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.core import interrupts
from edgekit.core.datatypes import Dataset
from edgekit.core.errors import DataError, InputError
from edgekit.core.keras_graph import clone_model
from edgekit.core.tasks import Task
from edgekit.core.tfshim import keras
from edgekit.passes import distribute
from edgekit.passes.base import EpochCallback, PassContext, TrainingConfig

LR_SCHEDULES = ("constant", "cosine")
COSINE_FLOOR = 0.02  # the cosine schedule ends at this fraction of the starting rate


@dataclass(frozen=True)
class TrainSettings:
    """How fine-tuning runs: the training config's settings plus the context's seed and progress."""

    epochs: int = 2
    batch_size: int = 64
    learning_rate: float | None = None
    loss: str | None = None
    seed: int = 0
    progress: bool = False
    lr_schedule: str = "constant"  # constant, or cosine: decays to 2% of the rate over all fine-tuning steps
    on_epoch: EpochCallback | None = None

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}",
                             hint="use lr_schedule constant or lr_schedule cosine", settings=("lr_schedule",))

    @classmethod
    def of(cls, config: TrainingConfig, ctx: PassContext) -> TrainSettings:
        """The settings of a training pass in a pipeline context."""
        return cls(epochs=config.epochs, batch_size=config.batch_size, learning_rate=config.learning_rate, loss=config.loss,
                   seed=ctx.seed, progress=ctx.show_training, lr_schedule=config.lr_schedule, on_epoch=ctx.on_epoch)

    def steps_per_epoch(self, train: Dataset) -> int:
        return int(np.ceil(len(train) / distribute.global_batch(self.batch_size)))


def check_training_data(model: Any, data: Dataset | None, *, what: str = "data", need_labels: bool = True) -> None:
    """Raises before training if ``data`` (the setting ``what``) does not fit ``model``: every input's
    shape, and (``need_labels``) targets for every output."""
    if data is None:
        if need_labels:
            raise InputError(f"fine-tuning needs labelled training samples ({what})", hint=f"give {what} with arrays x and y, or set epochs 0",
                             settings=(what, "epochs"))
        return
    if len(model.inputs) != len(data.inputs):
        raise DataError(f"{what} {data.source} has {len(data.inputs)} input array(s), the model {len(model.inputs)} inputs "
                        f"({', '.join(str(t.name) for t in model.inputs)})", hint="give one array per model input, named after the input",
                        settings=(what,))
    names = list(data.input_names) or [str(t.name) for t in model.inputs]
    by_name = {str(t.name): t for t in model.inputs}
    for k, (name, arr) in enumerate(zip(names, data.inputs, strict=True)):
        tensor = by_name.get(name, model.inputs[k])
        want = tuple(tensor.shape[1:])
        got = tuple(arr.shape[1:])
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got, strict=True)):
            label = f"input '{name}' of " if len(names) > 1 else ""
            raise DataError(f"{label}{what} {data.source} has samples of shape {got}, but the model expects {want}",
                            hint="give samples shaped like the model input", settings=(what,))
    if need_labels:
        missing = [n for n, t in zip(data.output_names or [str(o) for o in range(len(model.outputs))], data.targets, strict=False)
                   if t is None]
        if data.y is None and not data.more_y:
            raise DataError(f"{what} {data.source} has no labels (array y)", hint="fine-tuning needs labels: save x and y in the .npz",
                            settings=(what,))
        if missing or len(data.targets) != len(model.outputs):
            raise DataError(f"{what} {data.source} has no targets for output(s) {', '.join(missing) or '?'}; training with the "
                            "model's losses needs every output's targets",
                            hint="save y_<output name> for each output (or map them with --y-key OUTPUT=ARRAY)", settings=(what,))
    if data.y is not None and len(model.outputs) == 1 and data.y.ndim == 1 and data.y.dtype.kind in "iu":
        out_dim = model.outputs[0].shape[-1]
        if out_dim is not None and out_dim > 1 and int(data.y.max(initial=0)) >= out_dim:
            raise DataError(
                f"labels in {what} {data.source} go up to {int(data.y.max())}, but the model has {out_dim} outputs (classes 0..{out_dim - 1})",
                hint="check the labels belong to this model's dataset", settings=(what,),
            )


def loss_for_tasks(tasks: list[Any]) -> Any:
    """A Keras loss per output from its task, for models saved without a training objective.

    Classification and segmentation: sparse categorical cross-entropy; binary and multilabel: binary
    cross-entropy; regression and embeddings: mean squared error (from logits where the output
    has no softmax/sigmoid).
    """
    losses = keras().losses
    found = []
    for t in tasks:
        if t.task in (Task.CLASSIFICATION, Task.SEGMENTATION):
            found.append(losses.SparseCategoricalCrossentropy(from_logits=t.from_logits))
        elif t.task in (Task.BINARY, Task.MULTILABEL):
            found.append(losses.BinaryCrossentropy(from_logits=t.from_logits))
        else:
            found.append(losses.MeanSquaredError())
    return found[0] if len(found) == 1 else found


def loss_weights_of(source_model: Any) -> Any:
    """The loss weights the model was compiled with (several outputs), or None."""
    config = getattr(getattr(source_model, "_compile_config", None), "config", None)
    return config.get("loss_weights") if isinstance(config, dict) else None


def resolve_loss(source_model: Any, loss: str | None) -> Any:
    """The loss to fine-tune with: ``loss`` if given (one for every output), else the one the model was compiled with."""
    if loss is not None:
        try:
            fn = keras().losses.get(loss)
        except (ValueError, TypeError):
            raise InputError(f"loss '{loss}' is not a Keras loss-function name", hint="e.g. loss sparse_categorical_crossentropy", settings=("loss",)) from None
        return fn if len(source_model.outputs) == 1 else [fn] * len(source_model.outputs)
    compiled = getattr(source_model, "loss", None)
    if compiled is None:
        raise InputError("the model was saved uncompiled (no training objective), so edgekit cannot fine-tune it as it was trained",
                         hint="give loss, e.g. loss sparse_categorical_crossentropy", settings=("loss",))
    return compiled


def make_optimizer(source_model: Any, learning_rate: float | None) -> Any:
    """A fresh optimizer like the model's own (Adam if it has none), optionally with a new learning rate."""
    opt = getattr(source_model, "optimizer", None)
    if opt is not None:
        config = opt.get_config()
        if learning_rate is not None:
            config["learning_rate"] = learning_rate
        elif not isinstance(config.get("learning_rate"), (int, float)):
            config["learning_rate"] = 1e-3  # a schedule: fine-tuning restarts it, use a plain rate
        return type(opt).from_config(config)
    return keras().optimizers.Adam(learning_rate=learning_rate or 1e-3)


def compile_for_training(model: Any, source_model: Any, loss: Any, learning_rate: float | None) -> None:
    """Compiles ``model`` with ``loss`` (and the source's loss weights) and a fresh optimizer like
    ``source_model``'s (accuracy for single-output classifiers)."""
    single = len(model.outputs) == 1
    metrics = ["accuracy"] if single and model.outputs[0].shape[-1] not in (None, 1) and len(model.outputs[0].shape) == 2 else []
    weights = loss_weights_of(source_model) if not single else None
    model.compile(optimizer=make_optimizer(source_model, learning_rate), loss=loss, metrics=metrics, steps_per_execution=1,
                  **({"loss_weights": weights} if weights is not None else {}))


def compile_like_source(model: Any, source_model: Any) -> None:
    """Gives a trained (or new) model the loss it was fine-tuned with and an unused optimizer like the source's.

    A pass calls it at the end of ``apply`` so that :func:`strip_training_state` in ``finalize``
    saves the source's optimizer settings, not the state (or decayed rate) fine-tuning left.
    """
    loss = getattr(model, "loss", None) or getattr(source_model, "loss", None)
    if loss is not None:
        compile_for_training(model, source_model, loss, None)


def strip_training_state(model: Any) -> Any:
    """A plain copy of ``model``: same architecture and weights, no optimizer state.

    When ``model`` has a loss, the copy is compiled with that loss and a fresh, unbuilt optimizer
    of the same kind, so the saved file carries the training configuration (a later prune,
    cluster or QAT step can fine-tune it) but no optimizer variables. The result holds only
    built-in Keras classes and reloads anywhere with ``keras.saving.load_model``.
    """
    plain = clone_model(model)
    loss = getattr(model, "loss", None)
    if loss is not None:
        compile_for_training(plain, model, loss, None)
    return plain


def _fmt_logs(logs: dict[str, Any] | None) -> str:
    if not logs:
        return ""
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in logs]
    return "  ".join(f"{k} {float(logs[k]):.4f}" for k in keys)


def progress_callback(title: str, steps_per_epoch: int, epochs: int) -> Any:
    """A Keras callback that shows a rich progress bar per epoch on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True, highlight=False)

    class RichProgress(keras().callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.progress: Progress | None = None
            self.task: Any = None

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.progress = Progress(
                TextColumn(f"{title} epoch {epoch + 1}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), console=console, transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=steps_per_epoch, metrics="")

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            if self.progress is not None:
                self.progress.update(self.task, advance=1, metrics=_fmt_logs(logs))

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            if self.progress is not None:
                self.progress.update(self.task, metrics=_fmt_logs(logs))
                self.progress.stop()
                self.progress = None

    return RichProgress()


def epoch_callback(on_epoch: EpochCallback, title: str, epochs: int) -> Any:
    """A Keras callback that reports every finished epoch to ``on_epoch(title, epoch, epochs, logs)``."""

    class EpochReport(keras().callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            on_epoch(title, epoch + 1, epochs, {k: float(v) for k, v in (logs or {}).items()})

    return EpochReport()


def lr_schedule_callback(settings: TrainSettings, steps_per_epoch: int, initial_epoch: int = 0) -> Any | None:
    """A Keras callback setting the optimizer's learning rate before every batch (None for ``constant``).

    ``cosine`` follows ``floor + (1 - floor) * (1 + cos(pi * t)) / 2`` of the starting rate, ``t``
    the fraction of all fine-tuning steps done, counted from ``initial_epoch`` so a pass that fits
    in stages (channel pruning rebuilds the model every epoch) continues the same curve. The
    starting rate is the optimizer's own (the ``learning_rate`` setting or the model's).
    """
    if settings.lr_schedule == "constant":
        return None
    total = max(1, settings.epochs * steps_per_epoch)

    class CosineDecay(keras().callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.step = initial_epoch * steps_per_epoch
            self.base: float | None = None

        def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            optimizer = self.model.optimizer
            if self.base is None:
                self.base = float(np.asarray(optimizer.learning_rate))
            t = min(1.0, self.step / total)
            optimizer.learning_rate.assign(self.base * (COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * t))))
            self.step += 1

    return CosineDecay()


def interrupt_callback() -> Any:
    """Stops training at the next batch once the process was interrupted (:mod:`edgekit.core.interrupts`)."""

    class InterruptCheck(keras().callbacks.Callback):  # type: ignore[misc]
        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            interrupts.check()

    return InterruptCheck()


def training_callbacks(settings: TrainSettings, train: Dataset, *, title: str, initial_epoch: int = 0) -> list[Any]:
    """The callbacks every fine-tuning adds to the pass's own: lr schedule, progress bar, epoch reports."""
    steps = settings.steps_per_epoch(train)
    callbacks = [interrupt_callback()]
    schedule = lr_schedule_callback(settings, steps, initial_epoch)
    if schedule is not None:
        callbacks.append(schedule)
    if settings.progress:
        callbacks.append(progress_callback(title, steps, settings.epochs))
    if settings.on_epoch is not None:
        callbacks.append(epoch_callback(settings.on_epoch, title, settings.epochs))
    return callbacks


def fit(model: Any, source_model: Any, train: Dataset, val: Dataset | None, settings: TrainSettings, callbacks: list[Any],
        *, title: str, epochs: int | None = None, initial_epoch: int = 0) -> dict[str, list[float]]:
    """Compiles ``model`` with the source model's loss and optimizer and fits it on ``train``
    (under a ``tf.distribute`` strategy's scope with :func:`edgekit.passes.distribute.train`'s step).

    Returns the Keras history (``loss``, ``accuracy``, ``val_...`` per epoch).
    """
    keras().utils.set_random_seed(settings.seed)
    loss = resolve_loss(source_model, settings.loss)
    compile_for_training(model, source_model, loss, settings.learning_rate)
    total_epochs = settings.epochs if epochs is None else epochs
    cbs = [*callbacks, *training_callbacks(settings, train, title=title, initial_epoch=initial_epoch)]
    labelled_val = val is not None and all(t is not None for t in val.targets)
    history = distribute.train(
        model, train.feed, train.fit_targets, batch_size=settings.batch_size, epochs=initial_epoch + total_epochs,
        initial_epoch=initial_epoch, validation_data=(val.feed, val.fit_targets) if labelled_val else None,  # type: ignore[union-attr]
        callbacks=cbs, shuffle=True, seed=settings.seed,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}
