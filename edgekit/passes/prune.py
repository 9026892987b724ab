"""Pruning of Keras 3 models: unstructured magnitude, 2:4 structured, and channel removal.

Natively for Keras 3 (no tf-keras, no tfmot). :class:`PrunePass` follows edgekit's pass
interface (:mod:`edgekit.passes.base`): one typed :class:`PruneConfig` (what ``edgekit prune``'s
options and a recipe's ``prune`` step both build), ``check`` (fails before any training),
``apply`` (a new, fine-tuned model; the input model is never modified; per-layer reports and the
training history in ``PassOutput.details``) and ``finalize`` (a plain Keras model: no optimizer
state, no custom class).

- ``unstructured``: per layer, the smallest-magnitude kernel weights are set to zero; a Keras
  callback re-applies the masks after every training batch (``polynomial`` recomputes them on a
  schedule from ``initial_sparsity`` to the target, tfmot's PolynomialDecay);
- ``2:4``: in every group of 4 consecutive weights along the input-channel axis (Conv kernels
  HWIO: along I; Dense (in, out): along in) the 2 smallest are zero. Layers whose input channels
  are not a multiple of 4, and depthwise kernels, are skipped and listed;
- ``channels``: the least important filters are physically removed and the model is rebuilt
  smaller (:mod:`edgekit.passes.channels`), then fine-tuned.

With ``distill`` the fine-tuning uses the original model (the context's teacher) as teacher.

Example:
    >>> out = PrunePass(PruneConfig(sparsity=0.8, epochs=2)).apply(ModelState(keras=model), PassContext(train=train))  # doctest: +SKIP
    >>> out.details["layers"][0]["sparsity"]  # doctest: +SKIP
    0.8
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgekit.core.errors import InputError, ModelError
from edgekit.core.keras_graph import channel_groups, clone_model, iter_layers, kernel_variable, layers_by_path, select_paths
from edgekit.passes.base import ModelState, Pass, PassContext, PassOutput
from edgekit.passes.channels import choose_channels, rebuild
from edgekit.passes.compression import CompressionConfig, LayerReport, check_regex, setting_error
from edgekit.passes.prune_masks import input_axis, m_by_n_mask, magnitude_mask, mask_callback, polynomial_sparsity
from edgekit.passes.recovery import fit_for_pass
from edgekit.passes.training import (
    TrainSettings,
    check_training_data,
    compile_like_source,
    fit,
    resolve_loss,
    strip_training_state,
)


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
        check_regex(value, "layers")
        return value


_BOUNDS = ("begin_step", "end_step", "begin_epoch", "end_epoch")


class PruneConfig(CompressionConfig):
    """Settings of a pruning pass (unknown keys are rejected).

    ``begin_step``/``end_step`` bound the polynomial schedule in training steps (batches), or
    ``begin_epoch``/``end_epoch`` in epochs (fractions allowed; not both for the same end);
    the end defaults to 3/4 of the fine-tuning steps, so the last quarter trains at the final
    sparsity. ``frequency`` is how often (in steps) masks are recomputed.
    """

    pass_: Literal["prune"] = Field("prune", alias="pass")
    sparsity: float = Field(0.5, ge=0.0, lt=1.0, description="Fraction of weights (or channels) to remove; 2:4 is always 0.5.")
    structure: Structure = Field(Structure.UNSTRUCTURED, description="unstructured, 2:4 or channels.")
    schedule: Schedule = Field(Schedule.CONSTANT, description="constant, or polynomial from initial_sparsity.")
    initial_sparsity: float = Field(0.0, ge=0.0, lt=1.0, description="Polynomial schedule: sparsity at its start.")
    begin_step: int = Field(0, ge=0, description="Polynomial schedule: first step (batch) that prunes.")
    end_step: int | None = Field(None, ge=1, description="Polynomial schedule: step reaching the target (default 3/4 of training).")
    begin_epoch: float | None = Field(None, ge=0.0, allow_inf_nan=False, description="Polynomial schedule: first epoch that prunes.")
    end_epoch: float | None = Field(None, gt=0.0, allow_inf_nan=False, description="Polynomial schedule: epoch reaching the target.")
    frequency: int | None = Field(None, ge=1, description="Polynomial schedule: recompute masks every N steps (default ~10 updates).")
    targets: tuple[LayerTarget, ...] = Field((), description="Per-layer sparsity: the first target whose regex matches a layer path.")
    distill: bool = Field(False, description="Fine-tune with the original model as teacher (hidden features and outputs).")

    @model_validator(mode="after")
    def _consistent(self) -> PruneConfig:
        two_four = self.structure is Structure.TWO_FOUR
        polynomial = self.schedule is Schedule.POLYNOMIAL
        if two_four and polynomial:
            raise setting_error("structure 2:4 is a fixed pattern (exactly 50% sparsity); use schedule constant", "structure", "schedule")
        if two_four and self.sparsity != 0.5 and "sparsity" in self.model_fields_set:
            raise setting_error(f"structure 2:4 always prunes 50%, but sparsity {self.sparsity:g} was given", "structure", "sparsity",
                                hint="drop sparsity for 2:4")
        if two_four and self.targets:
            raise setting_error("per-layer sparsity targets do not apply to structure 2:4 (always 50%)", "targets", "structure")
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise setting_error(f"end_step ({self.end_step}) must be after begin_step ({self.begin_step})", "end_step", "begin_step")
        if self.begin_epoch is not None and self.begin_step:
            raise setting_error("give the schedule's start as begin_step or begin_epoch, not both", "begin_step", "begin_epoch")
        if self.end_epoch is not None and self.end_step is not None:
            raise setting_error("give the schedule's end as end_step or end_epoch, not both", "end_step", "end_epoch")
        if self.begin_epoch is not None and self.end_epoch is not None and self.end_epoch <= self.begin_epoch:
            raise setting_error(f"end_epoch ({self.end_epoch:g}) must be after begin_epoch ({self.begin_epoch:g})", "end_epoch", "begin_epoch")
        uses_bounds = self.begin_step or self.end_step is not None or self.begin_epoch is not None or self.end_epoch is not None
        if uses_bounds and not polynomial:
            raise setting_error("begin_step/end_step/begin_epoch/end_epoch bound the polynomial pruning curve; add schedule polynomial",
                                *_BOUNDS, "schedule")
        if polynomial and self.initial_sparsity > self.sparsity:
            raise setting_error(f"initial_sparsity {self.initial_sparsity:g} is above the target sparsity {self.sparsity:g}",
                                "initial_sparsity", "sparsity")
        if self.end_epoch is not None and self.end_epoch > self.epochs:
            raise setting_error(f"end_epoch {self.end_epoch:g} is after the last fine-tuning epoch ({self.epochs})", "end_epoch", "epochs",
                                hint=f"use end_epoch <= {self.epochs}, or more epochs")
        if self.begin_epoch is not None and self.begin_epoch >= self.epochs:
            raise setting_error(f"begin_epoch {self.begin_epoch:g} leaves no fine-tuning epoch to prune in (epochs {self.epochs})",
                                "begin_epoch", "epochs", hint=f"use begin_epoch < {self.epochs}, or more epochs")
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
        if self.structure is Structure.TWO_FOUR:
            return 0.5
        for target in self.targets:
            if re.search(target.layers, path):
                return target.sparsity
        return self.sparsity


@dataclass(frozen=True)
class LayerPlan:
    """What the pass will do to one layer."""

    path: str
    layer_class: str
    parameters: int
    target: float | None
    reason: str | None = None  # why it is skipped


@dataclass(frozen=True)
class PrunePlan:
    """Every candidate layer's plan, and why channel groups cannot lose channels (``channels``)."""

    layers: tuple[LayerPlan, ...]
    channel_skips: Mapping[str, str] = field(default_factory=dict)

    def targets(self) -> dict[str, float]:
        """Target sparsity of every layer that is pruned."""
        return {e.path: float(e.target) for e in self.layers if e.reason is None and e.target is not None}

    def selected(self) -> set[str]:
        return {e.path for e in self.layers if e.reason is None}


class PrunePass(Pass[PruneConfig]):
    """Magnitude, 2:4 or channel pruning with fine-tuning (see the module docstring).

    Example:
        >>> p = PrunePass(PruneConfig(sparsity=0.8, epochs=2))
        >>> p.check(ModelState(keras=model), ctx)                # doctest: +SKIP
        >>> plain = p.finalize(p.apply(ModelState(keras=model), ctx).state).keras  # doctest: +SKIP
    """

    name = "prune"
    config_type = PruneConfig
    trains = True

    def check(self, state: ModelState, ctx: PassContext) -> None:
        """Raises before any training if the model, the data, the schedule or the layer selection is wrong."""
        model = _keras_of(state)
        cfg = self.config
        check_training_data(model, ctx.train, need_labels=cfg.epochs > 0)
        if cfg.epochs > 0:
            resolve_loss(model, cfg.loss)  # fail now, not after the first epoch
        if cfg.schedule is Schedule.POLYNOMIAL and ctx.train is not None and cfg.epochs > 0:
            steps_per_epoch = int(np.ceil(len(ctx.train) / cfg.batch_size))
            total = cfg.epochs * steps_per_epoch
            begin = cfg.begin_step if cfg.begin_epoch is None else int(round(cfg.begin_epoch * steps_per_epoch))
            if begin >= total:
                raise InputError(f"the pruning schedule starts at step {begin}, but fine-tuning has only {total} steps "
                                 f"({cfg.epochs} x {steps_per_epoch} per epoch)", hint="start earlier, or train longer (more epochs)",
                                 settings=("epochs",))
            end = cfg.end_step if cfg.end_epoch is None else int(round(cfg.end_epoch * steps_per_epoch))
            if end is not None and end <= begin:
                raise InputError(f"the pruning schedule ends at step {end}, not after its start (step {begin})",
                                 hint="give both bounds in epochs (begin_epoch/end_epoch) or both in steps", settings=("begin_epoch", "end_epoch"))
        self.plan(model)

    def plan(self, model: Any) -> PrunePlan:
        """Which layers are pruned (and why the others are not); raises if the selection prunes nothing."""
        cfg = self.config
        candidates = [(p, layer) for p, layer in iter_layers(model) if kernel_variable(layer) is not None]
        chosen = set(select_paths([p for p, _ in candidates], cfg.layers, cfg.skip))
        for entry in cfg.targets:
            if not any(re.search(entry.layers, p) for p, _ in candidates):
                raise InputError(f"per-layer target '{entry.layers}' selects no layer", hint="fix the regex in the targets",
                                 settings=("targets",))
        entries = []
        for path, layer in candidates:
            kernel = kernel_variable(layer)
            target: float | None = cfg.sparsity_for(path)
            reason = None
            if path not in chosen:
                reason = "not selected (layers/skip)"
            elif cfg.structure is Structure.TWO_FOUR:
                axis = input_axis(layer)
                if axis is None:
                    reason = "depthwise kernel has no input-channel axis for 2:4"
                elif kernel.shape[axis] % 4:
                    reason = f"{kernel.shape[axis]} input channels is not a multiple of 4"
            elif cfg.structure is Structure.CHANNELS and type(layer).__name__.startswith("Depthwise"):
                reason = "depthwise: follows the channels of the layer before it"
            entries.append(LayerPlan(path, type(layer).__name__, int(np.prod(kernel.shape)), None if reason else target, reason))
        plan = PrunePlan(tuple(entries))
        if cfg.structure is Structure.TWO_FOUR and not plan.selected():
            raise ModelError("no selected layer can take 2:4 sparsity (input channels must be a multiple of 4)", hint="select other layers")
        if cfg.structure is Structure.CHANNELS:
            groups = channel_groups(model)
            ok, why = groups.free_groups(plan.selected())
            skips = {producer: f"output channels {reason}" for root, reason in why.items() for producer in groups.groups[root].producers}
            if not ok:
                first = next(iter(why.values()), "no group found")
                raise ModelError(f"no output channels can be removed from the selected layers (e.g. one {first})", hint="select other layers")
            plan = PrunePlan(plan.layers, skips)
        return plan

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        """A new pruned (and fine-tuned) model; ``details``: ``layers`` (per-layer reports) and ``history``."""
        source = _keras_of(state)
        plan = self.plan(source)
        settings = TrainSettings.of(self.config, ctx)
        channel_report: dict[str, tuple[int, int]] = {}
        if self.config.structure is Structure.CHANNELS:
            new, history, channel_report = self._apply_channels(source, plan, ctx, settings)
        else:
            new, history = self._apply_masks(source, plan, ctx, settings)
        compile_like_source(new, source)
        reports = layer_reports(self.config, plan, source, new, channel_report)
        return PassOutput(state=state.with_keras(new), details={"layers": [r.to_dict() for r in reports], "history": history})

    def finalize(self, state: ModelState) -> ModelState:
        """A plain Keras model: no optimizer state (the loss kept for a later fine-tuning step)."""
        return state.with_keras(strip_training_state(state.keras), kind=state.kind)

    def _masks(self, model: Any, targets: dict[str, float], sparsity: Any = None) -> dict[str, np.ndarray]:
        layers = layers_by_path(model)
        masks = {}
        for path, target in targets.items():
            w = np.asarray(kernel_variable(layers[path]).numpy())
            if self.config.structure is Structure.TWO_FOUR:
                masks[path] = m_by_n_mask(w, input_axis(layers[path]))  # type: ignore[arg-type]
            else:
                masks[path] = magnitude_mask(w, target if sparsity is None else sparsity)
        return masks

    def _apply_masks(self, source: Any, plan: PrunePlan, ctx: PassContext, settings: TrainSettings) -> tuple[Any, dict[str, list[float]]]:
        cfg = self.config
        new = clone_model(source)
        steps_per_epoch = settings.steps_per_epoch(ctx.train) if ctx.train is not None else 0
        total_steps = settings.epochs * steps_per_epoch
        targets = plan.targets()
        if cfg.schedule is Schedule.POLYNOMIAL and total_steps > 0:
            begin, end = cfg.step_bounds(steps_per_epoch, total_steps)
            freq = cfg.frequency or max(1, min(100, (end - begin) // 10))
            masks = self._masks(new, targets, cfg.initial_sparsity if begin == 0 else 0.0)
            layers = layers_by_path(new)

            def schedule(step: int) -> dict[str, np.ndarray] | None:
                if step < begin or step > end or (step - begin) % freq and step != end:
                    return None
                return {path: magnitude_mask(np.asarray(kernel_variable(layers[path]).numpy()),
                                             polynomial_sparsity(step, target, cfg.initial_sparsity, begin, end))
                        for path, target in targets.items()}

            callback = mask_callback(new, masks, schedule)
        else:
            masks = self._masks(new, targets)
            callback = mask_callback(new, masks)
        history: dict[str, list[float]] = {}
        if total_steps > 0:
            history = self._fit(new, source, ctx, settings, [callback])
        if cfg.schedule is Schedule.POLYNOMIAL:
            masks = self._masks(new, targets)  # the schedule's end point, from the trained weights
        layers = layers_by_path(new)
        for path, mask in masks.items():
            var = kernel_variable(layers[path])
            var.assign(np.where(mask > 0, np.asarray(var.numpy()), 0.0).astype(var.dtype))
        return new, history

    def _apply_channels(self, source: Any, plan: PrunePlan, ctx: PassContext,
                        settings: TrainSettings) -> tuple[Any, dict[str, list[float]], dict[str, tuple[int, int]]]:
        cfg = self.config
        selected = plan.selected()
        original_sizes = {path: int(kernel_variable(layer).shape[-1]) for path, layer in iter_layers(source) if path in selected}
        stages: list[float]
        if cfg.schedule is Schedule.POLYNOMIAL and settings.epochs > 1:
            # channels go in steps, one rebuild per epoch: the rebuild before epoch e removes the
            # fraction the polynomial curve (bounds in epochs; step bounds converted) reaches at the
            # end of epoch e; epochs that start before the begin bound train unpruned
            steps_per_epoch = max(1, settings.steps_per_epoch(ctx.train)) if ctx.train is not None else 1
            begin = cfg.begin_epoch if cfg.begin_epoch is not None else cfg.begin_step / steps_per_epoch
            if cfg.end_epoch is not None:
                end = cfg.end_epoch
            elif cfg.end_step is not None:
                end = cfg.end_step / steps_per_epoch
            else:
                end = max(1, settings.epochs - 1)
            stages = [polynomial_sparsity(e + 1, 1.0, 0.0, begin, end) if e >= begin else 0.0 for e in range(settings.epochs)]
        else:
            stages = [1.0]
        current = clone_model(source)
        history: dict[str, list[float]] = {}
        epochs_done = 0
        for fraction in stages:
            groups = channel_groups(current)

            def sparsity_of(group: Any, fraction: float = fraction) -> tuple[float, int]:
                target = max(cfg.sparsity_for(p) for p in group.producers)
                return target * fraction, original_sizes[group.producers[0]]

            keep = choose_channels(groups, selected, sparsity_of)
            if keep:
                current = rebuild(current, groups, keep)
            epochs = settings.epochs if len(stages) == 1 else 1
            if epochs > 0 and ctx.train is not None:
                for key, values in self._fit(current, source, ctx, settings, [], epochs=epochs, initial_epoch=epochs_done).items():
                    history.setdefault(key, []).extend(values)
                epochs_done += epochs
        after = {p: int(kernel_variable(layer).shape[-1]) for p, layer in iter_layers(current) if p in original_sizes}
        return current, history, {p: (original_sizes[p], after.get(p, original_sizes[p])) for p in original_sizes}

    def _fit(self, model: Any, source: Any, ctx: PassContext, settings: TrainSettings, callbacks: list[Any], *,
             epochs: int | None = None, initial_epoch: int = 0) -> dict[str, list[float]]:
        """Fine-tuning with the model's own loss, or with ``distill`` the original model as teacher."""
        assert ctx.train is not None
        if self.config.distill:
            teacher = ctx.teacher if ctx.teacher is not None else source
            return fit_for_pass(model, teacher, ctx.train, ctx.val, settings, callbacks, title="prune", epochs=epochs, initial_epoch=initial_epoch)
        return fit(model, source, ctx.train, ctx.val, settings, callbacks, title="prune", epochs=epochs, initial_epoch=initial_epoch)


def _keras_of(state: ModelState) -> Any:
    if state.keras is None or state.converted:
        raise ModelError("pruning needs a Keras model (before any conversion to TFLite)", hint="prune before quantize or export")
    return state.keras


def layer_reports(config: PruneConfig, plan: PrunePlan, original: Any, final: Any,
                  channel_report: Mapping[str, tuple[int, int]]) -> list[LayerReport]:
    """What pruning did to every candidate layer of ``original`` (``final``: the pruned model)."""
    final_layers, original_layers = layers_by_path(final), layers_by_path(original)
    reports = []
    for entry in plan.layers:
        layer = final_layers.get(entry.path)
        w = np.asarray(kernel_variable(layer).numpy()) if layer is not None else None
        sparsity = float((w == 0).mean()) if w is not None and w.size else None
        status, reason, target = "pruned", entry.reason, entry.target
        before = after = None
        if config.structure is Structure.CHANNELS:
            if entry.path in channel_report:
                before, after = channel_report[entry.path]
                if after == before:
                    status, reason, target = "skipped", reason or plan.channel_skips.get(entry.path, "no channel removed"), None
                sparsity = 1.0 - after / before
            else:
                status = "rewired" if entry.reason and entry.reason.startswith("depthwise") else "skipped"
                target = sparsity = None
                if layer is not None and entry.layer_class.startswith("Depthwise"):
                    before = int(kernel_variable(original_layers[entry.path]).shape[-2])
                    after = int(kernel_variable(layer).shape[-2])
        elif entry.reason:
            status = "skipped"
        reports.append(LayerReport(entry.path, entry.layer_class, entry.parameters, status, reason, target, sparsity, before, after))
    return reports
