"""The pass interface, the registry and the pipeline (no TensorFlow needed for most of it)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pytest
from pydantic import Field

from edgekit.core.errors import InputError, ModelError, RecipeError
from edgekit.passes import registry
from edgekit.passes.base import ModelState, Pass, PassConfig, PassContext, PassOutput
from edgekit.passes.pipeline import run_passes


class NoopConfig(PassConfig):
    pass_: Literal["noop"] = Field("noop", alias="pass")


class NoopPass(Pass[NoopConfig]):
    name = "noop"
    config_type = NoopConfig

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        return PassOutput(state=state, details={"did": "nothing"})


class _Weights:
    """A stand-in for a Keras model: the pipeline only reads get_weights()."""

    def __init__(self) -> None:
        self.w = [np.zeros(3, np.float32)]

    def get_weights(self) -> list[np.ndarray]:
        return self.w


def test_the_readme_noop_pass_registers_and_runs():
    registry.register(NoopPass)
    try:
        assert registry.pass_class("noop") is NoopPass
        result = run_passes([registry.build(NoopConfig())], ModelState(keras=_Weights()), PassContext())
        assert [s.name for s in result.steps] == ["noop"] and result.steps[0].details == {"did": "nothing"}
        assert result.steps[0].config == {"pass": "noop"}
    finally:
        registry.unregister("noop")
    with pytest.raises(RecipeError, match="unknown pass 'noop'"):
        registry.pass_class("noop")


def test_registration_validates_the_class():
    class NoName(NoopPass):
        name = ""

    class WrongTag(NoopPass):
        name = "other"

    class Abstract(Pass[NoopConfig]):
        name = "noop"
        config_type = NoopConfig

    for bad, message in ((NoName, "has no name"), (WrongTag, "must declare pass_"), (Abstract, "does not implement apply")):
        with pytest.raises(TypeError, match=message):
            registry.register(bad)
    with pytest.raises(TypeError, match="already registered"):
        registry.register(type("Other", (NoopPass,), {"name": "quantize", "config_type": registry.pass_class("quantize").config_type}))
    with pytest.raises(TypeError, match="takes a NoopConfig"):
        NoopPass(registry.pass_class("quantize").config_type())


def test_every_check_runs_before_any_apply_and_inputs_stay_untouched():
    applied: list[str] = []

    class Recording(NoopPass):
        def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
            applied.append("first")
            return super().apply(state, ctx)

    class Refusing(NoopPass):
        def check(self, state: ModelState, ctx: PassContext) -> None:
            raise InputError("epochs must be at least 1, got 0", settings=("epochs",))

    with pytest.raises(InputError, match="epochs must be at least 1"):
        run_passes([Recording(NoopConfig()), Refusing(NoopConfig())], ModelState(keras=_Weights()), PassContext())
    assert applied == []  # the second pass's check failed before the first one trained anything

    class Mutating(NoopPass):
        def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
            state.keras.w[0][0] = 1.0  # touches its input
            return super().apply(state, ctx)

    with pytest.raises(ModelError, match="changed its input model's weights"):
        run_passes([Mutating(NoopConfig())], ModelState(keras=_Weights()), PassContext())


def test_built_in_passes_are_registered_in_order():
    assert registry.names() == ("prune", "cluster", "quantize", "litert_quantize", "qat", "distill", "export")
    for name in registry.names():
        cls = registry.pass_class(name)
        assert cls.config_type.model_fields["pass_"].default == name
