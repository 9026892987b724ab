"""The ``litert_quantize`` pass: int4 weights or per-layer precision through litert-quantizer.

The model is converted to float32 TFLite (the one converter setup), then rewritten by
litert-quantizer (:mod:`edgekit.export.quantizer`; ``pip install 'edgekit[quantizer]'``): ``int4``
(int4 weights, float activations, per channel or per block) or ``int8-selective`` (``rules``:
int8/int16 activations, float, int4 or dynamic weights per layer, calibrated on the seeded sample).

Recipe step::

    - pass: litert_quantize
      mode: int4
      granularity: channel
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from edgekit.core.data import DEFAULT_CALIBRATION_SAMPLES
from edgekit.core.datatypes import QuantMode
from edgekit.core.errors import InputError, ModelError
from edgekit.core.extras import import_extra
from edgekit.export.convert import Conversion, convert_model
from edgekit.export.quantizer import parse_rules, quantize_int4, quantize_selective
from edgekit.passes.base import ModelState, Pass, PassConfig, PassContext, PassOutput
from edgekit.passes.quantize import source_model


class LitertQuantizeConfig(PassConfig):
    """int4 or per-layer mixed precision (litert-quantizer)."""

    pass_: Literal["litert_quantize"] = Field("litert_quantize", alias="pass")
    mode: Literal["int4", "int8-selective"] = "int4"
    granularity: Literal["channel", "block32", "block64", "block128"] = Field(
        "channel", description="int4: one scale per output channel, or per block of input weights (fully connected layers).")
    rules: dict[str, Any] | None = Field(None, description="int8-selective: default, io and rules (layer, op, precision), as in a rule file.")
    calibration_samples: int = Field(DEFAULT_CALIBRATION_SAMPLES, ge=1, le=100_000,
                                     description="Calibration samples for int8/int16 activations (the same seeded draw as quantize).")

    @model_validator(mode="after")
    def _consistent(self) -> LitertQuantizeConfig:
        if self.mode == "int8-selective" and not self.rules:
            raise ValueError("mode int8-selective needs rules (default, io, rules)")
        if self.mode == "int4" and self.rules:
            raise ValueError("rules are for mode int8-selective")
        if self.rules:
            parse_rules(self.rules, "rules")
        return self


class LitertQuantizePass(Pass[LitertQuantizeConfig]):
    """Quantizes with litert-quantizer as :class:`LitertQuantizeConfig` says (see the module docstring)."""

    name = "litert_quantize"
    config_type = LitertQuantizeConfig
    needs_keras = False

    def check(self, state: ModelState, ctx: PassContext) -> None:
        import_extra("quantizer")  # a missing extra fails before any work
        if state.converted:
            raise ModelError(f"the model is already converted ({state.kind}); litert_quantize works on the Keras model",
                             hint="put litert_quantize where quantize would go")
        if state.keras is None:
            raise ModelError("the litert_quantize pass needs a Keras model or a SavedModel", hint="pass the .keras file")
        rules = parse_rules(self.config.rules, "rules") if self.config.rules else None
        if rules is not None and rules.needs_calibration and (ctx.calibration is None or len(ctx.calibration) == 0):
            raise InputError("int8/int16 activations in the rules need calibration data", hint="give data calib.npz", settings=("data",))

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        cfg = self.config
        ctx.progress(f"litert_quantize: float32, then {cfg.mode} (litert-quantizer)")
        float_model = convert_model(source_model(state), Conversion(QuantMode.FLOAT32)).flatbuffer
        if cfg.rules:
            rules = parse_rules(cfg.rules, "rules")
            result = quantize_selective(float_model, rules, ctx.calibration_for(cfg.calibration_samples) if rules.needs_calibration else None)
        else:
            result = quantize_int4(float_model, cfg.granularity)
        details = result.to_dict()
        return PassOutput(state=state.with_tflite(result.flatbuffer, cfg.mode), details=details)
