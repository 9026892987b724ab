"""What the commands that train or compare share: loading the data around a model, holding out
validation data, giving an uncompiled model a loss, saving plain Keras models, describing the device.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.core.data import Calibration, calibration_inputs, load_dataset
from edgekit.core.datatypes import AccuracyResult, Dataset, Preprocessing
from edgekit.core.errors import DataError, EdgekitError, InputError
from edgekit.core.fsutil import save_keras_atomic
from edgekit.core.keras_graph import clone_model
from edgekit.core.models import load_model
from edgekit.core.tasks import OutputTask, Task, compiled_losses_of, detect_tasks, keras_output_activations, with_tasks
from edgekit.devices.probe import probe_device
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.run import runs_here
from edgekit.measure.task_metrics import evaluate
from edgekit.passes.base import ModelState, PassContext
from edgekit.passes.distill.outputs import compile_plain, detect_output_kind
from edgekit.passes.training import loss_for_tasks


@dataclass(frozen=True)
class TrainingInputs:
    """Training and validation data for a model, and notes on how validation was chosen."""

    train: Dataset | None
    val: Dataset
    notes: tuple[str, ...] = ()
    #: the inputs of the whole ``data`` (before any hold-out): what int8 calibration draws from, as in ``quantize``
    calibration: Calibration | None = None


def classes_of(keras_model: Any) -> int | None:
    """The number of classes of a (batch, classes) classifier output, else None."""
    if keras_model is None:
        return None
    shape = tuple(keras_model.outputs[0].shape)
    return int(shape[-1]) if len(shape) == 2 and shape[-1] else None


def check_labels(ds: Dataset, classes: int | None, what: str) -> None:
    """Labels must be class ids of this model."""
    if ds.y is not None and classes and ds.y.ndim == 1 and ds.y.dtype.kind in "iu" and int(ds.y.max(initial=0)) >= classes:
        raise DataError(f"labels in {what} {ds.source} go up to {int(ds.y.max())}, but the model has {classes} classes",
                        hint="check the labels belong to this model's dataset")


def model_tasks(model: Any, dataset: Dataset | None = None, overrides: dict[str, Task] | None = None) -> list[OutputTask]:
    """Each output's task for a Keras model (or a :class:`LoadedModel`): --task, compiled loss, activation, labels."""
    keras_model = getattr(model, "keras_model", model)
    overrides = overrides or getattr(model, "task_overrides", None)
    names = list(getattr(keras_model, "output_names", None) or [f"output_{i}" for i in range(len(keras_model.outputs))])
    losses = getattr(model, "losses", ()) or compiled_losses_of(keras_model, names)
    return detect_tasks([(n, tuple(t.shape)) for n, t in zip(names, keras_model.outputs, strict=True)],
                        activations=keras_output_activations(keras_model), losses=losses,
                        targets=dataset.targets if dataset is not None else (), overrides=overrides)


def conform(model: Any, dataset: Dataset | None, tasks: list[OutputTask], what: str | None = None) -> Dataset | None:
    """``dataset`` with its targets checked against and shaped for the model's tasks (``what``: ``--data``/``--val`` in messages)."""
    if dataset is None:
        return None
    keras_model = getattr(model, "keras_model", model)
    return with_tasks(dataset, tasks, [tuple(t.shape) for t in keras_model.outputs], what)


def keras_quality(model: Any, data: Dataset | None, tasks: list[OutputTask]) -> AccuracyResult | None:
    """The primary metric (and the others) of a Keras model on labelled data, as validate computes them; None without labels."""
    if data is None or not data.labelled:
        return None
    pred = model.predict(data.feed, batch_size=256, verbose=0)
    outputs = [np.asarray(p) for p in (pred if isinstance(pred, (list, tuple)) else [pred])]
    return evaluate(tasks, outputs, data.targets)


def split_validation(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Holds out a seeded ``fraction`` of ``train`` as validation data: (training part, held-out part)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_val = max(1, int(round(len(train) * fraction)))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

    def part(idx: np.ndarray, tag: str) -> Dataset:
        return train.take(idx, source=f"{train.source} ({tag})")

    return part(train_idx, f"{len(train_idx)} samples, training part"), part(val_idx, f"held-out {n_val} samples, seed {seed}")


def load_training_inputs(loaded: Any, data: str | os.PathLike[str] | None, val: str | os.PathLike[str] | None, *,
                         preprocessing: Preprocessing, x_key: str = "x", y_key: str = "y", seed: int = 0,
                         train_limit: int | None = None, val_limit: int | None = None, hold_out: bool = True,
                         val_fraction: float = 0.1, min_hold_out: int = 20, overrides: dict[str, Task] | None = None) -> TrainingInputs:
    """Loads ``data`` and ``val`` for ``loaded``; without ``val``, holds out ``val_fraction`` of ``data``.

    With ``hold_out`` and at least ``min_hold_out`` samples the validation data is a seeded part of
    ``data`` that training never sees; otherwise accuracy is measured on ``data`` itself (said in
    ``notes``). Labels are checked against the model's classes.
    """
    kw: dict[str, Any] = {"signature": loaded.signature, "preprocessing": preprocessing, "x_key": x_key, "y_key": y_key,
                          "seed": seed}
    train = load_dataset(data, limit=train_limit, **kw) if data is not None else None
    calibration = calibration_inputs(train) if train is not None else None
    notes: list[str] = []
    if val is not None:
        val_ds = load_dataset(val, limit=val_limit, **kw)
    elif train is not None and hold_out and len(train) >= min_hold_out:
        train, val_ds = split_validation(train, val_fraction, seed)
        notes.append(f"no --val: accuracy is measured on {val_ds.source}")
    elif train is not None:
        val_ds = train
        notes.append(f"no --val and fewer than {min_hold_out} samples: accuracy is measured on the --data samples themselves"
                     if hold_out else "no --val: accuracy is measured on the --data samples themselves")
    else:
        raise InputError("nothing to measure accuracy on: pass --val VAL.npz (or --data)", hint="e.g. --val val.npz")
    if loaded.keras_model is not None:
        tasks = model_tasks(loaded, val_ds, overrides)
        conformed = conform(loaded, val_ds, tasks, "--val" if val is not None else "--data")
        assert conformed is not None
        train, val_ds = conform(loaded, train, tasks, "--data"), conformed
    classes = classes_of(loaded.keras_model)
    for ds, what in ((train, "--data"), (val_ds, "--val")):
        if ds is not None:
            check_labels(ds, classes, what)
    return TrainingInputs(train=train, val=val_ds, notes=tuple(notes), calibration=calibration)


@dataclass(frozen=True)
class SearchInputs:
    """What optimize's candidates are built from: the loaded model, its data, the starting state and the pass context."""

    loaded: Any
    inputs: TrainingInputs
    state: ModelState
    ctx: PassContext


def load_search_inputs(model: str | os.PathLike[str], data: str | os.PathLike[str], val: str | os.PathLike[str] | None, *,
                       preprocessing: Preprocessing, seed: int, unsafe: bool = False, custom_objects: str | os.PathLike[str] | None = None,
                       tasks: tuple[str, ...] | list[str] = (), x_key: str = "x", y_key: str = "y",
                       show_training: bool = False) -> SearchInputs:
    """Loads the model and data of a search the same way wherever candidates are built (this process, a Ray worker):
    a seeded 20% hold-out of ``data`` when there is no ``val`` (at least 50 samples), the context every candidate's
    passes run in."""
    loaded = load_model(model, unsafe=unsafe, custom_objects=custom_objects, compile=True)
    if tasks:
        loaded.choose_tasks(tuple(tasks))
    inputs = load_training_inputs(loaded, data, val, preprocessing=preprocessing, x_key=x_key, y_key=y_key, seed=seed, hold_out=True,
                                  val_fraction=0.2, min_hold_out=50)
    train = inputs.train
    assert train is not None
    ctx = PassContext(train=train, val=inputs.val, calibration=inputs.calibration, preprocessing=preprocessing, labels=train.labels,
                      seed=seed, teacher=loaded.keras_model, show_training=show_training)
    state = ModelState(keras=loaded.keras_model if loaded.keras_model is not None else loaded, source=str(model))
    return SearchInputs(loaded, inputs, state, ctx)


def ensure_loss(keras_model: Any, loss: str | None = None, tasks: list[OutputTask] | None = None) -> None:
    """Gives an uncompiled model a loss per output (from its tasks) so training passes can fine-tune it."""
    if loss is not None or getattr(keras_model, "loss", None) is not None:
        return
    if len(keras_model.outputs) == 1 and tasks is None:
        compile_plain(keras_model, detect_output_kind(keras_model).kind)
        return
    keras_model.compile(optimizer="adam", loss=loss_for_tasks(tasks or model_tasks(keras_model)))


def save_keras(model: Any, path: Path) -> None:
    """Saves a plain copy of ``model`` (no optimizer state) to ``path`` atomically, quietly."""
    plain = clone_model(model)
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        save_keras_atomic(plain, path)


def describe_device(profile: DeviceProfile, measured: dict[str, Any] | None) -> dict[str, Any] | None:
    """The report's ``device`` entry: the run's own report, or, for runs here, this machine probed (best effort)."""
    if not runs_here(profile):
        return measured
    base = {"name": profile.name, "transport": "local", "address": "this machine"}
    try:
        return {**base, "probe": probe_device(profile).to_dict()}
    except EdgekitError as exc:
        return {**base, "probe_error": exc.one_line()}
