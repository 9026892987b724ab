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

from edgekit.core.data import Calibration, load_dataset
from edgekit.core.datatypes import Dataset, Preprocessing
from edgekit.core.errors import DataError, EdgekitError, InputError
from edgekit.core.fsutil import save_keras_atomic
from edgekit.core.keras_graph import clone_model
from edgekit.devices.probe import probe_device
from edgekit.devices.profiles import DeviceProfile
from edgekit.devices.run import runs_here
from edgekit.passes.distill.outputs import compile_plain, detect_output_kind


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
    if ds.y is not None and classes and int(ds.y.max(initial=0)) >= classes:
        raise DataError(f"labels in {what} {ds.source} go up to {int(ds.y.max())}, but the model has {classes} classes",
                        hint="check the labels belong to this model's dataset")


def split_validation(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Holds out a seeded ``fraction`` of ``train`` as validation data: (training part, held-out part)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train))
    n_val = max(1, int(round(len(train) * fraction)))
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])

    def part(idx: np.ndarray, tag: str) -> Dataset:
        return Dataset(x=train.x[idx], y=train.y[idx] if train.y is not None else None, source=f"{train.source} ({tag})",
                       sha256=train.sha256, preprocessing=train.preprocessing, labels=train.labels)

    return part(train_idx, f"{len(train_idx)} samples, training part"), part(val_idx, f"held-out {n_val} samples, seed {seed}")


def load_training_inputs(loaded: Any, data: str | os.PathLike[str] | None, val: str | os.PathLike[str] | None, *,
                         preprocessing: Preprocessing, x_key: str = "x", y_key: str = "y", seed: int = 0,
                         train_limit: int | None = None, val_limit: int | None = None, hold_out: bool = True,
                         val_fraction: float = 0.1, min_hold_out: int = 20) -> TrainingInputs:
    """Loads ``data`` and ``val`` for ``loaded``; without ``val``, holds out ``val_fraction`` of ``data``.

    With ``hold_out`` and at least ``min_hold_out`` samples the validation data is a seeded part of
    ``data`` that training never sees; otherwise accuracy is measured on ``data`` itself (said in
    ``notes``). Labels are checked against the model's classes.
    """
    kw: dict[str, Any] = {"signature": loaded.signature, "preprocessing": preprocessing, "x_key": x_key, "y_key": y_key,
                          "seed": seed}
    train = load_dataset(data, limit=train_limit, **kw) if data is not None else None
    calibration = train.x if train is not None else None
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
    classes = classes_of(loaded.keras_model)
    for ds, what in ((train, "--data"), (val_ds, "--val")):
        if ds is not None:
            check_labels(ds, classes, what)
    return TrainingInputs(train=train, val=val_ds, notes=tuple(notes), calibration=calibration)


def ensure_loss(keras_model: Any, loss: str | None = None) -> None:
    """Gives an uncompiled classifier a loss (from its output convention) so training passes can fine-tune it."""
    if loss is not None or getattr(keras_model, "loss", None) is not None:
        return
    compile_plain(keras_model, detect_output_kind(keras_model).kind)


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
