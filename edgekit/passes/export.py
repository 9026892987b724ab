"""The export pass: package a model for a deployment target (cpu, gpu, nnapi, npu).

It converts the model with the target's defaults when no earlier pass converted it
(:data:`edgekit.export.target.TARGET_PROFILES`), embeds edgekit's metadata (labels,
preprocessing, I/O, target) in the flatbuffer, checks every node against the target's delegate
(:mod:`edgekit.export.delegates`) and, for ``npu`` with a vendor, compiles ahead of time. Like
every pass it writes nothing: the compatibility report and the NPU-compiled models come back in
:attr:`~edgekit.passes.base.PassOutput.files` (``compatibility.json``, ``npu/<file>``).

Example:
    >>> out = ExportPass(ExportConfig(target="gpu")).apply(state, ctx)  # doctest: +SKIP
    >>> sorted(out.files), out.details["full_coverage"]  # doctest: +SKIP
    (['compatibility.json'], True)
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from edgekit.core.data import DEFAULT_CALIBRATION_SAMPLES
from edgekit.core.datatypes import IOType, QuantMode
from edgekit.core.errors import InputError
from edgekit.core.fsutil import json_bytes
from edgekit.core.models import keras_layer_names
from edgekit.core.tflite_file import parse_tflite_bytes
from edgekit.export.convert import Conversion, convert_model
from edgekit.export.delegates import CompatReport, check_compatibility
from edgekit.export.mediapipe import MEDIAPIPE_INPUT_TYPES, MEDIAPIPE_OUTPUT_TYPES, mediapipe_io, needs_rgb_adapter, rgb_input_adapter
from edgekit.export.npu import check_npu_ready, npu_compile_bytes
from edgekit.export.target import METADATA_NAME, METADATA_SCHEMA, MODEL_FILE, REPORT_FILE, embed_metadata, resolve_settings
from edgekit.passes.base import ModelState, Pass, PassConfig, PassContext, PassOutput
from edgekit.passes.quantize import keras_of, source_model

NPU_DIR = "npu"


class ExportConfig(PassConfig):
    """Package the artifact for a target: metadata, delegate compatibility report, optional NPU compilation."""

    pass_: Literal["export"] = Field("export", alias="pass")
    target: Literal["cpu", "gpu", "nnapi", "npu", "mediapipe"] = "cpu"
    api_level: int | None = Field(None, ge=21, le=60, description="Android API level of the device (nnapi).")
    npu: Literal["qualcomm", "mediatek", "google_tensor"] | None = Field(None, description="AOT-compile for this NPU vendor (npu).")
    soc: str | None = Field(None, description="The vendor's SoC to compile for (default: all).")

    @model_validator(mode="after")
    def _consistent(self) -> ExportConfig:
        if self.api_level is not None and self.target != "nnapi":
            raise ValueError("api_level applies to target nnapi only")
        if (self.npu is not None or self.soc is not None) and self.target != "npu":
            raise ValueError("npu/soc apply to target npu only")
        if self.soc is not None and self.npu is None:
            raise ValueError("soc needs npu (the vendor) too")
        return self


def metadata_payload(flatbuffer: bytes, target: str, kind: str, ctx: PassContext) -> dict[str, Any]:
    """The JSON edgekit embeds in an exported model (``edgekit-metadata/1``)."""
    info = parse_tflite_bytes(flatbuffer, MODEL_FILE)
    return {"schema": METADATA_SCHEMA, "labels": list(ctx.labels) if ctx.labels else None, "preprocessing": ctx.preprocessing.to_dict(),
            "inputs": [t.to_dict() for t in info.inputs], "outputs": [t.to_dict() for t in info.outputs],
            "target": target, "mode": kind}


def compatibility(flatbuffer: bytes, target: str, *, api_level: int | None, keras_model: Any, name: str = MODEL_FILE) -> CompatReport:
    """The delegate compatibility report of an exported model (layer names from its Keras model)."""
    layers = keras_layer_names(keras_model) if keras_model is not None else {}
    return check_compatibility(parse_tflite_bytes(flatbuffer, name), target, api_level=api_level, layers=layers, model_bytes=flatbuffer)


def coverage_warnings(report: CompatReport) -> list[str]:
    """The report's warnings, and one line naming the ops that stay off the delegate."""
    warnings = list(report.warnings)
    if report.unsupported:
        ops = sorted({n.op for n in report.unsupported})
        warnings.append(f"{len(report.unsupported)} of {report.summary.nodes} nodes stay off the {report.delegate} delegate "
                        f"({', '.join(ops)}); see {REPORT_FILE}")
    return warnings


class ExportPass(Pass[ExportConfig]):
    """Packages the model for :attr:`ExportConfig.target` (see the module docstring)."""

    name = "export"
    config_type = ExportConfig
    needs_keras = False

    def check(self, state: ModelState, ctx: PassContext) -> None:
        cfg = self.config
        if cfg.target == "mediapipe":
            _check_mediapipe_state(state)
            return
        if not state.converted:
            resolve_settings(cfg.target, None, None, ctx.calibration is not None)
        if cfg.npu is not None:
            check_npu_ready(cfg.npu, cfg.soc)

    def apply(self, state: ModelState, ctx: PassContext) -> PassOutput:
        cfg = self.config
        details: dict[str, Any] = {"target": cfg.target}
        if not state.converted and cfg.target == "mediapipe":
            state, converted_details = _convert_for_mediapipe(state, ctx)
            details.update(converted_details)
        elif not state.converted:
            target, mode, io_type = resolve_settings(cfg.target, None, None, ctx.calibration is not None)
            ctx.progress(f"export: converting for {target} ({mode.value})")
            converted = convert_model(source_model(state), Conversion(mode=mode, io_type=io_type), calibration=ctx.calibration_for(DEFAULT_CALIBRATION_SAMPLES))
            state = state.with_tflite(converted.flatbuffer, mode.value, weights=converted.weights, weights_reason=converted.weights_reason)
            details.update({"converted": mode.value, "io_type": IOType(io_type).value, "weights": converted.weights})
        assert state.tflite is not None
        flatbuffer = embed_metadata(state.tflite, metadata_payload(state.tflite, cfg.target, state.kind, ctx))
        # MediaPipe Tasks run on LiteRT's CPU path (XNNPACK): its coverage is what the report shows
        report = compatibility(flatbuffer, "cpu" if cfg.target == "mediapipe" else cfg.target, api_level=cfg.api_level,
                               keras_model=keras_of(state))
        files: dict[str, bytes] = {REPORT_FILE: json_bytes(report.to_dict())}
        details.update({"metadata": METADATA_NAME, "compatibility": REPORT_FILE,
                        "delegated_node_share": report.summary.delegated_node_share, "full_coverage": report.full_coverage})
        if cfg.npu is not None:
            vendor, soc = check_npu_ready(cfg.npu, cfg.soc)
            ctx.progress(f"export: AOT-compiling for {vendor.name} {soc}")
            compiled, models = npu_compile_bytes(flatbuffer, vendor.name, soc)
            files.update({f"{NPU_DIR}/{name}": data for name, data in compiled.items()})
            details["npu_models"] = models
        warnings = coverage_warnings(report)
        warnings += [f"NPU compilation for {m['target']} failed: {m['error']}" for m in details.get("npu_models", []) if m.get("file") is None]
        exported = ModelState(keras=state.keras, tflite=flatbuffer, kind=state.kind, source=state.source,
                              details={**state.details, "export_target": cfg.target})
        return PassOutput(state=exported, details=details, warnings=tuple(warnings), files=files)


def _check_mediapipe_state(state: ModelState) -> None:
    """A model already converted by an earlier pass must have I/O MediaPipe takes (float32/uint8, RGB)."""
    if not state.converted or state.tflite is None:
        return
    info = parse_tflite_bytes(state.tflite, "converted model")
    spec = info.inputs[0] if info.inputs else None
    if spec is None or spec.dtype not in MEDIAPIPE_INPUT_TYPES or any(o.dtype not in MEDIAPIPE_OUTPUT_TYPES for o in info.outputs):
        raise InputError("target mediapipe takes float32 or uint8 inputs and float32/uint8 outputs, not int8",
                         hint="set io_type float (or uint8) on the quantize pass", settings=("io_type",))
    if needs_rgb_adapter(tuple(spec.shape)):
        raise InputError("target mediapipe needs an RGB input; this model was converted with its grayscale input",
                         hint="drop the quantize pass before export: the export pass converts with an RGB front end", settings=("target",))


def _convert_for_mediapipe(state: ModelState, ctx: PassContext) -> tuple[ModelState, dict[str, Any]]:
    """int8 with float I/O when there is calibration data (float32 otherwise), an RGB front end for a gray model."""
    source: Any = source_model(state)
    calibration = ctx.calibration_for(DEFAULT_CALIBRATION_SAMPLES)
    details: dict[str, Any] = {}
    if needs_rgb_adapter(tuple(source.input_shape)):
        keras_model = keras_of(state)
        if keras_model is None:
            raise InputError("target mediapipe needs the Keras model to put an RGB front end on a grayscale model",
                             hint="give the .keras file", settings=("target",))
        source = rgb_input_adapter(keras_model)
        calibration = np.repeat(calibration, 3, axis=-1) if calibration is not None else None
        details["rgb_adapter"] = True
    mode = QuantMode.INT8 if calibration is not None else QuantMode.FLOAT32
    ctx.progress(f"export: converting for mediapipe ({mode.value}, float I/O)")
    converted = convert_model(source, Conversion(mode=mode, io_type=mediapipe_io(mode)), calibration=calibration)
    details.update({"converted": mode.value, "io_type": IOType.FLOAT.value, "weights": converted.weights})
    return state.with_tflite(converted.flatbuffer, mode.value, weights=converted.weights, weights_reason=converted.weights_reason), details
