"""Pruning of Keras 3 models: unstructured magnitude, 2:4 structured, and channel removal.

Natively for Keras 3 (no tf-keras, no tfmot). The pass follows edgekit's pass interface: a typed
:class:`PruneConfig`, :meth:`PrunePass.check` (fails before any training), :meth:`PrunePass.apply`
(returns a new, fine-tuned model; the input model is never modified) and
:meth:`PrunePass.finalize` (a plain Keras model: masks enforced, no optimizer, no custom class).

- ``unstructured``: per layer, the smallest-magnitude kernel weights are set to zero; a Keras
  callback re-applies the masks after every training batch (``polynomial`` recomputes them on a
  schedule from 0 to the target sparsity, tfmot's PolynomialDecay).
- ``2:4``: in every group of 4 consecutive weights along the input-channel axis (Conv kernels
  HWIO: along I; Dense (in, out): along in) the 2 smallest are zero. Layers whose input channels
  are not a multiple of 4, and depthwise kernels, are skipped and listed.
- ``channels``: the least important filters are physically removed and the model is rebuilt
  smaller (see :mod:`edgekit.passes.channels`), then fine-tuned.

Example:
    >>> result = prune("model.keras", "pruned.keras", data="train.npz", sparsity=0.8,
    ...                preprocessing=Preprocessing(scale=1 / 255), epochs=2)  # doctest: +SKIP
    >>> result.layers[0].sparsity  # doctest: +SKIP
    0.8
"""

from __future__ import annotations

import enum
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edgekit.passes.compress import (
    ExportComparison,
    LayerReport,
    TrainSettings,
    check_training_data,
    clone_model,
    compare_exports,
    compile_regex,
    fit,
    iter_layers,
    keras_top1,
    kernel_variable,
    run_pass,
    select_paths,
    strip_training_state,
    unsupported_layers,
)
from edgekit.core.errors import InputError, ModelError
from edgekit.core.keras_graph import channel_groups
from edgekit.passes.channels import choose_channels, rebuild
from edgekit.core.manifest import report_path_for
from edgekit.core.datatypes import Dataset, Preprocessing


class Structure(str, enum.Enum):
    UNSTRUCTURED = "unstructured"
    TWO_FOUR = "2:4"
    CHANNELS = "channels"


class Schedule(str, enum.Enum):
    CONSTANT = "constant"
    POLYNOMIAL = "polynomial"


class LayerTarget(BaseModel):
    """A per-layer target: layers whose path matches ``layers`` get ``sparsity``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    layers: str
    sparsity: float = Field(ge=0.0, lt=1.0)

    @field_validator("layers")
    @classmethod
    def _regex(cls, value: str) -> str:
        compile_regex(value, "targets 'layers'")
        return value


class PruneConfig(BaseModel):
    """Settings of a pruning pass (unknown keys are rejected).

    ``begin_step``/``end_step`` bound the polynomial schedule in training steps (batches), or
    ``begin_epoch``/``end_epoch`` in epochs (fractions allowed; not both for the same end);
    the end defaults to 3/4 of the fine-tuning steps, so the last quarter trains at the final
    sparsity. ``frequency`` is how often (in steps) masks are recomputed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    sparsity: float = Field(0.5, ge=0.0, lt=1.0)
    structure: Structure = Structure.UNSTRUCTURED
    schedule: Schedule = Schedule.CONSTANT
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0)
    begin_step: int = Field(0, ge=0)
    end_step: int | None = Field(None, ge=1)
    begin_epoch: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    end_epoch: float | None = Field(None, gt=0.0, allow_inf_nan=False)
    frequency: int | None = Field(None, ge=1)
    layers: str | None = None
    skip: str | None = None
    targets: tuple[LayerTarget, ...] = ()

    @field_validator("layers", "skip")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        compile_regex(value, "--layers/--skip")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        if self.structure is Structure.TWO_FOUR and self.schedule is Schedule.POLYNOMIAL:
            raise ValueError("2:4 sparsity is a fixed pattern (exactly 50%); use --schedule constant")
        if self.structure is Structure.TWO_FOUR and self.targets:
            raise ValueError("per-layer sparsity targets do not apply to 2:4 (always 50%)")
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must be after begin_step ({self.begin_step})")
        if self.begin_epoch is not None and self.begin_step:
            raise ValueError("give the schedule's start as --begin-step or --begin-epoch, not both")
        if self.end_epoch is not None and self.end_step is not None:
            raise ValueError("give the schedule's end as --end-step or --end-epoch, not both")
        if self.begin_epoch is not None and self.end_epoch is not None and self.end_epoch <= self.begin_epoch:
            raise ValueError(f"--end-epoch ({self.end_epoch:g}) must be after --begin-epoch ({self.begin_epoch:g})")
        uses_bounds = self.begin_step or self.end_step is not None or self.begin_epoch is not None or self.end_epoch is not None
        if uses_bounds and self.schedule is not Schedule.POLYNOMIAL:
            raise ValueError("--begin-step/--end-step/--begin-epoch/--end-epoch bound the polynomial schedule; add --schedule polynomial")
        if self.schedule is Schedule.POLYNOMIAL and self.initial_sparsity > self.sparsity:
            raise ValueError(f"initial sparsity {self.initial_sparsity} is above the target {self.sparsity}")
        return self

    def step_bounds(self, steps_per_epoch: int, total_steps: int) -> tuple[int, int]:
        """``(begin, end)`` of the polynomial schedule in steps, from steps or epochs."""
        begin = self.begin_step if self.begin_epoch is None else int(round(self.begin_epoch * steps_per_epoch))
        if self.end_step is not None:
            end = self.end_step
        elif self.end_epoch is not None:
            end = int(round(self.end_epoch * steps_per_epoch))
        else:
            end = int(total_steps * 0.75)
        return begin, max(begin + 1, end)

    def sparsity_for(self, path: str) -> float:
        """The target sparsity of a layer: the first matching target, else ``sparsity``."""
        import re

        if self.structure is Structure.TWO_FOUR:
            return 0.5
        for target in self.targets:
            if re.search(target.layers, path):
                return target.sparsity
        return self.sparsity


def make_config(**kwargs: Any) -> PruneConfig:
    """Builds a :class:`PruneConfig`, turning validation errors into one-line InputErrors."""
    try:
        return PruneConfig(**kwargs)
    except ValidationError as exc:
        raise InputError(_pydantic_message(exc), hint="see `edgekit prune --help`") from None


def _pydantic_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    option = {"sparsity": "--sparsity", "initial_sparsity": "--initial-sparsity", "end_step": "--end-step",
              "begin_step": "--begin-step", "begin_epoch": "--begin-epoch", "end_epoch": "--end-epoch", "frequency": "--frequency",
              "clusters": "--clusters"}.get(where, where)
    got = err.get("input")
    return f"{option + ': ' if option else ''}{msg}" + (f" (got {got!r})" if option and not isinstance(got, dict) else "")


def load_targets(path: str | os.PathLike[str]) -> tuple[LayerTarget, ...]:
    """Reads per-layer targets from YAML: ``targets: [{layers: REGEX, sparsity: 0.9}, ...]``."""
    import yaml

    from edgekit.core.fsutil import require_file

    p = require_file(path, "targets file")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"targets file {p} is not valid YAML ({str(exc).splitlines()[0]})", hint="fix the YAML syntax") from None
    if not isinstance(raw, dict) or set(raw) != {"targets"} or not isinstance(raw["targets"], list):
        raise InputError(f"targets file {p} must hold exactly one key 'targets' with a list", hint="e.g. targets: [{layers: 'fc1', sparsity: 0.9}]")
    try:
        return tuple(LayerTarget(**entry) if isinstance(entry, dict) else LayerTarget.model_validate(entry) for entry in raw["targets"])
    except (ValidationError, TypeError) as exc:
        detail = _pydantic_message(exc) if isinstance(exc, ValidationError) else str(exc)
        raise InputError(f"targets file {p}: {detail}", hint="each entry needs 'layers' (regex) and 'sparsity' in [0, 1)") from None


# --- masks ------------------------------------------------------------------------------------

def input_axis(layer: Any) -> int | None:
    """The input-channel axis of a layer's compressed kernel (None for depthwise kernels)."""
    cls = type(layer).__name__
    if cls.startswith("Depthwise"):
        return None
    if cls == "Dense":
        return 0
    return kernel_variable(layer).ndim - 2 if kernel_variable(layer) is not None else None


def magnitude_mask(weights: np.ndarray, sparsity: float) -> np.ndarray:
    """1 for kept weights, 0 for the ``round(sparsity * size)`` smallest magnitudes (exactly)."""
    flat = np.abs(weights).reshape(-1)
    drop = int(round(sparsity * flat.size))
    mask = np.ones(flat.size, dtype=np.float32)
    if drop > 0:
        idx = np.argpartition(flat, drop - 1)[:drop]
        mask[idx] = 0.0
    return mask.reshape(weights.shape)


def m_by_n_mask(weights: np.ndarray, axis: int, keep: int = 2, group: int = 4) -> np.ndarray:
    """Keeps the ``keep`` largest of every ``group`` consecutive weights along ``axis``."""
    moved = np.moveaxis(np.abs(weights), axis, -1)
    if moved.shape[-1] % group:
        raise ValueError(f"axis of size {moved.shape[-1]} is not a multiple of {group}")
    grouped = moved.reshape(*moved.shape[:-1], moved.shape[-1] // group, group)
    order = np.argsort(grouped, axis=-1, kind="stable")
    mask = np.ones_like(grouped, dtype=np.float32)
    np.put_along_axis(mask, order[..., : group - keep], 0.0, axis=-1)
    return np.moveaxis(mask.reshape(moved.shape), -1, axis)


def check_m_by_n(weights: np.ndarray, axis: int, zeros: int = 2, group: int = 4) -> bool:
    """True if every group of ``group`` along ``axis`` has at least ``zeros`` zeros."""
    moved = np.moveaxis(weights, axis, -1)
    grouped = moved.reshape(*moved.shape[:-1], moved.shape[-1] // group, group)
    return bool(((grouped == 0).sum(axis=-1) >= zeros).all())


def sparsity_masks(model: Any, *, threshold: float = 0.0) -> dict[str, np.ndarray]:
    """The sparsity mask (1 = kept, 0 = pruned) of every compressible kernel that has zeros.

    Keys are layer paths (``conv1``, ``backbone/conv1``); the mask has the kernel's shape. For
    QAT after pruning: multiply each kernel by its mask after every step to keep the zeros.

    Example:
        >>> masks = sparsity_masks(keras.saving.load_model("pruned.keras"))  # doctest: +SKIP
        >>> float(1 - masks["fc1"].mean())  # doctest: +SKIP
        0.8
    """
    masks: dict[str, np.ndarray] = {}
    for path, layer in iter_layers(model):
        var = kernel_variable(layer)
        if var is None:
            continue
        w = np.asarray(var.numpy())
        mask = (np.abs(w) > threshold).astype(np.float32)
        if mask.size and mask.min() == 0.0:
            masks[path] = mask
    return masks


def apply_masks(model: Any, masks: dict[str, np.ndarray]) -> None:
    """Multiplies each layer's kernel by its mask, in place (for custom training loops)."""
    layers = dict(iter_layers(model))
    for path, mask in masks.items():
        var = kernel_variable(layers[path])
        var.assign(np.asarray(var.numpy()) * mask.astype(np.asarray(var.numpy()).dtype))


def mask_callback(model: Any, masks: dict[str, np.ndarray], schedule: Any = None) -> Any:
    """A Keras callback that re-applies ``masks`` after every training batch.

    ``schedule(step) -> dict[path, mask] | None`` may return new masks at a step (polynomial
    pruning); they replace the old ones before that batch runs.
    """
    from edgekit.core.tfshim import keras, tensorflow

    tf = tensorflow()
    layers = dict(iter_layers(model))
    pairs = []
    for path, mask in masks.items():
        var = kernel_variable(layers[path])
        pairs.append((path, var, tf.Variable(mask.astype(np.float32), trainable=False)))

    @tf.function
    def reapply() -> None:
        for _, var, mask_var in pairs:
            var.assign(var * tf.cast(mask_var, var.dtype))

    class MaskCallback(keras().callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.step = 0
            self.reapply = reapply

        def on_train_begin(self, logs=None):
            reapply()

        def on_train_batch_begin(self, batch, logs=None):
            if schedule is None:
                return
            new = schedule(self.step)
            if new:
                for path, _var, mask_var in pairs:
                    if path in new:
                        mask_var.assign(new[path].astype(np.float32))
                reapply()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            reapply()

    return MaskCallback()


def polynomial_sparsity(step: float, target: float, initial: float, begin: float, end: float) -> float:
    """tfmot's PolynomialDecay (power 3): ``initial`` at ``begin`` up to ``target`` at ``end``."""
    progress = 1.0 if end <= begin else min(1.0, max(0.0, (step - begin) / (end - begin)))
    return target + (initial - target) * (1.0 - progress) ** 3


# --- the pass ---------------------------------------------------------------------------------

@dataclass
class LayerPlan:
    """What the pass will do to one layer (decided by :meth:`PrunePass.check`)."""

    path: str
    layer_class: str
    parameters: int
    target: float | None
    reason: str | None = None  # why it is skipped


class PrunePass:
    """Magnitude, 2:4 or channel pruning with fine-tuning.

    Example:
        >>> p = PrunePass(PruneConfig(sparsity=0.8))
        >>> plan = p.check(model, train)          # doctest: +SKIP
        >>> tuned = p.apply(model, train, TrainSettings(epochs=2))  # doctest: +SKIP
        >>> plain = p.finalize(tuned)             # doctest: +SKIP
    """

    name = "prune"

    def __init__(self, config: PruneConfig, *, distill: bool = False) -> None:
        self.config = config
        self.distill = distill  # fine-tune with the original model as teacher (edgekit.passes.distill)
        self.plan: list[LayerPlan] = []
        self.masks: dict[str, np.ndarray] = {}
        self.history: dict[str, list[float]] = {}
        self.source: Any = None
        self.channel_report: dict[str, tuple[int, int]] = {}
        self.channel_skips: dict[str, str] = {}

    def check(self, model: Any, train: Dataset | None, settings: TrainSettings | None = None) -> list[LayerPlan]:
        """Decides which layers are pruned and raises before any training if anything is wrong."""
        settings = settings or TrainSettings()
        if settings.epochs < 0:
            raise InputError(f"--epochs cannot be negative, got {settings.epochs}", hint="use 0 for one-shot pruning without fine-tuning")
        if settings.batch_size < 1:
            raise InputError(f"--batch-size must be at least 1, got {settings.batch_size}", hint="e.g. --batch-size 64")
        if settings.learning_rate is not None and not settings.learning_rate > 0:
            raise InputError(f"--learning-rate must be positive, got {settings.learning_rate}", hint="e.g. --learning-rate 1e-4")
        check_training_data(model, train, need_labels=settings.epochs > 0)
        if self.config.schedule is Schedule.POLYNOMIAL and train is not None and settings.epochs > 0:
            steps_per_epoch = int(np.ceil(len(train) / settings.batch_size))
            total = settings.epochs * steps_per_epoch
            begin = self.config.begin_step if self.config.begin_epoch is None else int(round(self.config.begin_epoch * steps_per_epoch))
            if begin >= total:
                raise InputError(f"the pruning schedule starts at step {begin}, but fine-tuning has only {total} steps "
                                 f"({settings.epochs} epochs of {steps_per_epoch})", hint="start earlier, or train longer (--epochs)")
            end = self.config.end_step if self.config.end_epoch is None else int(round(self.config.end_epoch * steps_per_epoch))
            if end is not None and end <= begin:
                raise InputError(f"the pruning schedule ends at step {end}, not after its start (step {begin})",
                                 hint="give both bounds in epochs (--begin-epoch/--end-epoch) or both in steps")
        candidates = [(p, layer) for p, layer in iter_layers(model) if kernel_variable(layer) is not None]
        chosen = set(select_paths([p for p, _ in candidates], self.config.layers, self.config.skip))
        for target in self.config.targets:
            if not any(__import__("re").search(target.layers, p) for p, _ in candidates):
                raise InputError(f"per-layer target '{target.layers}' selects no layer", hint="fix the regex in the targets file")
        self.plan = []
        for path, layer in candidates:
            kernel = kernel_variable(layer)
            entry = LayerPlan(path, type(layer).__name__, int(np.prod(kernel.shape)), self.config.sparsity_for(path))
            if path not in chosen:
                entry.reason, entry.target = "not selected (--layers/--skip)", None
            elif self.config.structure is Structure.TWO_FOUR:
                axis = input_axis(layer)
                if axis is None:
                    entry.reason, entry.target = "depthwise kernel has no input-channel axis for 2:4", None
                elif kernel.shape[axis] % 4:
                    entry.reason, entry.target = f"{kernel.shape[axis]} input channels is not a multiple of 4", None
            elif self.config.structure is Structure.CHANNELS and type(layer).__name__.startswith("Depthwise"):
                entry.reason, entry.target = "depthwise: follows the channels of the layer before it", None
            self.plan.append(entry)
        if self.config.structure is Structure.TWO_FOUR and not any(e.reason is None for e in self.plan):
            raise ModelError("no selected layer can take 2:4 sparsity (input channels must be a multiple of 4)", hint="select other layers")
        if self.config.structure is Structure.CHANNELS:
            plan = channel_groups(model)
            ok, why = plan.free_groups({e.path for e in self.plan if e.reason is None})
            for root, reason in why.items():
                for producer in plan.groups[root].producers:
                    self.channel_skips[producer] = f"output channels {reason}"
            if not ok:
                first = next(iter(why.values()), "no group found")
                raise ModelError(f"no output channels can be removed from the selected layers (e.g. one {first})", hint="select other layers")
        return self.plan

    def _targets(self) -> dict[str, float]:
        return {e.path: float(e.target) for e in self.plan if e.reason is None and e.target is not None}

    def initial_masks(self, model: Any, sparsity_scale: Any = None) -> dict[str, np.ndarray]:
        layers = dict(iter_layers(model))
        masks = {}
        for path, target in self._targets().items():
            w = np.asarray(kernel_variable(layers[path]).numpy())
            if self.config.structure is Structure.TWO_FOUR:
                masks[path] = m_by_n_mask(w, input_axis(layers[path]))
            else:
                masks[path] = magnitude_mask(w, target if sparsity_scale is None else sparsity_scale(target))
        return masks

    def apply(self, model: Any, train: Dataset | None, settings: TrainSettings | None = None, val: Dataset | None = None) -> Any:
        """Returns a new pruned (and fine-tuned if ``settings.epochs`` > 0) model; ``model`` is untouched."""
        settings = settings or TrainSettings()
        self.source = model
        if not self.plan:
            self.check(model, train, settings)
        if self.config.structure is Structure.CHANNELS:
            return self._apply_channels(model, train, settings, val)
        new = clone_model(model)
        steps_per_epoch = int(np.ceil(len(train) / settings.batch_size)) if train is not None else 0
        total_steps = settings.epochs * steps_per_epoch
        cfg = self.config
        if cfg.schedule is Schedule.POLYNOMIAL and total_steps > 0:
            begin, end = cfg.step_bounds(steps_per_epoch, total_steps)
            freq = cfg.frequency or max(1, min(100, (end - begin) // 10))
            masks = self.initial_masks(new, lambda t: cfg.initial_sparsity if begin == 0 else 0.0)
            layers = dict(iter_layers(new))
            targets = self._targets()

            def schedule(step: int) -> dict[str, np.ndarray] | None:
                if step < begin or step > end or (step - begin) % freq and step != end:
                    return None
                out = {}
                for path, target in targets.items():
                    s = polynomial_sparsity(step, target, cfg.initial_sparsity, begin, end)
                    out[path] = magnitude_mask(np.asarray(kernel_variable(layers[path]).numpy()), s)
                return out

            callback = mask_callback(new, masks, schedule)
        else:
            masks = self.initial_masks(new)
            callback = mask_callback(new, masks)
        if total_steps > 0:
            self.history = self._fit(new, model, train, val, settings, [callback], title="prune")
        # the final masks: the schedule's end point, from the trained weights
        layers = dict(iter_layers(new))
        if cfg.schedule is Schedule.POLYNOMIAL:
            masks = self.initial_masks(new)
        self.masks = masks
        for path, mask in masks.items():
            var = kernel_variable(layers[path])
            var.assign(np.where(mask > 0, np.asarray(var.numpy()), 0.0).astype(var.dtype))
        return new

    def _apply_channels(self, model: Any, train: Dataset | None, settings: TrainSettings, val: Dataset | None) -> Any:
        selected = {e.path for e in self.plan if e.reason is None}
        original_sizes: dict[str, int] = {}
        for path, layer in iter_layers(model):
            if path in selected:
                original_sizes[path] = int(kernel_variable(layer).shape[-1])
        cfg = self.config
        stages: list[float]
        if cfg.schedule is Schedule.POLYNOMIAL and settings.epochs > 1:
            # channels go in steps, one rebuild per epoch: the rebuild before epoch e removes the
            # fraction the polynomial curve (bounds in epochs; step bounds converted) reaches at the
            # end of epoch e; epochs that start before the begin bound train unpruned
            steps_per_epoch = max(1, int(np.ceil(len(train) / settings.batch_size))) if train is not None else 1
            begin = cfg.begin_epoch if cfg.begin_epoch is not None else cfg.begin_step / steps_per_epoch
            if cfg.end_epoch is not None:
                end = cfg.end_epoch
            elif cfg.end_step is not None:
                end = cfg.end_step / steps_per_epoch
            else:
                end = max(1, settings.epochs - 1)
            stages = [polynomial_sparsity(e + 1, 1.0, 0.0, begin, end) if e >= begin else 0.0
                      for e in range(settings.epochs)]
        else:
            stages = [1.0]
        current = clone_model(model)
        epochs_done = 0
        for index, fraction in enumerate(stages):
            plan = channel_groups(current)

            def sparsity_of(group, fraction=fraction):
                producer = group.producers[0]
                target = max(cfg.sparsity_for(p) for p in group.producers)
                return target * fraction, original_sizes[producer]

            keep = choose_channels(plan, selected, sparsity_of)
            if keep:
                current = rebuild(current, plan, keep)
            epochs = settings.epochs if len(stages) == 1 else (1 if index < len(stages) else 0)
            if epochs > 0 and train is not None:
                history = self._fit(current, model, train, val, settings, [], title="prune", epochs=epochs, initial_epoch=epochs_done)
                for key, values in history.items():
                    self.history.setdefault(key, []).extend(values)
                epochs_done += epochs
        after = {p: int(kernel_variable(layer).shape[-1]) for p, layer in iter_layers(current) if p in original_sizes}
        self.channel_report = {p: (original_sizes[p], after.get(p, original_sizes[p])) for p in original_sizes}
        return current

    def _fit(self, *args: Any, **kwargs: Any) -> dict[str, list[float]]:
        """:func:`edgekit.passes.compress.fit`, or with ``distill`` the same fine-tuning with the original model as teacher."""
        if self.distill:
            from edgekit.passes.distill import fit_for_pass

            return fit_for_pass(*args, **kwargs)
        return fit(*args, **kwargs)

    def finalize(self, model: Any) -> Any:
        """A plain Keras model: masks enforced exactly, no optimizer or training state."""
        plain = strip_training_state(model, self.source)
        if self.masks:
            apply_masks_exact(plain, self.masks)
        return plain

    def layer_reports(self, original: Any, final: Any) -> list[LayerReport]:
        final_layers = dict(iter_layers(final))
        reports = []
        for entry in self.plan:
            layer = final_layers.get(entry.path)
            w = np.asarray(kernel_variable(layer).numpy()) if layer is not None else None
            achieved = float((w == 0).mean()) if w is not None and w.size else None
            rep = LayerReport(entry.path, entry.layer_class, entry.parameters, "pruned", entry.reason,
                              entry.target, achieved)
            if self.config.structure is Structure.CHANNELS:
                if entry.path in self.channel_report:
                    before, after = self.channel_report[entry.path]
                    rep.channels_before, rep.channels_after = before, after
                    if after == before:
                        rep.status = "skipped"
                        rep.reason = rep.reason or self.channel_skips.get(entry.path, "no channel removed")
                    rep.target_sparsity = entry.target if after != before else None
                    rep.sparsity = 1.0 - after / before
                else:
                    rep.status = "rewired" if entry.reason and entry.reason.startswith("depthwise") else "skipped"
                    rep.target_sparsity = None
                    if layer is not None and entry.layer_class.startswith("Depthwise"):
                        rep.channels_before = int(kernel_variable(dict(iter_layers(original))[entry.path]).shape[-2])
                        rep.channels_after = int(kernel_variable(layer).shape[-2])
                    rep.sparsity = None
            elif entry.reason:
                rep.status = "skipped"
            reports.append(rep)
        return reports


def apply_masks_exact(model: Any, masks: dict[str, np.ndarray]) -> None:
    """Sets masked weights to +0.0 exactly (no -0.0), in place."""
    layers = dict(iter_layers(model))
    for path, mask in masks.items():
        var = kernel_variable(layers[path])
        w = np.asarray(var.numpy())
        var.assign(np.where(mask > 0, w, np.zeros_like(w)))


# --- the command ------------------------------------------------------------------------------

@dataclass
class CompressionResult:
    """What ``edgekit prune`` / ``edgekit cluster`` produced and measured."""

    kind: str
    output: str
    report_path: str | None
    config: dict[str, Any]
    layers: list[LayerReport]
    unsupported: list[tuple[str, str]]
    parameters_before: int
    parameters_after: int
    top1_before: float | None
    top1_after: float | None
    export: ExportComparison | None
    history: dict[str, list[float]]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from edgekit.core.manifest import versions

        return {
            "kind": self.kind,
            "output": self.output,
            "config": self.config,
            "parameters": {"before": self.parameters_before, "after": self.parameters_after},
            "top1": {"before": self.top1_before, "after": self.top1_after,
                     "drop": (self.top1_before - self.top1_after) if self.top1_before is not None and self.top1_after is not None else None},
            "layers": [r.to_dict() for r in self.layers],
            "unsupported_layers": [{"path": p, "class": c} for p, c in self.unsupported],
            "export": self.export.to_dict() if self.export else None,
            "history": self.history,
            "seconds": round(self.seconds, 1),
            "notes": self.notes,
            "versions": versions(),
        }



def load_inputs(model: Any, output: Any, data: Any, val: Any, preprocessing: Preprocessing | None, force: bool,
                unsafe: bool, custom_objects: Any, x_key: str, y_key: str, suffix_check: bool = True):
    """Shared loading for prune and cluster: checks the output path, loads model (compiled) and data."""
    from edgekit.core.data import load_dataset
    from edgekit.core.fsutil import check_output_path
    from edgekit.core.models import LoadedModel, load_model

    src = model.path if isinstance(model, LoadedModel) else model
    data_path = data.source if isinstance(data, Dataset) else data
    val_path = val.source if isinstance(val, Dataset) else val
    out = check_output_path(output, inputs=[src, data_path, val_path], force=force, suffixes=(".keras",),
                            sidecars=[report_path_for(output)])
    loaded = model if isinstance(model, LoadedModel) else load_model(model, unsafe=unsafe, custom_objects=custom_objects, compile=True)
    if loaded.keras_model is None:
        raise ModelError(f"{loaded.path} is a SavedModel; pruning and clustering need the Keras model (.keras or .h5)", hint="pass the .keras file")
    pre = preprocessing or Preprocessing()

    def dataset(d: Any) -> Dataset | None:
        if d is None or isinstance(d, Dataset):
            return d
        return load_dataset(d, input_shape=loaded.input_shape, preprocessing=pre, x_key=x_key, y_key=y_key)

    return out, loaded, dataset(data), dataset(val)


def save_model(model: Any, out: Path) -> None:
    from edgekit.core.fsutil import save_keras_atomic

    save_keras_atomic(model, out)


def finish(kind: str, source: Any, final: Any, out: Path, config: dict[str, Any], layers: list[LayerReport], train: Dataset | None,
           val: Dataset | None, history: dict[str, list[float]], started: float, *, export: bool, export_mode: str, runs: int,
           threads: int, structure: str | None, notes: list[str]) -> CompressionResult:
    """Saves the model, measures it against the source, writes the report."""
    from edgekit.core.data import calibration_sample
    from edgekit.core.fsutil import write_json_atomic

    save_model(final, out)
    comparison = None
    if export:
        calib_source = train if train is not None else val
        if calib_source is None:
            notes.append("no data to calibrate int8 export; export comparison skipped")
        else:
            comparison = compare_exports(source, final, calibration_sample(calib_source, 100, 0), val=val, mode=export_mode,
                                         runs=runs, threads=threads, structure=structure)
    result = CompressionResult(
        kind=kind, output=str(out), report_path=str(report_path_for(out)), config=config, layers=layers,
        unsupported=unsupported_layers(source), parameters_before=int(source.count_params()),
        parameters_after=int(final.count_params()), top1_before=keras_top1(source, val), top1_after=keras_top1(final, val),
        export=comparison, history=history, seconds=time.perf_counter() - started, notes=notes,
    )
    write_json_atomic(report_path_for(out), result.to_dict())
    return result


def prune(
    model: str | os.PathLike[str] | Any,
    output: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | Dataset | None,
    val: str | os.PathLike[str] | Dataset | None = None,
    sparsity: float | None = None,
    structure: Structure | str = Structure.UNSTRUCTURED,
    schedule: Schedule | str = Schedule.CONSTANT,
    initial_sparsity: float = 0.0,
    begin_step: int = 0,
    end_step: int | None = None,
    frequency: int | None = None,
    begin_epoch: float | None = None,
    end_epoch: float | None = None,
    layers: str | None = None,
    skip: str | None = None,
    targets: str | os.PathLike[str] | tuple[LayerTarget, ...] | None = None,
    epochs: int = 2,
    batch_size: int = 64,
    learning_rate: float | None = None,
    lr_schedule: str = "constant",
    loss: str | None = None,
    seed: int = 0,
    preprocessing: Preprocessing | None = None,
    export: bool = True,
    export_mode: str = "int8",
    runs: int = 60,
    threads: int = 1,
    force: bool = False,
    unsafe: bool = False,
    custom_objects: str | os.PathLike[str] | None = None,
    x_key: str = "x",
    y_key: str = "y",
    progress: bool = False,
    distill: bool = False,
) -> CompressionResult:
    """Prunes ``model``, fine-tunes it on ``data`` and writes ``output`` (.keras) and its report.

    Every check (paths, options, regexes, model, data against the model) runs before training.
    ``export`` converts the original and the pruned model to ``export_mode`` TFLite and measures
    size (on disk, gzip) and latency side by side; the report says plainly when it is not faster.
    """
    structure = Structure(structure)
    if sparsity is None:
        if structure is not Structure.TWO_FOUR:
            raise InputError(f"--sparsity is required for --structure {structure.value}", hint="e.g. --sparsity 0.8")
        sparsity = 0.5
    elif structure is Structure.TWO_FOUR and sparsity != 0.5:
        raise InputError(f"--structure 2:4 always prunes 50%, but --sparsity {sparsity} was given", hint="drop --sparsity for 2:4")
    target_list = load_targets(targets) if isinstance(targets, (str, os.PathLike)) else tuple(targets or ())
    config = make_config(sparsity=sparsity, structure=structure, schedule=Schedule(schedule), initial_sparsity=initial_sparsity,
                         begin_step=begin_step, end_step=end_step, begin_epoch=begin_epoch, end_epoch=end_epoch, frequency=frequency,
                         layers=layers, skip=skip, targets=target_list)
    if config.end_epoch is not None and config.end_epoch > epochs:
        raise InputError(f"--end-epoch {config.end_epoch:g} is after the last fine-tuning epoch ({epochs})",
                         hint=f"use --end-epoch <= {epochs}, or more --epochs")
    if config.begin_epoch is not None and config.begin_epoch >= epochs:
        raise InputError(f"--begin-epoch {config.begin_epoch:g} leaves no fine-tuning epoch to prune in (--epochs {epochs})",
                         hint=f"use --begin-epoch < {epochs}, or more --epochs")
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, loss=loss, seed=seed, progress=progress,
                             lr_schedule=lr_schedule)
    from edgekit.runtime.local import check_run_options

    if export:
        check_run_options(runs, 0, threads)
    started = time.perf_counter()
    out, loaded, train, val_ds = load_inputs(model, output, data, val, preprocessing, force, unsafe, custom_objects, x_key, y_key)
    source = loaded.keras_model
    check_training_data(source, val_ds, what="--val", need_labels=False)
    p = PrunePass(config, distill=distill)
    final = run_pass(p, source, train, settings, val_ds, loss, "pruning")
    notes = []
    skipped = [r for r in p.layer_reports(source, final) if r.status == "skipped"]
    if skipped:
        notes.append("skipped: " + "; ".join(f"{r.path} ({r.reason})" for r in skipped))
    return finish("prune", source, final, out, {**config.model_dump(mode="json"), "epochs": epochs, "batch_size": batch_size,
                                                   "learning_rate": learning_rate, "lr_schedule": lr_schedule, "loss": loss, "seed": seed, "distill": distill},
                  p.layer_reports(source, final), train, val_ds, p.history, started, export=export, export_mode=export_mode,
                  runs=runs, threads=threads, structure=structure.value, notes=notes)
