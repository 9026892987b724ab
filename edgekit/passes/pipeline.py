"""The pipeline: passes in order, every check first. Single commands, recipes and ``optimize`` use it.

:func:`run_passes` checks every pass against the starting model before any of them trains or
converts, then applies and finalizes them in order, verifying that no pass touched its input
model. It knows nothing about particular passes (no ``isinstance`` dispatch): whatever a pass
did comes back in its :class:`~edgekit.passes.base.PassOutput`, and ``on_step`` lets the
caller write per-step files.

Example:
    >>> result = run_passes([PrunePass(PruneConfig(sparsity=0.5))], ModelState(keras=model), ctx)  # doctest: +SKIP
    >>> result.state.keras, result.steps[0].details["layers"]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgekit.core.datatypes import Serializable
from edgekit.core.errors import ModelError
from edgekit.core.tfshim import keras
from edgekit.passes import distribute
from edgekit.passes.base import ModelState, Pass, PassContext, PassOutput, TrainingConfig


@dataclass(frozen=True)
class StepRecord(Serializable):
    """One pass as it ran: its name, time, what it did and what it warned about."""

    index: int
    name: str
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    kind: str = "float"  # the model state's kind after the step
    artifact: str | None = None  # the file the workflow kept for this step, if any

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "pass": self.name, "seconds": round(self.seconds, 2), "kind": self.kind,
                "artifact": self.artifact, "config": self.config, "details": dict(self.details), "warnings": list(self.warnings)}


@dataclass(frozen=True)
class PipelineResult:
    """The final model state and a record per step."""

    state: ModelState
    steps: tuple[StepRecord, ...]

    @property
    def warnings(self) -> list[str]:
        return [w for s in self.steps for w in s.warnings]


StepCallback = Callable[[int, Pass, PassOutput, ModelState], str | None]


def check_passes(passes: Sequence[Pass], state: ModelState, ctx: PassContext) -> None:
    """Every pass's ``check`` against the starting model: all failures come before any work."""
    done: list[str] = []
    for p in passes:
        p.check(state, replace(ctx, passes_done=tuple(done), ahead=bool(done)))
        done.append(p.name)


def _weights(keras_model: Any) -> list[np.ndarray] | None:
    if keras_model is None or not hasattr(keras_model, "get_weights"):  # no model, or a SavedModel's LoadedModel
        return None
    return [np.array(w) for w in keras_model.get_weights()]


def run_passes(passes: Sequence[Pass], state: ModelState, ctx: PassContext, *, on_step: StepCallback | None = None,
               checked: bool = False) -> PipelineResult:
    """Runs ``passes`` on ``state``; see the module docstring.

    Args:
        passes: the passes, in order.
        state: the starting model.
        ctx: data, seed, progress callbacks (``passes_done`` is filled in per step).
        on_step: called after each step with ``(index, pass, output, finalized state)``; it may
            return the name of a file it wrote for the step (recorded in the step).
        checked: the caller already ran :func:`check_passes`.

    Raises:
        EdgekitError: from a pass's check (before any pass runs) or apply.
    """
    if not checked:
        check_passes(passes, state, ctx)
    steps: list[StepRecord] = []
    done: list[str] = []
    for index, p in enumerate(passes, start=1):
        step_ctx = replace(ctx, passes_done=tuple(done))
        if index > 1:
            p.check(state, step_ctx)  # again, on the model this pass really gets
        ctx.progress(f"[{index}/{len(passes)}] {p.name}")
        started = time.perf_counter()
        before = _weights(state.keras)
        if before is not None:  # every pass starts from the seed: the same model whatever ran before in this process
            keras().utils.set_random_seed(ctx.seed)
        distribution = ctx.distribution if isinstance(p.config, TrainingConfig) else None
        with distribute.scope(distribution):
            output = p.apply(state, step_ctx)  # a training pass builds and compiles its model in the strategy's scope
        if distribution is not None and distribution.strategy is not None:
            distribute.release(output.state.keras, output.state.details)
        if before is not None and any(not np.array_equal(a, np.asarray(b), equal_nan=a.dtype.kind in "fc") for a, b in
                                      zip(before, state.keras.get_weights(), strict=True)):
            raise ModelError(f"internal error: the {p.name} pass changed its input model's weights", hint="report this to edgekit")
        final = p.finalize(output.state)
        artifact = on_step(index, p, output, final) if on_step is not None else None
        steps.append(StepRecord(index=index, name=p.name, seconds=time.perf_counter() - started,
                                config=p.config.model_dump(mode="json", by_alias=True), details=dict(output.details),
                                warnings=tuple(output.warnings), kind=final.kind, artifact=artifact))
        done.append(p.name)
        state = final
    return PipelineResult(state=state, steps=tuple(steps))
