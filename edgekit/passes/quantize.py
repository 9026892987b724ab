"""The quantize pass: post-training quantization of a Keras model (or SavedModel) to TFLite bytes.

One config serves ``edgekit quantize`` (its Click options build it) and a recipe's ``quantize``
step. The pass converts through :func:`edgekit.export.convert.convert_model`; for int8 it can
first equalize the model (:mod:`edgekit.passes.equalize`), measure the int8 error each layer adds
and keep chosen (or the most sensitive) layers in float (:class:`edgekit.export.sensitivity.MixedInt8`).
The per-layer errors come back in the output's ``details["layer_errors"]``.

Example:
    >>> out = QuantizePass(QuantizeConfig(mode="int8")).apply(ModelState(keras=model), ctx)  # doctest: +SKIP
    >>> out.state.kind, len(out.state.tflite)  # doctest: +SKIP
    ('int8', 230512)
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from edgekit.core.data import DEFAULT_CALIBRATION_SAMPLES, rows_of
from edgekit.core.datatypes import IOType, QuantMode
from edgekit.core.errors import InputError, ModelError
from edgekit.core.models import LoadedModel, keras_layer_names
from edgekit.core.tflite_file import parse_tflite_bytes
from edgekit.export.convert import (
    INT8_WEIGHT_MODES,
    SELECT_OPS_WARNING,
    Conversion,
    as_loaded,
    check_weights_option,
    choose_weights,
    convert_model,
    recurrent_notes,
)
from edgekit.export.sensitivity import MixedInt8
from edgekit.export.target import flex_ops
from edgekit.passes.base import ModelState, Pass, PassConfig, PassContext, PassOutput
from edgekit.passes.equalize import equalize

MAX_CALIBRATION_SAMPLES = 100_000


def _check_regex(value: str, what: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{what} '{value}' is not a valid regular expression ({exc})") from None
    return value


class QuantizeConfig(PassConfig):
    """Post-training quantization, optionally mixed int8/float (the recipe step and ``edgekit quantize``)."""

    pass_: Literal["quantize"] = Field("quantize", alias="pass")
    mode: Literal["float32", "float16", "dynamic", "int8", "int16x8"] = "int8"
    io_type: Literal["float", "int8", "uint8", "int16"] = "float"
    calibration_samples: int = Field(DEFAULT_CALIBRATION_SAMPLES, description="Calibration samples (int8, int16x8): a seeded sample of the data (the same rows in every command).")
    per_channel: bool | None = Field(
        None, description="int8 weight scales per output channel (true) or per tensor (false); unset: per-tensor only for a model "
                          "clustered with one codebook per layer, per-channel otherwise (as edgekit quantize --weights auto).")
    weights: Literal["auto", "per-channel", "per-tensor"] = Field(
        "auto", description="The same choice as per_channel, as edgekit quantize --weights spells it.")
    equalize: bool = Field(False, description="Cross-layer equalization first (edgekit.passes.equalize): float outputs unchanged.")
    float_layers: list[str] = Field(
        default_factory=list, description="Keras layer names (regex, full match) kept in float32 (int8 only).")
    keep_sensitive_float: int = Field(
        0, ge=0, le=1000, description="Keep this many of the layers with the largest int8 error in float (int8 only).")
    layer_stats: bool = Field(True, description="Measure per-layer int8 error with TensorFlow's QuantizationDebugger.")
    allow_select_tf_ops: bool = Field(False, description="Allow TensorFlow ops through the Flex delegate (no hardware delegate runs them).")

    @field_validator("calibration_samples")
    @classmethod
    def _samples(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"calibration_samples must be at least 1, got {value}")
        if value > MAX_CALIBRATION_SAMPLES:
            raise ValueError(f"calibration_samples must be at most {MAX_CALIBRATION_SAMPLES}, got {value}")
        return value

    @field_validator("float_layers")
    @classmethod
    def _regexes(cls, value: list[str]) -> list[str]:
        for item in value:
            _check_regex(item, "float_layers entry")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> QuantizeConfig:
        allowed = {"int8": ("float", "int8", "uint8"), "int16x8": ("float", "int16")}.get(self.mode, ("float",))
        if self.io_type not in allowed:
            raise ValueError(f"io_type {self.io_type} does not go with mode {self.mode} (allowed: {', '.join(allowed)})")
        if (self.float_layers or self.keep_sensitive_float) and self.mode != "int8":
            raise ValueError(f"float_layers / keep_sensitive_float need mode int8 (mixed int8/float), not {self.mode}")
        if self.per_channel is False and self.mode not in ("int8", "int16x8", "dynamic"):
            raise ValueError(f"per_channel: false applies to int8, int16x8 and dynamic, not {self.mode}")
        if self.per_channel is not None and self.weights != "auto":
            raise ValueError("give per_channel or weights, not both (they are the same choice)")
        return self

    @property
    def mixed(self) -> bool:
        """Whether some layers stay in float (mixed int8/float)."""
        return bool(self.float_layers or self.keep_sensitive_float)

    @property
    def requested_weights(self) -> str:
        """The int8 weight scales asked for, as :data:`~edgekit.export.convert.WEIGHT_CHOICES` spells them."""
        if self.weights != "auto" or self.per_channel is None or QuantMode(self.mode) not in INT8_WEIGHT_MODES:
            return self.weights
        return "per-channel" if self.per_channel else "per-tensor"


def source_model(state: ModelState) -> LoadedModel:
    """The model to convert: the state's Keras model, or the SavedModel's :class:`LoadedModel` it holds."""
    if isinstance(state.keras, LoadedModel):
        return state.keras
    if state.keras is None:
        raise ModelError("there is no model to convert", hint="give a Keras model or a SavedModel")
    loaded = as_loaded(state.keras)
    loaded.path = state.source or "<memory>"
    return loaded


def keras_of(state: ModelState) -> Any:
    """The state's Keras model (None for a SavedModel)."""
    return state.keras.keras_model if isinstance(state.keras, LoadedModel) else state.keras


class QuantizePass(Pass[QuantizeConfig]):
    """Converts the model to TFLite as :class:`QuantizeConfig` says (see the module docstring)."""

    name = "quantize"
    config_type = QuantizeConfig
    needs_keras = False

    def check(self, state: ModelState, ctx: PassContext) -> None:
        cfg = self.config
        mode = QuantMode(cfg.mode)
        check_weights_option(mode, cfg.weights)
        if state.converted:
            raise ModelError(f"the model is already converted ({state.kind}); quantize works on the Keras model",
                             hint="put quantize before export and after the training passes")
        if state.keras is None:
            raise ModelError("the quantize pass needs a Keras model or a SavedModel", hint="pass the .keras file")
        keras_model = keras_of(state)
        if mode.needs_data and (ctx.calibration is None or len(ctx.calibration) == 0):
            raise InputError(f"mode {cfg.mode} needs calibration data to choose activation ranges",
                             hint="pass data (.npz, .npy or an image folder) with ~100 typical inputs", settings=("mode",))
        if cfg.mixed and cfg.io_type != "float":
            raise InputError("float_layers/keep_sensitive_float need io_type float (mixed models keep float I/O)",
                             hint="set io_type float or drop the float layers", settings=("io_type",))
        if (cfg.mixed or cfg.equalize) and keras_model is None:
            raise ModelError(f"{state.source or 'the model'} is a SavedModel; equalize and mixed int8 need the Keras model",
                             hint="pass the .keras file")
        if cfg.float_layers and keras_model is not None:
            names = sorted(keras_layer_names(keras_model))
            for pattern in cfg.float_layers:
                if not any(re.fullmatch(pattern, n) for n in names):
                    raise InputError(f"float_layers entry '{pattern}' matches no layer of the model",
                                     hint=f"layers: {', '.join(names[:20])}", settings=("float_layers",))

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        cfg = self.config
        mode = QuantMode(cfg.mode)
        details: dict[str, Any] = {}
        warnings: list[str] = [SELECT_OPS_WARNING] if cfg.allow_select_tf_ops else []
        source = source_model(state)
        if source.keras_model is not None and not cfg.allow_select_tf_ops:
            details["unrolled"] = recurrent_notes(source.keras_model)
            warnings += list(details["unrolled"])
        if cfg.equalize and source.keras_model is not None:
            equalized, pairs = equalize(source.keras_model)
            source = replace(source, keras_model=equalized, sha256="")
            details["equalized"] = [p.to_dict() for p in pairs]
        calibration = ctx.calibration_for(cfg.calibration_samples) if mode.needs_data else None
        weights, weights_reason = choose_weights(source, mode, cfg.requested_weights)
        per_channel = weights != "per-tensor"
        mixed = None
        if mode is QuantMode.INT8 and (cfg.mixed or cfg.layer_stats) and source.keras_model is not None:
            ctx.progress("quantize: per-layer int8 error (QuantizationDebugger)")
            mixed = MixedInt8(source, calibration, per_channel=per_channel)  # type: ignore[arg-type]
            details["layer_errors"] = [e.to_dict() for e in mixed.layer_errors()]
        if cfg.mixed and mixed is not None:
            ranked = mixed.ranked_layers()
            chosen = list(dict.fromkeys([*cfg.float_layers, *ranked[: cfg.keep_sensitive_float]]))
            ctx.progress(f"quantize: int8 with {', '.join(chosen)} in float")
            flatbuffer = mixed.quantize(chosen)
            details.update({"float_layers": chosen, "ranked_layers": ranked})
            kind = "int8-mixed"
        else:
            ctx.progress(f"quantize: {cfg.mode}" + (f" ({weights} weights)" if weights else ""))
            conversion = Conversion(mode=mode, io_type=IOType(cfg.io_type), weights=weights or "auto",
                                    allow_select_tf_ops=cfg.allow_select_tf_ops)
            flatbuffer = convert_model(source, conversion, calibration=calibration).flatbuffer
            kind = cfg.mode
        flex = flex_ops(parse_tflite_bytes(flatbuffer, "quantized model"))
        if flex:
            warnings.append(f"the model uses {len(flex)} TensorFlow op type(s) via Flex: {', '.join('FLEX:' + op for op in flex)}")
        details.update({"mode": cfg.mode, "io_type": cfg.io_type, "per_channel": per_channel if weights else None,
                        "weights": weights, "weights_reason": weights_reason, "equalize": cfg.equalize,
                        "calibration_samples": rows_of(calibration) if calibration is not None else 0, "bytes": len(flatbuffer)})
        new_state = state.with_tflite(flatbuffer, kind, weights=weights, weights_reason=weights_reason)
        return PassOutput(state=new_state, details=details, warnings=tuple(warnings))
